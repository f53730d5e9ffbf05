"""Photos -> the original pickle layout (python -m common.data.convert).

A folder of photos drawn here with numpy (PNG, JPEG, grey, RGBA, EXIF-rotated, nested
folders) plus broken files; conversions use the centre crop so that every face is known
exactly. The LFW sample photos (../shared/data, skipped when absent) run with mtcnn.
"""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from checkout import ROOT as REPO
from common.data import load_pickle_folder
from common.data.errors import DataFormatError
from common.data.photo_dataset import convert_photos, split_identity, write_conversion
from common.data.photo_output import FORMAT, check_output_folder
from common.cli.convert import ProgressDisplay, summary_lines
from common.faces import FacePreparer
from common.faces.detector import mtcnn_importable
from common.training.data import load_split_data

LFW_PHOTOS = os.path.join(REPO, "..", "shared", "data", "lfw_photos_sample")
CENTER = FacePreparer("center")


def _pattern(seed: int, height: int = 64, width: int = 64) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (height, width, 3), dtype=np.uint8)


def _write(path, image: Image.Image, **options) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    image.save(path, **options)


@pytest.fixture()
def photos(tmp_path):
    """SRC with 3 usable identities (bob's photos in nested folders, carol's in every mode),
    one identity too small to read (dave), one left with too few readable photos (erin),
    broken files, and files that are not photos. Returns (src, {relative path: face})
    for every usable photo: the exact 32x32 face a centre crop must give."""
    src = tmp_path / "photos"
    faces = {}

    def png(rel: str, seed: int) -> None:
        pixels = _pattern(seed)  # 64x64: the centre crop is exactly pixels[16:48, 16:48]
        _write(str(src / rel), Image.fromarray(pixels))
        faces[rel] = pixels[16:48, 16:48]

    for i in range(4):
        png(f"alice/a{i}.png", 10 + i)
    png("bob/2019/b0.png", 20)
    png("bob/2019/paris/b1.png", 21)
    png("bob/b2.png", 22)
    grey = _pattern(30)[..., 0]
    _write(str(src / "carol/grey.png"), Image.fromarray(grey, "L"))
    faces["carol/grey.png"] = np.repeat(grey[16:48, 16:48, None], 3, axis=2)
    rgba = np.dstack([_pattern(31), np.full((64, 64, 1), 255, np.uint8)])
    _write(str(src / "carol/opaque.PNG"), Image.fromarray(rgba, "RGBA"))
    faces["carol/opaque.PNG"] = rgba[16:48, 16:48, :3]
    sideways = _pattern(32, 64, 128)  # stored 64 high x 128 wide, shown 128 high x 64 wide
    exif = Image.Exif()
    exif[0x0112] = 8  # "rotate 90 degrees counter-clockwise to display"
    _write(str(src / "carol/phone.webp"), Image.fromarray(sideways), exif=exif, lossless=True)
    faces["carol/phone.webp"] = np.rot90(sideways)[48:80, 16:48]
    for i in range(2):
        png(f"dave/d{i}.png", 40 + i)
        faces.pop(f"dave/d{i}.png")  # dave has too few photos: never used
    png("erin/e0.png", 50)
    faces.pop("erin/e0.png")  # erin keeps one readable photo: dropped
    (src / "erin" / "notes.jpg").write_text("not a photo\n")
    (src / "erin" / "empty.png").write_bytes(b"")
    jpeg = io.BytesIO()
    Image.fromarray(_pattern(51)).save(jpeg, "JPEG")
    (src / "alice" / "cut.jpg").write_bytes(jpeg.getvalue()[:300])
    (src / "alice" / "notes.txt").write_text("who is who\n")
    (src / "alice" / ".DS_Store").write_bytes(b"\0\0")
    (src / "README.md").write_text("my photos\n")
    return str(src), faces


def _files(folder: str) -> dict[str, bytes]:
    out = {}
    for root, _, names in os.walk(folder):
        for name in names:
            path = os.path.join(root, name)
            with open(path, "rb") as f:
                out[os.path.relpath(path, folder)] = f.read()
    return out


