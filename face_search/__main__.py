"""The face search command line: build a gallery index, add, remove, query, info.

    python -m face_search build --model exports/dcbh --gallery data/synthetic/train --index IDX
        [--detector auto|mtcnn|center]
    python -m face_search add --index IDX --gallery more_photos/ [--detector ...]
    python -m face_search remove --index IDX --ids 17,18 [--identities "Jane Doe"]
    python -m face_search query --index IDX --top_k 5 [--radius 3] [--format json]
        [--detector ...] PHOTOS...
    python -m face_search info --index IDX
    python -m face_search serve --index IDX [--host 127.0.0.1] [--port 8080] [--max_upload_mb 10]
        [--max_concurrent_searches 8] [--detector ...]

Bad input stops with one ``error:`` line and exit code 2 (``common.cli.runner``); a bad photo
among many is reported and skipped, and a flag of another command (``--host`` to ``query``)
is refused rather than ignored. Inputs that give nothing to work on stop the same way: a
query or gallery folder with nothing to read (``face_search.inputs.plan``), a build in
which not one face is usable (no index of 0 faces is written), unknown gallery ids. The
work is in :mod:`face_search.api`.

``--detector`` left out means the preparation the index records for its photos (``faces``
in ``index.json``; "auto" for a new index or one without the record): ``add`` refuses
photos prepared otherwise, ``query`` and ``serve`` use a detector named otherwise with a
``warning:`` line on stderr (logged by ``face_search.searcher``).
"""

from __future__ import annotations

from absl import flags

from common.cli import checks, runner
from common.cli.tf_startup import import_tensorflow
from common.cli.runner import fail


INDEX = flags.DEFINE_string("index", None, "Index folder (build: new, empty, or an index, "
                            "replaced atomically).")
MODEL = flags.DEFINE_string("model", None, "Export folder or training run folder (build: "
                            "required; add/query: default the model the index records).")
CHECKPOINT = flags.DEFINE_enum("checkpoint", None, ["best_map", "best_loss", "last"],
                               "Slot of a run folder given as --model (default best_map).")
GALLERY = flags.DEFINE_list("gallery", [], "build/add: photo galleries (DIR/<identity>/"
                            "<photo>), photo folders, photos or pickle folders.")
KIND = flags.DEFINE_enum("kind", "exact", ["exact", "mih"], "build: exact (flat scan) or mih "
                         "(multi-index hashing, exact and sub-linear on large galleries).")
IDS = flags.DEFINE_list("ids", [], "remove: gallery ids.")
IDENTITIES = flags.DEFINE_list("identities", [], "remove: every item of these identities.")
TOP_K = flags.DEFINE_integer("top_k", 10, "query: hits per query (with --radius: at most "
                             "this many, 0 = all).", lower_bound=0)
RADIUS = flags.DEFINE_integer("radius", None, "query: every item within this Hamming "
                              "distance instead of the top k.", lower_bound=0)
FORMAT = flags.DEFINE_enum("format", "table", ["table", "json"], "query: output format.")
PROGRESS = flags.DEFINE_boolean("progress", True, "build/add/query: a progress line on "
                                "stderr every few seconds.")
HOST = flags.DEFINE_string("host", "127.0.0.1", "serve: address to listen on (anyone who can "
                           "reach it can search the gallery; on a loopback address only "
                           "requests for localhost, 127.x.y.z or [::1] are answered, so a "
                           "proxy in front must keep such a Host).")
PORT = flags.DEFINE_integer("port", 8080, "serve: port (0: any free port).", lower_bound=0,
                            upper_bound=65535)
MAX_UPLOAD_MB = flags.DEFINE_float("max_upload_mb", 10.0, "serve: largest photo upload, MB.",
                                   lower_bound=0.001, upper_bound=1024.0)
MAX_CONCURRENT_SEARCHES = flags.DEFINE_integer(
    "max_concurrent_searches", 8, "serve: searches at once (each decodes a photo: a "
    "50-megapixel one takes up to 400 MB, measured); as many more are admitted (uploading, "
    "or waiting up to 10 s for a turn), the rest are answered 503 at once, before their "
    "bodies are read.", lower_bound=1, upper_bound=256)
DETECTOR = flags.DEFINE_enum(
    "detector", None, ["auto", "mtcnn", "center"], "build/add/query/serve: face detector for "
    "photos (auto: mtcnn when installed). Default: the one the index recorded for its photos, "
    "with its crop settings (auto for a new index or one without the record); add refuses "
    "another, query and serve use it with a warning (faces cut two ways compare worse).")
# The settings each command reads: any other of this module's flags given on the command line
# is refused, so a setting meant for another command (--host to query, --ids to build) is not
# silently ignored.
COMMAND_FLAGS = {
    "build": ("index", "model", "checkpoint", "gallery", "kind", "progress", "detector"),
    "add": ("index", "model", "checkpoint", "gallery", "progress", "detector"),
    "remove": ("index", "ids", "identities"),
    "query": ("index", "model", "checkpoint", "top_k", "radius", "format", "progress",
              "detector"),
    "info": ("index",),
    "serve": ("index", "model", "checkpoint", "top_k", "host", "port", "max_upload_mb",
              "max_concurrent_searches", "detector"),
}
COMMANDS = tuple(COMMAND_FLAGS)
checks.bound_flag("top_k", checks.MAX_TOP_K, "more than any gallery this project handles")
checks.bound_flag("radius", checks.MAX_BITS, "codes are at most 1024 bits")


