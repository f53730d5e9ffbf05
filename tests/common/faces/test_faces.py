"""Photos to 32x32 faces (common.faces): decoding, refusals, the crop geometry, detection.

Decoding and geometry run on images drawn here with numpy; detection (mtcnn) runs when the
package is installed, on real LFW photos when ../shared/data has them (skipped otherwise).
"""

from __future__ import annotations

import glob
import io
import math
import os
import struct
import zlib

import numpy as np
import pytest
from PIL import Image, ImageFile

from checkout import ROOT as REPO
from common.data.errors import DataFormatError
from common.faces import (FaceNotFoundError, FacePreparer, ImageReadError, PreparedFace,
                          read_image)
from common.faces import crops
from common.faces.detector import mtcnn_importable

LFW_PHOTOS = os.path.join(REPO, "..", "shared", "data", "lfw_photos_sample")
needs_mtcnn = pytest.mark.skipif(not mtcnn_importable(),
                                 reason="the mtcnn package is not installed (extra 'faces')")
needs_photos = pytest.mark.skipif(not os.path.isdir(LFW_PHOTOS),
                                  reason=f"no LFW sample photos at {LFW_PHOTOS}")


def _pattern(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A uint8 RGB image where every pixel differs from its neighbours (catches any shift)."""
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _save(tmp_path, name: str, image: Image.Image, **options) -> str:
    path = str(tmp_path / name)
    image.save(path, **options)
    return path


# ------------------------------------------------------------------------ read_image
def test_png_reads_back_exactly_from_a_path_and_from_bytes(tmp_path):
    pixels = _pattern(23, 41)
    path = _save(tmp_path, "a.png", Image.fromarray(pixels))
    from_path = read_image(path)
    assert from_path.dtype == np.uint8 and from_path.shape == (23, 41, 3)
    assert np.array_equal(from_path, pixels)
    with open(path, "rb") as f:
        assert np.array_equal(read_image(f.read()), pixels)


def test_grey_16_bit_grey_and_cmyk_become_rgb(tmp_path):
    grey = _pattern(9, 13)[..., 0]
    out = read_image(_save(tmp_path, "g.png", Image.fromarray(grey, "L")))
    assert np.array_equal(out, np.repeat(grey[..., None], 3, axis=2))

    deep = np.array([[0, 257, 65535], [1000, 30000, 128]], dtype=np.uint16)
    out = read_image(_save(tmp_path, "g16.png", Image.fromarray(deep)))
    expected = np.array([[0, 1, 255], [4, 117, 0]], dtype=np.uint8)  # round(v / 257)
    assert np.array_equal(out[..., 0], expected) and np.array_equal(out[..., 2], expected)

    cmyk = Image.new("CMYK", (4, 3), (0, 255, 255, 0))  # full magenta + yellow = red
    out = read_image(_save(tmp_path, "c.tiff", cmyk))
    assert out.shape == (3, 4, 3) and np.all(out == [255, 0, 0])


def test_transparent_pixels_are_composited_over_black(tmp_path):
    rgba = np.zeros((2, 3, 4), np.uint8)
    rgba[..., :3] = [[[10, 20, 30]] * 3, [[200, 100, 50]] * 3]
    rgba[..., 3] = [[255, 0, 128], [255, 0, 128]]
    out = read_image(_save(tmp_path, "t.png", Image.fromarray(rgba, "RGBA"))).astype(int)
    assert np.array_equal(out[:, 0], [[10, 20, 30], [200, 100, 50]])   # opaque: unchanged
    assert np.array_equal(out[:, 1], np.zeros((2, 3)))                 # transparent: black
    half = np.round(np.array([[10, 20, 30], [200, 100, 50]]) * 128 / 255)
    assert np.abs(out[:, 2] - half).max() <= 1                         # half: darkened


def test_gif_gives_its_first_frame_as_rgb(tmp_path):
    frames = [Image.new("RGB", (8, 6), colour).convert("P") for colour in
              ((255, 0, 0), (0, 0, 255))]
    path = str(tmp_path / "anim.gif")
    frames[0].save(path, save_all=True, append_images=frames[1:], duration=100)
    out = read_image(path)
    assert out.shape == (6, 8, 3) and np.all(out == [255, 0, 0])


def test_exif_orientation_is_applied(tmp_path):
    stored = np.zeros((20, 40, 3), np.uint8)
    stored[:, :20] = [255, 0, 0]   # left half red
    stored[:, 20:] = [0, 0, 255]   # right half blue
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 degrees clockwise to display"
    path = _save(tmp_path, "phone.jpg", Image.fromarray(stored), exif=exif, quality=95)
    out = read_image(path).astype(int)
    assert out.shape == (40, 20, 3)  # upright: taller than wide
    # Turned clockwise, the stored left half is now on top.
    assert np.abs(out[5, 10] - [255, 0, 0]).max() < 40
    assert np.abs(out[35, 10] - [0, 0, 255]).max() < 40


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that declares ``width`` x ``height`` pixels in 45 bytes (a decompression bomb's
    header: no pixel data follows)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return (struct.pack(">I", len(data)) + kind + data
                + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF))
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def test_refusals_name_the_file_and_the_reason(tmp_path):
    text = tmp_path / "notes.jpg"
    text.write_text("these are not pixels\n")
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    full = io.BytesIO()
    Image.fromarray(_pattern(64, 64)).save(full, "JPEG", quality=90)
    truncated = tmp_path / "cut.jpg"
    truncated.write_bytes(full.getvalue()[: len(full.getvalue()) // 2])
    eps = tmp_path / "page.png"  # PostScript (Pillow would run Ghostscript) under a photo's name
    eps.write_bytes(b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nshowpage\n")
    cases = [(text, "not an image"), (empty, "empty"), (truncated, "truncated"),
             (eps, "not an image"), (tmp_path / "missing.jpg", "cannot read"),
             (tmp_path, "is a folder")]
    for path, reason in cases:
        with pytest.raises(ImageReadError) as caught:
            read_image(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and reason in message, message
        assert isinstance(caught.value, ValueError) and isinstance(caught.value, DataFormatError)
    with pytest.raises(ImageReadError, match=r"^uploaded data: not an image"):
        read_image(b"GIF89a but then nothing")
    with pytest.raises(ImageReadError, match=r"^uploaded data: empty"):
        read_image(b"")


def test_a_decompression_bomb_is_refused_from_its_header(tmp_path, monkeypatch):
    def never_decode(self, *args, **kwargs):
        raise AssertionError("decoded pixels of a photo its header already refuses")

    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(_png_header_only(100_000, 100_000))  # 10^10 pixels declared in 57 bytes
    with monkeypatch.context() as patch:
        patch.setattr(ImageFile.ImageFile, "load", never_decode)  # decodes a file's pixels
        with pytest.raises(ImageReadError, match=r"bomb.png: too large: .*10000000000 pixels"):
            read_image(bomb)
        bomb.write_bytes(_png_header_only(8000, 8000))  # 64 MP: under Pillow's limit, over ours
        with pytest.raises(ImageReadError, match=r"too large: 8000x8000 = 64,000,000 pixels, "
                                                 r"more than the limit of 50,000,000"):
            read_image(bomb)
    just_over = _save(tmp_path, "small.png", Image.fromarray(_pattern(10, 11)))
    with pytest.raises(ImageReadError, match="more than the limit of 109"):
        read_image(just_over, max_pixels=109)
    assert read_image(just_over, max_pixels=110).shape == (10, 11, 3)


# ------------------------------------------------------------------------ centre crop
@pytest.mark.parametrize("height, width, box", [
    (64, 64, (16, 16, 32, 32)),
    (64, 100, (34, 16, 32, 32)),
    (64, 101, (34, 16, 32, 32)),   # (101 - 32) / 2 = 34.5 rounds half to even: 34
    (63, 64, (16, 16, 32, 32)),    # side round(31.5) = 32, top round(15.5) = 16
    (100, 64, (16, 34, 32, 32)),
])
def test_centre_crop_of_side_32_is_exactly_the_middle_pixels(height, width, box):
    image = _pattern(height, width, seed=height * width)
    prepared = FacePreparer("center").prepare(image)
    x, y, side, _ = box
    assert prepared.box == box
    assert np.array_equal(prepared.face, image[y:y + side, x:x + side])
    assert (prepared.faces_found, prepared.method) == (0, "center")
    assert "centre crop" in prepared.note


@pytest.mark.parametrize("height, width, box", [
    (150, 150, (38, 38, 75, 75)),    # the LFW sample photos: (150 - 75) / 2 = 37.5 -> 38
    (250, 250, (62, 62, 125, 125)),  # the deep-funneled photos lfw_deepfunneled_32 came from
    (120, 301, (120, 30, 60, 60)),
])
def test_centre_crop_uses_the_pixels_of_its_box_and_no_other(height, width, box):
    x, y, side, _ = box
    image = np.zeros((height, width, 3), np.uint8)
    image[:] = [0, 0, 255]                          # outside the box: blue
    image[y:y + side, x:x + side] = [200, 120, 40]  # the box: one colour
    prepared = FacePreparer("center").prepare(image)
    assert prepared.box == box
    assert prepared.face.shape == (32, 32, 3) and prepared.face.dtype == np.uint8
    assert np.all(prepared.face == [200, 120, 40])  # a box one pixel off would bring in blue


def test_centre_crop_shrinks_with_lanczos():
    image = _pattern(150, 150, seed=5)
    expected = Image.fromarray(image[38:113, 38:113]).resize((32, 32), Image.Resampling.LANCZOS)
    assert np.array_equal(FacePreparer("center").prepare(image).face, np.asarray(expected))


def test_prepare_file_reads_any_mode_and_prepare_refuses_other_arrays(tmp_path):
    grey = _save(tmp_path, "grey.png", Image.fromarray(_pattern(64, 64)[..., 0], "L"))
    prepared = FacePreparer("center").prepare_file(grey)
    assert isinstance(prepared, PreparedFace) and prepared.face.shape == (32, 32, 3)
    assert np.array_equal(prepared.face[..., 0], prepared.face[..., 2])
    with open(grey, "rb") as f:
        assert np.array_equal(FacePreparer("center").prepare_file(f.read()).face, prepared.face)
    for bad in (np.zeros((8, 8, 3), np.float32), np.zeros((8, 8), np.uint8),
                np.zeros((8, 8, 4), np.uint8), np.zeros((0, 8, 3), np.uint8)):
        with pytest.raises(ValueError, match="query.png: expected a uint8"):
            FacePreparer("center").prepare(bad, "query.png")
    with pytest.raises(ValueError, match="unknown face detector"):
        FacePreparer("haar")


def test_without_the_mtcnn_package_auto_is_the_centre_crop_and_mtcnn_is_refused(monkeypatch):
    import common.faces.preparer as preparer
    monkeypatch.setattr(preparer, "mtcnn_importable", lambda: False)
    assert FacePreparer("auto").method == "center"
    with pytest.raises(ValueError, match="the mtcnn package is not installed"):
        FacePreparer("mtcnn")


def test_a_preparation_names_what_decides_the_face_and_remakes_the_preparer():
    """What an index records: the method and crop settings, compared without versions."""
    import common.faces.preparer as preparer
    narrow = FacePreparer("center", center_fraction=0.75, max_pixels=1000)
    record = narrow.preparation()
    assert record == {"detector": "center", "face_size": 32, "center_fraction": 0.75}
    remade = FacePreparer.from_preparation({**record, "versions": {"pillow": "0"}})
    assert remade.preparation() == record and remade.max_pixels != 1000  # limit not recorded
    photo = _pattern(90, 70)
    np.testing.assert_array_equal(remade.prepare(photo).face, narrow.prepare(photo).face)
    assert preparer.same_preparation({**record, "versions": {"pillow": "0"}}, record)
    assert not preparer.same_preparation(FacePreparer("center").preparation(), record)
    assert FacePreparer("center").preparation() == preparer.default_preparation("center")
    assert preparer.describe_preparation(record) == "center (center_fraction 0.75)"
    assert preparer.describe_preparation(preparer.default_preparation("mtcnn")) == \
        "mtcnn (face_scale 1.2, eyes levelled)"


# ------------------------------------------------------------------- detected squares
def test_face_square_is_1_2_times_the_box_mean_side_and_levels_the_eyes():
    square = crops.face_square((10, 20, 30, 40), (12, 30), (32, 50))
    assert (square.center_x, square.center_y) == (25.0, 40.0)
    assert square.side == pytest.approx(1.2 * math.sqrt(30 * 40))
    assert square.angle == pytest.approx(45.0)
    assert crops.face_square((10, 20, 30, 40)).angle == 0.0
    assert crops.Square(25.0, 40.0, 41.57).box() == (4, 19, 42, 42)


def test_an_upright_square_inside_the_photo_is_cut_exactly():
    image = _pattern(80, 100, seed=1)
    cut = crops.cut_square(image, crops.Square(50.0, 40.0, 32.0))
    assert np.array_equal(cut, image[24:56, 34:66])
    cut = crops.cut_square(image, crops.Square(50.0, 40.0, 64.0))
    expected = Image.fromarray(image[8:72, 18:82]).resize((32, 32), Image.Resampling.LANCZOS)
    assert np.array_equal(cut, np.asarray(expected))


def test_a_big_square_is_block_averaged_first_and_gives_the_same_face():
    rows, cols = np.mgrid[0:900, 0:1000]
    smooth = np.stack([127 + 120 * np.sin(rows / 70.0), 127 + 120 * np.cos(cols / 90.0),
                       (rows + cols) / 1900 * 255], axis=2).round().astype(np.uint8)
    cut = crops.cut_square(smooth, crops.Square(500.0, 450.0, 800.0))  # reduced 3x first
    expected = Image.fromarray(smooth[50:850, 100:900]).resize((32, 32),
                                                             Image.Resampling.LANCZOS)
    assert np.abs(cut.astype(int) - np.asarray(expected)).max() <= 2


def test_a_turned_square_is_rotated_content():
    image = _pattern(80, 100, seed=2)
    cut = crops.cut_square(image, crops.Square(50.0, 40.0, 32.0, angle=90.0))
    # Eyes on a line turned 90 degrees clockwise end level: the content turns back.
    assert np.abs(cut.astype(int) - np.rot90(image[24:56, 34:66])).max() <= 1


def test_a_square_past_the_edge_repeats_the_edge_pixels():
    image = _pattern(60, 70, seed=3)
    cut = crops.cut_square(image, crops.Square(6.0, 50.0, 32.0))  # 10 left, 6 below
    padded = np.pad(image, ((0, 6), (10, 0), (0, 0)), mode="edge")
    assert np.array_equal(cut, padded[34:66, 0:32])


# -------------------------------------------------------------------------- mtcnn
@pytest.fixture(scope="module")
def mtcnn_preparer():
    return FacePreparer("mtcnn")


def _lfw_photos(step: int = 1) -> list[str]:
    return sorted(glob.glob(os.path.join(LFW_PHOTOS, "*", "*.jpg")))[::step]


@needs_mtcnn
def test_mtcnn_refuses_a_photo_without_a_face(tmp_path, mtcnn_preparer):
    wall = _save(tmp_path, "wall.png", Image.new("RGB", (120, 90), (128, 128, 128)))
    with pytest.raises(FaceNotFoundError, match=r"wall.png: no face found"):
        mtcnn_preparer.prepare_file(wall)
    with pytest.raises(FaceNotFoundError, match=r"^tiny: no face found"):
        mtcnn_preparer.prepare(np.zeros((3, 500, 3), np.uint8), "tiny")


@needs_mtcnn
def test_an_mtcnn_preparation_is_its_settings_and_remakes_the_preparer(mtcnn_preparer):
    record = mtcnn_preparer.preparation()
    assert record == {"detector": "mtcnn", "face_size": 32, "face_scale": 1.2,
                      "level_eyes": True}
    import common.faces.preparer as preparer
    assert record == preparer.default_preparation("mtcnn") == \
        preparer.default_preparation("auto")
    assert "mtcnn" in mtcnn_preparer.versions()
    tilted = FacePreparer.from_preparation({**record, "level_eyes": False, "face_scale": 1.5})
    assert (tilted.method, tilted.level_eyes, tilted.face_scale) == ("mtcnn", False, 1.5)


@needs_mtcnn
def test_auto_means_mtcnn_when_installed_and_mtcnn_weights_come_from_the_package(
        tmp_path, monkeypatch, mtcnn_preparer):
    assert FacePreparer("auto").method == "mtcnn"
    # The package's loader would unpickle ./pnet.lz4 first: a stray file there must not load.
    (tmp_path / "pnet.lz4").write_bytes(b"not weights")
    monkeypatch.chdir(tmp_path)
    from common.faces.detector import MtcnnDetector
    assert MtcnnDetector().detect(np.zeros((64, 64, 3), np.uint8)) == []


@pytest.mark.slow
@needs_mtcnn
@needs_photos
def test_mtcnn_faces_are_laid_out_like_the_training_faces(mtcnn_preparer):
    """Re-detected in the prepared 32x32 faces, the box and eyes sit where they sit in the
    LFW deep-funneled training faces (measured there on 200 faces: box mean side 0.835 of
    the image, centre 0.50/0.50, eye midpoint 0.505/0.398, eyes level)."""
    from common.faces.detector import shared_mtcnn
    layout = []
    for path in _lfw_photos(step=8):
        prepared = mtcnn_preparer.prepare_file(path)
        assert prepared.face.shape == (32, 32, 3) and prepared.method == "mtcnn"
        again = shared_mtcnn().detect(prepared.face)
        assert again, f"{path}: no face in its own prepared face"
        x, y, w, h = again[0].box
        (lx, ly), (rx, ry) = again[0].left_eye, again[0].right_eye
        layout.append((math.sqrt(w * h) / 32, (x + w / 2) / 32, (y + h / 2) / 32,
                       (lx + rx) / 64, (ly + ry) / 64, math.degrees(math.atan2(ry - ly, rx - lx))))
    size, cx, cy, ex, ey, angle = np.median(np.array(layout), axis=0)
    assert 0.78 < size < 0.89
    assert abs(cx - 0.5) < 0.03 and abs(cy - 0.5) < 0.03
    assert abs(ex - 0.505) < 0.03 and abs(ey - 0.398) < 0.03
    assert abs(angle) < 3.0


@needs_mtcnn
@needs_photos
def test_several_faces_keep_the_largest_and_say_so(mtcnn_preparer):
    big, small = (read_image(p) for p in _lfw_photos()[:2])
    small = np.asarray(Image.fromarray(small).resize((75, 75), Image.Resampling.LANCZOS))
    group = np.zeros((150, 300, 3), np.uint8)
    group[:, 150:] = big
    group[40:115, 20:95] = small
    prepared = mtcnn_preparer.prepare(group, "group.jpg")
    assert prepared.faces_found >= 2 and "kept the largest" in prepared.note
    x, y, w, h = prepared.box
    assert x + w / 2 > 150  # the big face's side
    alone = mtcnn_preparer.prepare(big)
    assert abs((x - 150) - alone.box[0]) <= 1 and abs(y - alone.box[1]) <= 1


@needs_mtcnn
@needs_photos
def test_mtcnn_is_deterministic_and_finds_an_already_prepared_face(mtcnn_preparer):
    path = _lfw_photos()[8]
    first = mtcnn_preparer.prepare_file(path)
    with open(path, "rb") as f:
        second = mtcnn_preparer.prepare_file(f.read())
    assert np.array_equal(first.face, second.face) and first.box == second.box
    again = mtcnn_preparer.prepare(first.face, "prepared.png")  # 32x32: found at 4x
    assert again.faces_found >= 1 and again.face.shape == (32, 32, 3)