def _convert(src: str, out: str, **options) -> dict:
    conversion = convert_photos(src, CENTER, **options)
    write_conversion(out, conversion, rows_per_file=5, src=src)
    with open(os.path.join(out, "meta.json"), encoding="utf-8") as f:
        return json.load(f)


def test_rows_hold_each_photos_centre_face_with_its_identitys_label(photos, tmp_path):
    src, faces = photos
    out = str(tmp_path / "data")
    meta = _convert(src, out)
    labels = {"alice": 0, "bob": 1, "carol": 2}  # sorted names; dave and erin dropped
    assert [(i["label"], i["name"]) for i in meta["identities"]] == sorted(
        (v, k) for k, v in labels.items())
    seen = []
    for split in ("train", "test"):
        x, y = load_pickle_folder(os.path.join(out, split))
        assert x.dtype == np.float32 and x.shape[1] == 3072 and y.dtype == np.int64
        assert len(meta["rows"][split]) == len(y) == meta[f"{split}_images"]
        for row, label, rel in zip(x, y, meta["rows"][split]):
            assert label == labels[rel.split("/")[0]]
            expected = faces[rel].transpose(2, 0, 1).reshape(-1)  # channel-first, flattened
            assert np.array_equal(row, expected.astype(np.float32)), rel
            seen.append(rel)
    assert sorted(seen) == sorted(faces)  # every usable photo once, nothing else
    assert meta["test_images"] == 3 and meta["train_images"] == len(faces) - 3
    assert sorted(os.listdir(os.path.join(out, "train"))) == ["part_000.pkl", "part_001.pkl"]


def test_meta_records_identities_skips_drops_and_settings(photos, tmp_path):
    src, _ = photos
    meta = _convert(src, str(tmp_path / "data"), test_per_identity=2, min_per_identity=3, seed=4)
    assert meta["format"] == FORMAT
    assert [(i["name"], i["photos"], i["usable"], i["train"], i["test"])
            for i in meta["identities"]] == [("alice", 5, 4, 2, 2), ("bob", 3, 3, 1, 2),
                                             ("carol", 3, 3, 1, 2)]
    assert [(d["name"], d["photos"], d["usable"]) for d in meta["dropped_identities"]] == [
        ("dave", 2, None), ("erin", 3, 1)]
    skipped = {s["file"]: (s["kind"], s["reason"]) for s in meta["skipped"]}
    assert set(skipped) == {"alice/cut.jpg", "erin/notes.jpg", "erin/empty.png"}
    assert skipped["alice/cut.jpg"][0] == "unreadable"
    assert "truncated" in skipped["alice/cut.jpg"][1]
    assert "not an image" in skipped["erin/notes.jpg"][1]
    assert "empty" in skipped["erin/empty.png"][1]
    assert meta["photos"] == {"found": 16, "read": 14, "not_read": 2, "used": 10,
                              "skipped_no_face": 0, "skipped_unreadable": 3, "several_faces": 0}
    assert meta["ignored_files"] == ["README.md", "alice/notes.txt"]
    settings = meta["settings"]
    assert (settings["test_per_identity"], settings["min_per_identity"], settings["seed"],
            settings["detector"], settings["center_fraction"]) == (2, 3, 4, "center", 0.5)
    assert meta["files"] == {"train": ["part_000.pkl"], "test": ["part_000.pkl", "part_001.pkl"]}
    text = "\n".join(summary_lines(meta, "OUT", 1.0))
    assert "skipped 3: no face 0, unreadable 3" in text
    assert "dropped identities (fewer than 3 usable photos): 2 (2 photos not read)" in text
    # a skipped photo whose name is not UTF-8 (an old archive's Latin-1 byte) is printable
    meta["skipped"][0]["file"] = "erin/caf\udce9.jpg"
    text = "\n".join(summary_lines(meta, "OUT", 1.0))
    assert "skipped erin/caf\\xe9.jpg: " in text
    text.encode("utf-8")


