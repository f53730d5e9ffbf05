"""Face search end to end: encoders (export and run folder), build / add / remove / query
through the Python API and the command line, bad inputs skipped or refused cleanly."""

from __future__ import annotations

import json
import os
import pickle
import shutil
import subprocess
import sys

import numpy as np
import pytest

from checkout import ROOT
from common.data.pickle_folder import write_pickle_folder
from common.data.preprocess import to_rows
from common.export.loader import load_encoder
from face_search import api
from face_search.encoder import CodeEncoder
from face_search.errors import ModelPathError, UnknownIdError
from face_search.index import GalleryIndex
from search_service_fixture import raw_faces, train_tiny_export

pytestmark = pytest.mark.slow  # trains models or starts processes

ENV = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", PYTHONPATH=ROOT)
HAS_FACES = os.path.exists(os.path.join(ROOT, "common", "faces", "__init__.py"))


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    """A 2-epoch DCBH run (12 bits, narrow backbone) on 6 synthetic identities, exported."""
    root = tmp_path_factory.mktemp("search")
    train_tiny_export(root)
    return root


def reference_knn(queries, codes, bits, k):
    q = np.unpackbits(queries, axis=1, bitorder="little")[:, :bits]
    d = np.unpackbits(codes, axis=1, bitorder="little")[:, :bits]
    dist = (q[:, None] != d[None]).sum(axis=2)
    return [(np.lexsort((np.arange(len(codes)), row))[:k], row) for row in dist]


# ------------------------------------------------------------------ encoder
def test_export_and_run_folder_encode_alike(model):
    faces = np.random.default_rng(1).integers(0, 256, (20, 32, 32, 3), dtype=np.uint8)
    from_export = CodeEncoder.from_path(str(model / "export"))
    from_run = CodeEncoder.from_path(str(model / "run"))
    assert (from_export.kind, from_run.kind, from_export.num_bits) == ("export", "run", 12)
    packed = from_export.encode_faces(faces)
    served = load_encoder(str(model / "export"))(faces)
    np.testing.assert_array_equal(packed, np.packbits(served["codes"] > 0, axis=1,
                                                      bitorder="little"))
    # the run's Keras model and the export's graph may run other kernels: their outputs
    # agree within float error, their codes wherever an output is away from 0, where a bit
    # flips; and each recognises the other as the index's model
    from_run_bits = np.unpackbits(from_run.encode_faces(faces), axis=1,
                                  bitorder="little")[:, :12]
    far = np.abs(served["relaxed"]) > 1e-3
    np.testing.assert_array_equal(from_run_bits[far], (served["codes"] > 0)[far])
    np.testing.assert_allclose(from_run.probe_relaxed, from_export.probe_relaxed, atol=1e-5)
    from_run.check_matches(from_export.describe(), "idx")
    from_export.check_matches(from_run.describe(), "idx")
    with pytest.raises(ValueError, match="uint8"):
        from_export.encode_faces(faces.astype(np.float32))


def test_a_folder_that_is_no_model_is_refused(model, tmp_path):
    with pytest.raises(ModelPathError, match="neither an export .* nor a training run"):
        CodeEncoder.from_path(str(model / "data"))
    with pytest.raises(ModelPathError, match="no such folder"):
        CodeEncoder.from_path(str(tmp_path / "missing"))


# ------------------------------------------------------------------ API
def test_build_and_search_pickle_folders_exactly(model, tmp_path):
    train_dir, test_dir = model / "data" / "train", model / "data" / "test"
    report = api.build_index(str(model / "export"), [str(train_dir)], str(tmp_path / "idx"))
    assert (report.added, report.total, report.identities, report.num_bits) == (48, 48, 6, 12)
    assert not report.skipped
    gallery, labels = raw_faces(train_dir)
    queries, query_labels = raw_faces(test_dir)
    encoder = CodeEncoder.from_path(str(model / "export"))
    codes, qcodes = encoder.encode_faces(gallery), encoder.encode_faces(queries)
    results = api.search([str(test_dir)], str(tmp_path / "idx"), top_k=7)
    assert len(results) == len(queries)
    for result, label, (order, dist) in zip(results, query_labels,
                                            reference_knn(qcodes, codes, 12, 7)):
        assert result.identity == str(label) and result.error is None
        assert [h.gallery_id for h in result.hits] == order.tolist()
        assert [h.distance for h in result.hits] == dist[order].tolist()
        assert [h.label for h in result.hits] == labels[order].tolist()
    first = results[0].hits[0]
    assert first.source == f"{train_dir / 'part_000.pkl'}#{first.gallery_id}"
    # faces straight from Python, and a radius search, agree with the reference
    direct = api.search(queries[:3], str(tmp_path / "idx"), top_k=7)
    assert [r.hits for r in direct] == [r.hits for r in results[:3]]
    within = api.search(queries[:3], str(tmp_path / "idx"), top_k=0, radius=2)
    for result, (order, dist) in zip(within, reference_knn(qcodes[:3], codes, 12, 48)):
        assert [h.gallery_id for h in result.hits] == order[dist[order] <= 2].tolist()


