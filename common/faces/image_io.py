"""Decode a photo file or upload into a plain RGB array, refusing what is not a usable image.

Why its own module: training data (the converter) and search queries (uploads) must read
photos identically, and both must survive whatever a user hands over. Decoding is Pillow's:
it reads the header first, so the pixel limit refuses a decompression bomb (a few KB that
declare gigapixels) before any pixel is decoded; it reports truncated files instead of
padding them (``ImageFile.LOAD_TRUNCATED_IMAGES`` is left off); and only the raster formats
in :data:`ACCEPTED_FORMATS` are tried, so formats whose plugins run external programs
(EPS runs Ghostscript) are never reached. Nothing in a file is ever executed.

Colour: EXIF orientation is applied (phone photos are stored sideways), then every mode
becomes 8-bit RGB: grey and palette images are expanded, CMYK converted by Pillow,
16-bit grey divided by 257, 32-bit integer and float grey scaled so their maximum is 255,
and transparent images composited over black (as the converter that made the project's
LFW data did). Animated GIF and WebP give their first frame.
"""

from __future__ import annotations

import io
import os
import warnings

import numpy as np
from PIL import Image, ImageOps

from common.faces.errors import ImageReadError, source_name

MAX_PIXELS = 50_000_000  # 50 megapixels: above any camera photo a person would search with
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "PPM")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})


def _available_formats() -> tuple[str, ...]:
    """The accepted formats this Pillow build can read (every plugin registered first)."""
    Image.init()
    return tuple(f for f in ACCEPTED_FORMATS if f in Image.OPEN)


def _open_stream(source: str | bytes | os.PathLike, name: str) -> io.BytesIO | str:
    """What Pillow should open: the path (checked readable and non-empty) or the bytes."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        data = bytes(source)
        if not data:
            raise ImageReadError(name, "empty (0 bytes), not an image")
        return io.BytesIO(data)
    path = os.fspath(source)
    try:
        if os.path.isdir(path):
            raise ImageReadError(name, "is a folder, not an image file")
        size = os.path.getsize(path)
    except OSError as exc:
        raise ImageReadError(name, f"cannot read ({exc.strerror or exc})") from None
    if size == 0:
        raise ImageReadError(name, "empty file (0 bytes), not an image")
    return path


def _as_rgb(im: Image.Image) -> Image.Image:
    """Any Pillow mode as 8-bit RGB (see the module docstring for each case)."""
    if im.mode.startswith("I;16"):
        grey = np.asarray(im).astype(np.float64) / 257.0
        im = Image.fromarray(np.clip(np.round(grey), 0, 255).astype(np.uint8), "L")
    elif im.mode in ("I", "F"):
        grey = np.asarray(im).astype(np.float64)
        top = float(np.nanmax(grey)) if grey.size else 0.0
        grey = grey * (255.0 / top) if top > 0 else np.zeros_like(grey)
        im = Image.fromarray(np.clip(np.round(np.nan_to_num(grey)), 0, 255).astype(np.uint8), "L")
    if im.mode in _ALPHA_MODES or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        black = Image.new("RGBA", im.size, (0, 0, 0, 255))
        im = Image.alpha_composite(black, im)
    return im.convert("RGB") if im.mode != "RGB" else im


def _decode(stream: io.BytesIO | str, name: str, max_pixels: int) -> Image.Image:
    """Open (header only), check the pixel count, then decode every pixel."""
    with warnings.catch_warnings():
        # Pillow warns from 89 MP and refuses from 179 MP; our own limit is lower.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            im = Image.open(stream, formats=_available_formats())
        except Image.DecompressionBombError as exc:  # Pillow's own check, far above ours
            raise ImageReadError(name, f"too large: {exc} (the limit here is "
                                       f"{max_pixels:,} pixels)") from None
        except Image.UnidentifiedImageError:
            raise ImageReadError(
                name, "not an image (or not one of the accepted formats: "
                      f"{', '.join(ACCEPTED_FORMATS)})") from None
        except OSError as exc:
            if exc.errno is not None:  # the system refused (permissions, I/O error)
                raise ImageReadError(name, f"cannot read ({exc.strerror or exc})") from None
            raise ImageReadError(name, f"truncated or corrupt image header ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - a damaged header raises many kinds
            raise ImageReadError(
                name, f"corrupt image header ({type(exc).__name__}: {exc})") from None
    width, height = im.size
    if width * height > max_pixels:
        im.close()
        raise ImageReadError(name, f"too large: {width}x{height} = {width * height:,} pixels, "
                                   f"more than the limit of {max_pixels:,}")
    try:
        im.load()
    except Exception as exc:  # noqa: BLE001 - truncated or corrupt data raise many kinds
        im.close()
        raise ImageReadError(name, f"truncated or corrupt {im.format or 'image'} data "
                                   f"({type(exc).__name__}: {exc})") from None
    return im


def read_image(source: str | bytes | os.PathLike, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode a photo into uint8 (H, W, 3) RGB, upright as its EXIF orientation says.

    Args:
        source: a file path, or the file's bytes (an upload).
        max_pixels: refuse images with more pixels than this (checked from the header,
            before decoding).

    Raises:
        ImageReadError: not an image or not an accepted format, empty, truncated, corrupt,
            unreadable, or too large. The message starts with the path or ``uploaded data``.
    """
    name = source_name(source)
    stream = _open_stream(source, name)
    im = _decode(stream, name, max_pixels)
    try:
        try:
            upright = ImageOps.exif_transpose(im)
        except Exception:  # noqa: BLE001 - damaged EXIF: keep the pixels as stored
            upright = im
        try:
            rgb = _as_rgb(upright)
        except Exception as exc:  # noqa: BLE001 - e.g. a mode Pillow cannot convert
            raise ImageReadError(name, f"cannot convert {im.mode} pixels to RGB "
                                       f"({type(exc).__name__}: {exc})") from None
        return np.array(rgb, dtype=np.uint8)
    finally:
        im.close()