def test_same_seed_gives_identical_bytes_and_another_seed_another_order(photos, tmp_path):
    src, _ = photos
    _convert(src, str(tmp_path / "a"), seed=7)
    _convert(src, str(tmp_path / "b"), seed=7)
    _convert(src, str(tmp_path / "c"), seed=8)
    a, b, c = (_files(str(tmp_path / n)) for n in "abc")
    assert a == b
    assert a["train/part_000.pkl"] != c["train/part_000.pkl"]
    rows_a = load_pickle_folder(str(tmp_path / "a" / "train"))[0]
    rows_c = load_pickle_folder(str(tmp_path / "c" / "train"))[0]
    assert rows_a.shape == rows_c.shape  # another sample of the same photos


def test_an_identitys_split_depends_only_on_seed_name_and_count():
    train, test = split_identity("alice", 8, 2, seed=0)
    assert sorted(train + test) == list(range(8)) and len(test) == 2 and train == sorted(train)
    assert split_identity("alice", 8, 2, seed=0) == (train, test)
    picks = {tuple(split_identity(name, 8, 2, seed=0)[1]) for name in ("a", "b", "c", "d", "e")}
    assert len(picks) > 1  # names draw different test photos


def test_written_folder_loads_as_a_training_data_set(photos, tmp_path):
    src, _ = photos
    out = tmp_path / "data"
    _convert(src, str(out))
    data = load_split_data("folder", train_dir=str(out / "train"), test_dir=str(out / "test"))
    assert data.num_classes == 3
    assert data.train_images.shape == (7, 32, 32, 3) and data.test_images.shape == (3, 32, 32, 3)
    assert sorted(set(data.test_labels.tolist())) == [0, 1, 2]


def test_refuses_an_output_folder_that_is_not_its_own_and_touches_nothing(photos, tmp_path):
    src, _ = photos
    mine = tmp_path / "results"
    mine.mkdir()
    (mine / "paper.tex").write_text("precious\n")
    conversion = convert_photos(src, CENTER)
    with pytest.raises(DataFormatError, match="not a data set this converter wrote"):
        write_conversion(str(mine), conversion, src=src)
    assert os.listdir(mine) == ["paper.tex"]
    assert sorted(os.listdir(tmp_path)) == ["photos", "results"]  # no temporary folder left
    for bad, why in ((os.path.join(src, "alice", "out"), "inside the source folder"),
                     (str(tmp_path), "contains the source folder"),
                     (os.path.join(src, "README.md"), "inside the source folder")):
        with pytest.raises(DataFormatError, match=why):
            check_output_folder(bad, src)
    link = tmp_path / "link"
    link.symlink_to(mine)
    with pytest.raises(DataFormatError, match="symbolic link"):
        check_output_folder(str(link), src)


def test_replaces_its_previous_output_whole_and_a_failed_write_keeps_it(photos, tmp_path,
                                                                         monkeypatch):
    src, _ = photos
    out = str(tmp_path / "data")
    _convert(src, out, seed=1)
    first = _files(out)
    _convert(src, out, seed=2)  # a previous output: replaced
    second = _files(out)
    assert second != first and set(second) == set(first)
    assert sorted(os.listdir(tmp_path)) == ["data", "photos"]

    import common.data.photo_dataset as photo_dataset
    original, calls = photo_dataset.write_pickle_folder, []

    def write_then_fail(path, x, y, **options):
        calls.append(path)
        if len(calls) == 2:
            raise KeyboardInterrupt  # Ctrl-C between the two splits
        return original(path, x, y, **options)

    monkeypatch.setattr(photo_dataset, "write_pickle_folder", write_then_fail)
    with pytest.raises(KeyboardInterrupt):
        _convert(src, out, seed=3)
    assert _files(out) == second  # the previous data set, untouched
    assert sorted(os.listdir(tmp_path)) == ["data", "photos"]  # temporary folder removed


