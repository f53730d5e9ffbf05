"""read_image's memory and its conversion a row block at a time (common.faces.image_io).

Why: the search service sizes its concurrency by what one decode takes. Decoding once made
float64 copies of a whole 16-bit image (1.3 GB for a 97 KB PNG of 50 megapixels) and two
extra copies of every photo. The pixels must stay what the whole-image conversion gave:
each mode is compared with that conversion (kept here as the reference), on images of many
blocks. What the conversion allocates is counted by tracemalloc (numpy and Python objects:
deterministic, the same on every machine); the resident size a whole decode takes, Pillow's
buffers included, depends on the allocator and is a benchmark (bench/decode_memory.py).
"""

from __future__ import annotations

import io
import tracemalloc

import numpy as np
import pytest
from PIL import Image

from common.faces import image_io, read_image


def _reference_rgb(im: Image.Image) -> np.ndarray:
    """The whole-image conversion read_image made before it worked by blocks."""
    if im.mode.startswith("I;16"):
        grey = np.asarray(im).astype(np.float64) / 257.0
        im = Image.fromarray(np.clip(np.round(grey), 0, 255).astype(np.uint8), "L")
    elif im.mode in ("I", "F"):
        grey = np.asarray(im).astype(np.float64)
        top = float(np.nanmax(grey)) if grey.size else 0.0
        grey = grey * (255.0 / top) if top > 0 else np.zeros_like(grey)
        im = Image.fromarray(np.clip(np.round(np.nan_to_num(grey)), 0, 255).astype(np.uint8),
                             "L")
    if im.mode in ("RGBA", "LA", "PA") or (im.mode == "P" and "transparency" in im.info):
        im = im.convert("RGBA")
        im = Image.alpha_composite(Image.new("RGBA", im.size, (0, 0, 0, 255)), im)
    return np.array(im.convert("RGB"), dtype=np.uint8)


def _encoded(image: Image.Image, kind: str) -> bytes:
    out = io.BytesIO()
    image.save(out, kind)
    return out.getvalue()


def _images(height: int, width: int) -> dict[str, Image.Image]:
    rng = np.random.default_rng(7)
    rgba = rng.integers(0, 256, (height, width, 4), dtype=np.uint8)
    floats = rng.normal(100.0, 60.0, (height, width)).astype(np.float32)
    floats[3, 5], floats[7, 1] = np.nan, -np.inf
    palette = Image.fromarray(rgba[..., 0] % 16, "P")
    palette.putpalette(rng.integers(0, 256, 48, dtype=np.uint8).tolist())
    palette.info["transparency"] = 3
    return {"RGB": Image.fromarray(rgba[..., :3], "RGB"),
            "RGBA": Image.fromarray(rgba, "RGBA"),
            "LA": Image.fromarray(rgba[..., :2], "LA"),
            "L": Image.fromarray(rgba[..., 0], "L"),
            "P": palette,
            "CMYK": Image.fromarray(rgba, "CMYK"),
            "I;16": Image.fromarray(rng.integers(0, 65536, (height, width),
                                                 dtype=np.uint16)),
            "I": Image.fromarray(rng.integers(-5000, 2**31 - 1, (height, width),
                                              dtype=np.int32), "I"),
            "F": Image.fromarray(floats, "F")}


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "L", "P", "CMYK", "I;16", "I", "F"])
def test_block_conversion_gives_the_whole_image_conversion(mode, monkeypatch):
    monkeypatch.setattr(image_io, "BLOCK_PIXELS", 50, raising=False)  # 19 blocks of 2 rows
    image = _images(37, 23)[mode]
    kind = "PNG" if mode in ("RGB", "RGBA", "LA", "L", "P", "I;16") else "TIFF"
    data = _encoded(image, kind)
    decoded = Image.open(io.BytesIO(data))
    assert decoded.mode == mode
    expected = _reference_rgb(decoded)
    got = read_image(data)
    assert got.dtype == np.uint8 and got.shape == (37, 23, 3) and got.flags.writeable
    if mode in ("I", "F"):  # float64 arithmetic as before; allow a grey level of rounding
        assert np.abs(got.astype(int) - expected).max() <= 1
        assert np.mean(got == expected) > 0.999
    else:
        np.testing.assert_array_equal(got, expected)


def test_every_16_bit_grey_level_is_rounded_as_before():
    levels = np.arange(65536, dtype=np.uint16).reshape(256, 256)
    got = read_image(_encoded(Image.fromarray(levels), "PNG"))
    before = np.clip(np.round(levels / 257.0), 0, 255)  # the old float64 arithmetic
    assert np.abs(got[..., 0].astype(int) - before).max() <= 1
    # exactly round(v / 257), in integers: never a tie, so rounding up at .5 is exact
    np.testing.assert_array_equal(got[..., 1], (levels.astype(np.int64) + 128) // 257)
    assert (got[0, 0, 2], got[0, 128, 2], got[0, 129, 2], got[255, 255, 2]) == (0, 0, 1, 255)


@pytest.mark.parametrize("mode", ["I;16", "F", "RGBA", "RGB"])
def test_a_decode_allocates_the_result_and_a_few_blocks_only(mode):
    """Numpy arrays and bytes allocated during a decode of 4.2 MP: the 12.6 MB result plus
    at most 10 MB of blocks; the whole-image conversion allocated 25 MB (RGB) to 101 MB
    (16-bit grey, float grey)."""
    data = _encoded(_images(1536, 2730)[mode], "TIFF" if mode == "F" else "PNG")
    tracemalloc.start()
    try:
        result = read_image(data)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert result.nbytes == 1536 * 2730 * 3
    assert peak < result.nbytes + 40 * image_io.BLOCK_PIXELS, (peak, result.nbytes)

