"""A tiny trained model, its gallery index and a running search service, for the tests of
the web service and its page.

Why a cached builder instead of a fixture: the server tests and the browser test need the
same model and index; building them once per test process (about 15 s: a 2-epoch DCBH on
6 synthetic identities, :func:`train_tiny_export`, which tests/face_search/test_api.py uses too)
keeps both files fast.
"""

from __future__ import annotations

import atexit
import functools
import io
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

PHOTO_IDENTITY = "photo person"


def raw_faces(folder: Path) -> tuple[np.ndarray, np.ndarray]:
    """uint8 faces and labels of a pickle folder, as the index encodes them."""
    from common.data.pickle_folder import load_pickle_folder
    from common.data.preprocess import to_nhwc
    x, y = load_pickle_folder(str(folder))
    return np.clip(np.rint(to_nhwc(x)), 0, 255).astype(np.uint8), y


def train_tiny_export(root: Path) -> None:
    """root/data/{train,test} (6 synthetic identities), root/run (a 2-epoch 12-bit DCBH
    with a narrow backbone) and root/export (its best_map state): about 15 s."""
    from common.training.saved_run import export_run
    from common.training.data import load_split_data
    from common.training.loop import TrainConfig, train
    from dcbh_tf.method import DCBH

    data = load_split_data("synthetic", str(root / "data"), synthetic_kwargs=dict(
        num_identities=6, train_per_identity=8, test_per_identity=3))
    train(DCBH(num_bits=12, code_length=3, width_multiplier=0.0625), data,
          TrainConfig(epochs=2, model_dir=str(root / "run"), batch_size=16, eval_every=0,
                      log_every_steps=0))
    export_run(DCBH, str(root / "run"), str(root / "export"), "best_map")


@functools.cache
def tiny_index() -> Path:
    """A folder with data/{train,test} (6 identities), export/ (12-bit DCBH) and index/
    (the train faces, then two photos of PHOTO_IDENTITY: photos/.../keep.png, gone.png)."""
    from common.faces import FacePreparer
    from face_search import api

    root = Path(tempfile.mkdtemp(prefix="face-search-service-"))
    atexit.register(shutil.rmtree, root, True)
    train_tiny_export(root)
    api.build_index(str(root / "export"), [str(root / "data" / "train")], str(root / "index"))
    faces, _ = raw_faces(root / "data" / "test")
    photos = root / "photos" / PHOTO_IDENTITY
    photos.mkdir(parents=True)
    for name, face in (("keep.png", faces[0]), ("gone.png", faces[1])):
        Image.fromarray(face).resize((64, 64), Image.Resampling.BICUBIC).save(photos / name)
    api.add_to_index(str(root / "index"), [str(photos)], preparer=FacePreparer("center"))
    return root


def start(root: Path, detector: str = "center", max_upload_bytes: int = 300_000,
          top_k: int = 5, **limits: Any) -> Any:
    """A quiet SearchServer for ``root``'s index on a free localhost port, serving in a
    thread (stop it with ``.shutdown(); .server_close()``); ``limits``: the other
    arguments of ``make_server`` (max_concurrent_searches, upload_idle_seconds, ...)."""
    from common.faces import FacePreparer
    from face_search.searcher import FaceSearcher
    from face_search.service.server import make_server, serve_in_thread
    from face_search.service.web_api import SearchService

    searcher = FaceSearcher(str(root / "index"), preparer=FacePreparer(detector))
    server = make_server(SearchService(searcher, top_k, max_upload_bytes), "127.0.0.1", 0,
                         quiet=True, **limits)
    serve_in_thread(server)
    return server


def synthetic_photo(face: np.ndarray, size: tuple[int, int] = (96, 96)) -> bytes:
    """JPEG bytes of a "photo" of a 32x32 synthetic face: enlarged to half the shorter side
    in the middle of a plain gradient, so that the centre crop (the detector "center")
    is the face again."""
    width, height = size
    side = min(width, height) // 2
    ramp = np.linspace(0.0, 1.0, width)[None, :, None]
    back = (np.array([70, 90, 120]) * (1 - ramp) + np.array([150, 160, 140]) * ramp)
    photo = Image.fromarray((back * np.ones((height, 1, 1))).astype(np.uint8), "RGB")
    photo.paste(Image.fromarray(face, "RGB").resize((side, side), Image.Resampling.BICUBIC),
                ((width - side) // 2, (height - side) // 2))
    out = io.BytesIO()
    photo.save(out, "JPEG", quality=95)
    return out.getvalue()


def photo_path(root: Path, name: str) -> str:
    return os.path.join(root, "photos", PHOTO_IDENTITY, name)