def test_label_names_bad_files_add_and_remove(model, tmp_path):
    faces, labels = raw_faces(model / "data" / "test")
    named = tmp_path / "named"
    write_pickle_folder(named / "faces", to_rows(faces.astype(np.float32)), labels,
                        rows_per_file=9)
    (named / "meta.json").write_text(json.dumps({"label_names": [f"person {i}" for i in
                                                                  range(6)]}))
    with open(named / "faces" / "part_999.pkl", "wb") as f:
        f.write(pickle.dumps((np.zeros((2, 5)), np.zeros(2))))  # wrong row width
    report = api.build_index(str(model / "run"), [str(named / "faces")], str(tmp_path / "idx"),
                             kind="mih")
    assert report.added == len(labels) and len(report.skipped) == 1
    assert report.skipped[0].source.endswith("part_999.pkl") and "3072" in report.skipped[0].reason
    index = GalleryIndex.load(str(tmp_path / "idx"))
    assert index.identity_counts() == {f"person {i}": 3 for i in range(6)}
    assert index.model["kind"] == "run" and index.model["num_bits"] == 12

    added = api.add_to_index(str(tmp_path / "idx"), [str(model / "data" / "test")],
                             model=str(model / "export"))  # same model, other folder: accepted
    assert added.ids.tolist() == list(range(18, 36)) and added.total == 36
    assert api.remove_from_index(str(tmp_path / "idx"), ids=[0, 1],
                                 identities=["person 5"]) == 2 + 3
    with pytest.raises(UnknownIdError):
        api.remove_from_index(str(tmp_path / "idx"), ids=[0])
    index = GalleryIndex.load(str(tmp_path / "idx"))
    assert len(index) == 31 and "person 5" not in index.identity_counts()

    index.model = dict(index.model, probe_relaxed=(  # as if built by another model
        np.asarray(index.model["probe_relaxed"]) + 0.01).tolist())
    index.save(str(tmp_path / "idx"))
    with pytest.raises(ModelPathError, match="not the model the index"):
        api.add_to_index(str(tmp_path / "idx"), [str(named / "faces")],
                         model=str(model / "export"))


@pytest.mark.skipif(not HAS_FACES, reason="common.faces is not available")
def test_photo_galleries_skip_bad_photos_and_never_crash(model, tmp_path):
    from PIL import Image
    from common.faces import FacePreparer

    faces, labels = raw_faces(model / "data" / "test")
    gallery = tmp_path / "photos"
    for i, (face, label) in enumerate(zip(faces, labels)):
        folder = gallery / f"person_{label}"
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).resize((128, 128)).save(folder / f"{i}.png")
    (gallery / "person_0" / "broken.jpg").write_bytes(b"not a jpeg")
    (gallery / "person_0" / "notes.txt").write_text("not a photo")
    preparer = FacePreparer(detector="center")
    report = api.build_index(str(model / "export"), [str(gallery)], str(tmp_path / "idx"),
                             preparer=preparer)
    assert report.added == len(faces) and report.identities == 6
    assert {os.path.basename(s.source) for s in report.skipped} == {"broken.jpg", "notes.txt"}
    index = GalleryIndex.load(str(tmp_path / "idx"))
    assert index.identity_labels() == {f"person_{i}": i for i in range(6)}  # first seen order
    searcher = api.FaceSearcher(str(tmp_path / "idx"), preparer=preparer)
    photo = str(gallery / "person_2" / f"{int(np.flatnonzero(labels == 2)[0])}.png")
    result = searcher.search_photo(photo, top_k=0, radius=0)  # every item at distance 0
    assert photo in [h.source for h in result.hits] and result.face_box is not None
    with open(photo, "rb") as f:
        assert searcher.search_photo(f.read(), top_k=0, radius=0).hits == result.hits
    assert searcher.search_photo(b"garbage", top_k=3).error


# ------------------------------------------------------------------ command line
def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "face_search", *args], env=ENV, cwd=cwd,
                          capture_output=True, text=True, timeout=300)