def test_bad_counts_and_folders_without_photos_are_refused(tmp_path, photos):
    src, _ = photos
    with pytest.raises(ValueError, match="min_per_identity > test_per_identity"):
        convert_photos(src, CENTER, test_per_identity=2, min_per_identity=2)
    with pytest.raises(DataFormatError, match="no identity has at least 6 usable photos"):
        convert_photos(src, CENTER, min_per_identity=6)
    (tmp_path / "empty" / "nobody").mkdir(parents=True)
    with pytest.raises(DataFormatError, match="holds no photos in identity folders"):
        convert_photos(str(tmp_path / "empty"), CENTER)
    with pytest.raises(DataFormatError, match="folder does not exist"):
        convert_photos(str(tmp_path / "nowhere"), CENTER)


def test_progress_is_a_line_every_n_photos_or_a_bar_on_a_terminal():
    lines = io.StringIO()
    show = ProgressDisplay(every=2, stream=lines)
    for done in range(1, 6):
        show(done, 5)
    assert [line.split(" (")[0] for line in lines.getvalue().splitlines()] == [
        "prepared 2/5 photos", "prepared 4/5 photos", "prepared 5/5 photos"]

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    screen = Terminal()
    show = ProgressDisplay(every=2, stream=screen)
    show(5, 5)
    assert screen.getvalue().startswith("\r[" + "#" * 30 + "] 5/5 photos") and \
        screen.getvalue().endswith("\n")


def _cli(*args: str, cwd: str = REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "common.data.convert", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120,
                          env=dict(os.environ, PYTHONPATH=REPO))


def test_command_line_converts_and_refuses_with_one_error_line(photos, tmp_path):
    src, _ = photos
    out = str(tmp_path / "data")
    done = _cli("--src", src, "--out", out, "--detector", "center", "--seed", "3")
    assert done.returncode == 0, done.stderr
    assert "used 10: train 7, test 3 (3 identities, labels 0..2)" in done.stdout
    assert "prepared 14/14 photos" in done.stderr
    with open(os.path.join(out, "meta.json"), encoding="utf-8") as f:
        assert json.load(f)["settings"]["seed"] == 3
    for args, message in (
            (["--src", str(tmp_path / "nowhere"), "--out", out], "--src "),
            (["--src", src, "--out", str(tmp_path)], "--out "),
            (["--src", src, "--out", out, "--test_per_identity", "3"],
             "--min_per_identity must be greater than --test_per_identity")):
        failed = _cli(*args, "--detector", "center")
        assert failed.returncode == 2, failed.stderr
        errors = [line for line in failed.stderr.splitlines() if line.startswith("error:")]
        assert len(errors) == 1 and message in errors[0], failed.stderr
        assert "Traceback" not in failed.stderr


@pytest.mark.slow
@pytest.mark.skipif(not mtcnn_importable(), reason="the mtcnn package is not installed")
@pytest.mark.skipif(not os.path.isdir(LFW_PHOTOS), reason=f"no LFW sample photos at {LFW_PHOTOS}")
def test_lfw_sample_photos_convert_with_mtcnn(tmp_path, capsys):
    """Measured: all 96 photos give a face; 19 show more than one (mtcnn 1.0.0)."""
    conversion = convert_photos(LFW_PHOTOS, FacePreparer("mtcnn"), seed=0)
    out = write_conversion(str(tmp_path / "lfw"), conversion, src=LFW_PHOTOS)
    meta = conversion.meta
    names = sorted(n for n in os.listdir(LFW_PHOTOS) if os.path.isdir(os.path.join(LFW_PHOTOS, n)))
    assert [i["name"] for i in meta["identities"]] == names and len(names) == 12
    assert meta["photos"]["found"] == meta["photos"]["used"] == 96
    assert meta["skipped"] == [] and meta["dropped_identities"] == []
    several = meta["several_faces"]
    assert meta["photos"]["several_faces"] == len(several) > 0
    assert all(item["faces"] >= 2 for item in several)
    x, y = load_pickle_folder(os.path.join(out, "train"))
    assert x.shape == (84, 3072) and sorted(set(y.tolist())) == list(range(12))
    assert 0 <= x.min() and x.max() <= 255 and x.std() > 20  # real faces, not blank crops
    with capsys.disabled():
        print(f"\nLFW sample: {len(several)} of 96 photos with several faces, "
              f"converted in {conversion.seconds:.1f}s")
