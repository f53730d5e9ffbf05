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

Memory (a search service sizes its concurrency by it): a decode holds Pillow's decoded
image (4 bytes a pixel in colour, 2 in 16-bit grey) and the uint8 result (3 bytes a pixel),
and nothing else of the whole image's size, except a photo its EXIF turns (Pillow builds
the turned image before it replaces the decoded one, so two are held for an instant); the
conversion to RGB works a block of rows at a time (:data:`BLOCK_PIXELS`). Measured as a
process's peak resident size (bench/decode_memory.py, docs/BENCHMARKS.md): 7.2-7.6 bytes a
pixel for a JPEG, 8.1 when its EXIF turns it, 5.1 for 16-bit grey; at most about 400 MB for
50 megapixels.
"""

from __future__ import annotations

import io
import os
import warnings
from collections.abc import Iterator

import numpy as np
from PIL import Image, ImageOps

from common.faces.errors import ImageReadError, source_name

MAX_PIXELS = 50_000_000  # 50 megapixels: above any camera photo a person would search with
ACCEPTED_FORMATS = ("JPEG", "MPO", "PNG", "GIF", "BMP", "DIB", "WEBP", "TIFF", "PPM")
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
BLOCK_PIXELS = 1 << 18   # pixels converted to RGB at a time (a few MB of temporaries)
# 16-bit grey to 8 bits: round(v / 257) for every v, as a table (never a tie: 257 is odd)
_GREY_OF_16_BIT = ((np.arange(65536, dtype=np.uint32) + 128) // 257).astype(np.uint8)


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


def _row_blocks(im: Image.Image) -> Iterator[tuple[int, int]]:
    """(top, bottom) of consecutive row blocks of about :data:`BLOCK_PIXELS` pixels."""
    width, height = im.size
    step = max(1, BLOCK_PIXELS // max(width, 1))
    for top in range(0, height, step):
        yield top, min(top + step, height)


def _grey_scale(im: Image.Image) -> float:
    """The largest value of a 32-bit integer or float image (NaN ignored; NaN if none)."""
    top = float("nan")
    for upper, lower in _row_blocks(im):
        block = np.asarray(im.crop((0, upper, im.width, lower)))
        top = float(np.fmax(top, np.fmax.reduce(block, axis=None)))
    return top


def _block_rgb(block: Image.Image, top: float) -> np.ndarray:
    """One block of any Pillow mode as uint8 RGB, or as uint8 grey (H, W) for grey modes
    (see the module docstring for each case; ``top``: the image's maximum, modes I and F)."""
    if block.mode.startswith("I;16"):
        return _GREY_OF_16_BIT[np.asarray(block)]
    if block.mode in ("I", "F"):
        grey = np.asarray(block).astype(np.float64)
        grey = grey * (255.0 / top) if top > 0 else np.zeros_like(grey)
        return np.clip(np.round(np.nan_to_num(grey)), 0, 255).astype(np.uint8)
    if block.mode == "L":
        return np.asarray(block)
    if block.mode in _ALPHA_MODES or (block.mode == "P" and "transparency" in block.info):
        block = block.convert("RGBA")
        block = Image.alpha_composite(Image.new("RGBA", block.size, (0, 0, 0, 255)), block)
    return np.asarray(block.convert("RGB") if block.mode != "RGB" else block)


def _as_rgb(im: Image.Image) -> np.ndarray:
    """Any Pillow mode as a new uint8 (H, W, 3) RGB array, converted a row block at a time
    so that no temporary is larger than a block: the decoded image and the result are all
    the memory a decode takes (see :data:`BLOCK_PIXELS`)."""
    top = _grey_scale(im) if im.mode in ("I", "F") else float("nan")
    out = np.empty((im.height, im.width, 3), np.uint8)
    for upper, lower in _row_blocks(im):
        pixels = _block_rgb(im.crop((0, upper, im.width, lower)), top)
        out[upper:lower] = pixels[..., None] if pixels.ndim == 2 else pixels
    return out


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
            ImageOps.exif_transpose(im, in_place=True)  # no copy when already upright
        except Exception:  # noqa: BLE001 - damaged EXIF: keep the pixels as stored
            pass
        try:
            return _as_rgb(im)
        except Exception as exc:  # noqa: BLE001 - e.g. a mode Pillow cannot convert
            raise ImageReadError(name, f"cannot convert {im.mode} pixels to RGB "
                                       f"({type(exc).__name__}: {exc})") from None
    finally:
        im.close()