def test_command_line_builds_queries_and_reports_errors(model, tmp_path):
    train_dir, test_dir = str(model / "data" / "train"), str(model / "data" / "test")
    idx = str(tmp_path / "idx")
    built = cli("build", "--model", str(model / "export"), "--gallery", train_dir,
                "--index", idx, "--kind", "mih")
    assert built.returncode == 0, built.stderr
    assert "indexed 48 faces; the index holds 48 faces of 6 identities (12-bit codes, kind " \
           "mih)" in built.stdout
    assert "build: done: 48 faces encoded from 1/1 inputs" in built.stderr

    queried = cli("query", "--index", idx, "--top_k", "4", "--format", "json", test_dir,
                  os.path.join(ROOT, "README.md"))
    assert queried.returncode == 2 and queried.stderr.startswith("error: ")
    assert "README.md: not a photo" in queried.stderr and not queried.stdout

    queried = cli("query", "--index", idx, "--top_k", "4", "--format", "json", test_dir)
    assert queried.returncode == 0, queried.stderr
    out = json.loads(queried.stdout)
    expected = api.search([test_dir], idx, top_k=4)
    assert [[h["gallery_id"] for h in q["hits"]] for q in out["queries"]] == \
        [[h.gallery_id for h in r.hits] for r in expected]
    assert out["queries"][0]["hits"][0]["rank"] == 1 and out["num_bits"] == 12

    table = cli("query", "--index", idx, "--top_k", "2", test_dir, cwd=str(model))
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    first_label = int(raw_faces(test_dir)[1][0])
    assert lines[0] == f"query data/test/part_000.pkl#0  (identity {first_label})"
    assert lines[1].split() == ["rank", "distance", "gallery_id", "identity", "label", "source"]

    pkx = tmp_path / "pkx"  # a pickle folder with a sub-folder: neither layout
    shutil.copytree(train_dir, pkx)
    os.makedirs(pkx / "extra")
    damaged = tmp_path / "damaged"  # nothing usable: no index of 0 faces replaces idx
    damaged.mkdir()
    (damaged / "part_000.pkl").write_bytes(b"not a pickle")
    shutil.copytree(model / "run", tmp_path / "not_an_index")
    refused = cli("build", "--model", str(model / "export"), "--gallery", train_dir,
                  "--index", str(tmp_path / "not_an_index"))
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1 and "not an index folder" in refused.stderr
    for args, message in [(("query", "--index", str(tmp_path / "nope"), test_dir),
                           "no such index folder"),
                          (("remove", "--index", idx), "give --ids and/or --identities"),
                          (("remove", "--index", idx, "--ids", "999"), "not in the index"),
                          (("remove", "--index", idx, "--ids", "99999999999999999999"),
                           "gallery ids not in the index: 99999999999999999999"),
                          (("build", "--model", str(model / "export"), "--gallery", str(pkx),
                            "--index", idx), f"{pkx}: holds both pickle files (part_000.pkl"),
                          (("query", "--index", idx, str(pkx)), "and sub-folders (extra)"),
                          (("build", "--model", str(model / "export"), "--gallery",
                            str(damaged), "--index", idx, "--progress=false"),
                           f"{damaged}: no usable face to index (1 input(s) skipped: "),
                          (("frobnicate",), "give a command"),
                          # a setting of another command is refused, not silently ignored
                          (("query", "--index", idx, "--host", "0.0.0.0", test_dir),
                           "--host is not a setting of query (it is one of serve)"),
                          (("info", "--index", idx, "--top_k", "3"),
                           "--top_k is not a setting of info (it is one of query, serve)"),
                          (("query", "--index", idx, "--top_k", "-1", test_dir), "top_k")]:
        result = cli(*args)
        assert result.returncode == 2 and message in result.stderr, (args, result.stderr)
        assert result.stderr.count("\n") == 1 and result.stderr.startswith("error: ")
    assert len(GalleryIndex.load(idx)) == 48  # every refusal left the index as it was


@pytest.mark.skipif(not HAS_FACES, reason="common.faces is not available")
def test_command_line_keeps_one_preparation_per_index(model, tmp_path):
    """build records the detector; add refuses another one (the index unchanged); query
    with another one searches, with one warning line. The index is made to record MTCNN
    afterwards, so that no command here has to load MTCNN."""
    from PIL import Image

    faces, labels = raw_faces(model / "data" / "test")
    gallery = tmp_path / "photos"
    for i, (face, label) in enumerate(zip(faces[:6], labels[:6])):
        (gallery / f"person_{label}").mkdir(parents=True, exist_ok=True)
        Image.fromarray(face).resize((64, 64)).save(gallery / f"person_{label}" / f"{i}.png")
    idx = str(tmp_path / "idx")
    built = cli("build", "--model", str(model / "export"), "--gallery", str(gallery),
                "--index", idx, "--detector", "center")
    assert built.returncode == 0, built.stderr
    info = json.loads(cli("info", "--index", idx).stdout)
    assert (info["faces"]["detector"], info["faces"]["center_fraction"]) == ("center", 0.5)

    index = GalleryIndex.load(idx)
    index.faces = {"detector": "mtcnn", "face_size": 32, "face_scale": 1.2, "level_eyes": True}
    index.save(idx)
    with open(os.path.join(idx, "index.json"), "rb") as f:
        manifest = f.read()
    added = cli("add", "--index", idx, "--gallery", str(gallery), "--detector", "center")
    assert added.returncode == 2 and added.stderr.count("\n") == 1, added.stderr
    assert "prepared with detector mtcnn (face_scale 1.2, eyes levelled)" in added.stderr
    assert "would be prepared with detector center (center_fraction 0.5)" in added.stderr
    with open(os.path.join(idx, "index.json"), "rb") as f:
        assert f.read() == manifest

    photo = str(next(gallery.glob("*/*.png")))
    queried = cli("query", "--index", idx, "--detector", "center", "--top_k", "1",
                  "--progress=false", photo)
    assert queried.returncode == 0, queried.stderr
    warnings = [line for line in queried.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 1 and "two different preparations" in warnings[0], queried.stderr
    assert "query photos are prepared with detector center" in warnings[0]
    assert f"{photo}" in queried.stdout