def _guarded(work):
    """``work()``; bad input becomes one ``error:`` line with exit 2."""
    try:
        return work()
    except (ValueError, OSError) as exc:
        known = runner.user_error(exc)
        fail(known[0] if known else str(exc))


def _check_flags_belong_to(command: str) -> None:
    """Refuse a flag of this command line that ``command`` does not read, naming its commands."""
    own = set(COMMAND_FLAGS[command])
    for name in sorted({name for names in COMMAND_FLAGS.values() for name in names} - own):
        if flags.FLAGS[name].present:
            users = [c for c, names in COMMAND_FLAGS.items() if name in names]
            fail(f"--{name} is not a setting of {command} (it is one of {', '.join(users)})")


def _need(flag, name: str) -> str:
    if not flag.value:
        fail(f"--{name} is required for this command")
    return flag.value


def build() -> None:
    from face_search import api, report
    checks.check_folder_flag("index", INDEX.value)
    result = _guarded(lambda: api.build_index(
        _need(MODEL, "model"), GALLERY.value or fail("--gallery is required"),
        _need(INDEX, "index"), KIND.value, CHECKPOINT.value or "best_map",
        progress=PROGRESS.value, preparer=DETECTOR.value))
    print("\n".join(report.gallery_lines(result, "indexed")))


def add() -> None:
    from face_search import api, report
    result = _guarded(lambda: api.add_to_index(
        _need(INDEX, "index"), GALLERY.value or fail("--gallery is required"), MODEL.value,
        CHECKPOINT.value, progress=PROGRESS.value, preparer=DETECTOR.value))
    print("\n".join(report.gallery_lines(result, "added")))


def remove() -> None:
    from face_search import api
    try:
        ids = [int(i) for i in IDS.value]
    except ValueError:
        fail(f"--ids must be integers, got {','.join(IDS.value)}")
    if not ids and not IDENTITIES.value:
        fail("give --ids and/or --identities to remove")
    removed = _guarded(lambda: api.remove_from_index(_need(INDEX, "index"), ids,
                                                     IDENTITIES.value))
    print(f"removed {removed:,} faces from {INDEX.value}")


def query(inputs: list[str]) -> None:
    from face_search import api, report
    if not inputs:
        fail("give the photos, photo folders or pickle folders to search for")
    if RADIUS.value is None and TOP_K.value < 1:
        fail("--top_k must be >= 1 (0 means 'all' only with --radius)")
    index_dir = _need(INDEX, "index")
    from face_search.inputs import plan
    _guarded(lambda: plan(inputs, gallery=False))  # a wrong path fails before the model loads

    def work():
        searcher = api.FaceSearcher(index_dir, MODEL.value, CHECKPOINT.value,
                                    preparer=DETECTOR.value)
        return searcher, searcher.search_paths(inputs, TOP_K.value, RADIUS.value,
                                               progress=PROGRESS.value)

    searcher, results = _guarded(work)
    if FORMAT.value == "json":
        print(report.query_json(results, {"index": searcher.index_dir,
                                          "num_bits": searcher.index.num_bits,
                                          "top_k": TOP_K.value, "radius": RADIUS.value}))
    else:
        print(report.query_table(results))


def info() -> None:
    import json
    from face_search import api
    print(json.dumps(_guarded(lambda: api.index_summary(_need(INDEX, "index"))), indent=2))


def serve() -> None:
    from face_search.service import server
    from face_search.service.web_api import MAX_TOP_K
    index_dir = _need(INDEX, "index")
    if not 1 <= TOP_K.value <= MAX_TOP_K:
        fail(f"--top_k must be in 1..{MAX_TOP_K} for serve, got {TOP_K.value}")
    _guarded(lambda: server.serve(index_dir, MODEL.value, CHECKPOINT.value, DETECTOR.value,
                                  HOST.value, PORT.value, int(MAX_UPLOAD_MB.value * 2**20),
                                  TOP_K.value, MAX_CONCURRENT_SEARCHES.value))


def main(argv: list[str]) -> None:
    if len(argv) < 2 or argv[1] not in COMMANDS:
        fail(f"give a command: {', '.join(COMMANDS)} (python -m face_search COMMAND --help)"
             + (f"; got {argv[1]!r}" if len(argv) > 1 else ""))
    command, rest = argv[1], argv[2:]
    _check_flags_belong_to(command)
    if command != "query" and rest:
        fail(f"unexpected arguments: {' '.join(rest)} (all settings of {command} are --flags)")
    if command in ("build", "add", "query", "serve"):  # their models run on TensorFlow
        import_tensorflow()  # once, its start-up notices filtered
    if command == "query":
        query(rest)
    else:
        {"build": build, "add": add, "remove": remove, "info": info, "serve": serve}[command]()


def run() -> None:
    """Console-script entry point (``face-search``)."""
    runner.run_main(main)


if __name__ == "__main__":
    run()
