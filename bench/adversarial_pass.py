"""An adversarial re-test of the promises in README "Safety and errors" (issue 27).

    python bench/adversarial_pass.py --out /tmp/adv/run [--classes 1,2,...]

Seven classes of attack, each tried with several different cases against the real
commands (``python -m dcbh_tf.train`` ...) or the library's readers, on tiny data (one
synthetic run of 3 identities, 12-bit codes, a 1/16-width backbone, trained once and
copied per case). Each case checks the outcome the README promises (exit code, exactly
one ``error:`` line as the last line on stderr, files left intact, no export written,
time linear in size, ...), not just that something ran. The last output is a markdown
table: class | cases tried | held | failed (the failing cases named), and each case's
details are written to ``OUT/results.json``.

Meant for a small shared machine: run it under ``nice``; it starts one command at a time
(class 6 runs a writer and readers together by design). About 15-25 minutes on 2 cores.
"""

from __future__ import annotations

import argparse
import glob
import hashlib
import json
import os
import pickle
import random
import shutil
import signal
import struct
import subprocess
import sys
import threading
import time
from typing import Any, Callable

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PY = sys.executable
MERSENNE = 2 ** 61 - 1  # CPython hashes ints (and floats) modulo this prime
TINY = ["--dataset", "synthetic", "--synthetic_identities", "3",
        "--synthetic_train_per_identity", "4", "--synthetic_test_per_identity", "2",
        "--batch_size", "8", "--width_multiplier", "0.0625", "--num_bits", "12",
        "--eval_every", "0", "--log_every_steps", "0"]
CLASS_NAMES = {
    1: "1 diverged state never kept as good",
    2: "2 export never takes a user's file",
    3: "3 hostile pickles cost linear time",
    4: "4 silent wrong inputs",
    5: "5 damaged files: one clear error",
    6: "6 concurrent index readers",
    7: "7 late signals",
}


# ----------------------------------------------------------------------------- plumbing
class Results:
    """Per class: a list of (case, held, detail)."""

    def __init__(self) -> None:
        self.cases: dict[int, list[tuple[str, bool, str]]] = {}

    def add(self, cls: int, case: str, held: bool, detail: str = "") -> None:
        self.cases.setdefault(cls, []).append((case, bool(held), detail))
        mark = "held" if held else "FAILED"
        print(f"  [{cls}] {case}: {mark}{'  -- ' + detail if detail else ''}", flush=True)

    def table(self) -> str:
        lines = ["| class | cases tried | held | failed |", "|---|---|---|---|"]
        for cls in sorted(self.cases):
            cases = self.cases[cls]
            failed = [c for c, ok, _ in cases if not ok]
            named = f"{len(failed)}: " + ", ".join(failed) if failed else "0"
            lines.append(f"| {CLASS_NAMES[cls]} | {len(cases)} | "
                         f"{len(cases) - len(failed)} | {named} |")
        return "\n".join(lines)


def env() -> dict[str, str]:
    e = dict(os.environ)
    e["PYTHONPATH"] = ROOT + os.pathsep + e.get("PYTHONPATH", "")
    e.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    e.setdefault("OMP_NUM_THREADS", "1")
    e.pop("FACE_HASHING_TRACEBACK", None)
    return e


def run(args: list[Any], timeout: float = 300, **kw: Any) -> tuple[int, str, str]:
    """Run ``python ARGS`` from the repository root; (exit code, stdout, stderr)."""
    try:
        p = subprocess.run([PY, *args], cwd=ROOT, env=env(), capture_output=True,
                           timeout=timeout, **kw)
    except subprocess.TimeoutExpired as exc:
        return -999, _text(exc.stdout), _text(exc.stderr) + "\n[timed out]"
    return p.returncode, _text(p.stdout), _text(p.stderr)


def _text(raw: Any) -> str:
    if raw is None:
        return ""
    return raw.decode("utf-8", "replace") if isinstance(raw, bytes) else raw


def one_error(rc: int, err: str, codes: tuple[int, ...] = (1, 2),
              names: tuple[str, ...] = ()) -> tuple[bool, str]:
    """The README's error contract: exit code in ``codes``, exactly one ``error:`` line,
    the last line on stderr, no traceback, no internal error, naming one of ``names``."""
    lines = [ln for ln in err.splitlines() if ln.strip()]
    errors = [ln for ln in lines if ln.startswith("error:")]
    last = lines[-1] if lines else ""
    why = []
    if rc not in codes:
        why.append(f"exit {rc} (expected {codes})")
    if len(errors) != 1:
        why.append(f"{len(errors)} error lines")
    elif last != errors[0]:
        why.append(f"last stderr line is not the error line: {last[:120]!r}")
    if "Traceback" in err:
        why.append("traceback on stderr")
    if any("internal error" in e for e in errors):
        why.append("internal error")
    if names and errors and not any(n in errors[0] for n in names):
        why.append(f"error line does not name {names}")
    shown = errors[0][:200] if errors else last[:200]
    return not why, ("; ".join(why) + " | " if why else "") + shown


def train_args(model_dir: str, data_dir: str, *extra: str, method: str = "dcbh",
               epochs: int = 2) -> list[str]:
    return ["-m", f"{method}_tf.train", *TINY, "--data_dir", data_dir, "--model_dir", model_dir,
            "--epochs", str(epochs), *extra]


def copy_run(base: str, dst: str) -> str:
    if os.path.exists(dst):
        shutil.rmtree(dst)
    shutil.copytree(base, dst, symlinks=True)
    lock = os.path.join(dst, ".lock")
    if os.path.exists(lock):
        os.remove(lock)
    return dst


def snapshot(folder: str) -> dict[str, str]:
    """relative path -> sha256 of every file under ``folder`` (links as 'link:target')."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            path = os.path.join(dirpath, name)
            rel = os.path.relpath(path, folder)
            if os.path.islink(path):
                out[rel] = "link:" + os.readlink(path)
            else:
                with open(path, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
    return out


def slot_dirs(model_dir: str) -> dict[str, str]:
    with open(os.path.join(model_dir, "checkpoints", "index.json")) as f:
        index = json.load(f)
    return {name: rec["dir"] for name, rec in index.get("slots", {}).items()}


_TF = None


def tf_module() -> Any:
    global _TF
    if _TF is None:
        os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
        import tensorflow as tf  # noqa: PLC0415 (only classes 1 and 7 need it)
        _TF = tf
    return _TF


def checkpoint_tensors(prefix: str) -> dict[str, np.ndarray]:
    tf = tf_module()
    reader = tf.train.load_checkpoint(prefix)
    return {k: reader.get_tensor(k) for k in reader.get_variable_to_shape_map()}


def rewrite_checkpoint(prefix: str, pick: Callable[[str, np.ndarray], bool], value: float,
                       single: bool = False) -> list[str]:
    """Rewrite the TensorFlow checkpoint ``prefix`` with every float tensor whose key
    ``pick`` accepts set to ``value`` (NaN, inf, 1e30), or only its first element with
    ``single``; the object graph and every other tensor are kept byte for byte."""
    tf = tf_module()
    tensors = checkpoint_tensors(prefix)
    changed, names, values = [], [], []
    for key in sorted(tensors):
        t = tensors[key]
        if isinstance(t, np.ndarray) and t.dtype.kind == "f" and t.size and pick(key, t):
            if single:
                t = t.copy()
                t.flat[0] = value
            else:
                t = np.full_like(t, value)
            changed.append(key)
        names.append(key)
        values.append(tf.constant(t))
    tmp = prefix + ".rewrite"
    tf.raw_ops.SaveV2(prefix=tmp, tensor_names=names, shape_and_slices=[""] * len(names),
                      tensors=values)
    for suffix in (".index", ".data-00000-of-00001"):
        os.replace(tmp + suffix, prefix + suffix)
    return changed


def finite_and_sane(model_dir: str, bound: float = 1e15) -> tuple[bool, str]:
    """Whether every state the run names holds finite tensors, kernels within ``bound``."""
    try:
        slots = slot_dirs(model_dir)
    except OSError:
        return True, "no checkpoint index (nothing saved)"
    for slot, state in slots.items():
        prefix = os.path.join(model_dir, "checkpoints", state, "ckpt")
        for key, t in checkpoint_tensors(prefix).items():
            if isinstance(t, np.ndarray) and t.dtype.kind == "f" and t.size:
                if not np.all(np.isfinite(t)):
                    return False, f"slot {slot} ({state}) holds non-finite {key}"
                if key.startswith("optimizer/_trainable_variables/") and t.ndim >= 2 \
                        and np.abs(t).max() > bound:
                    return False, f"slot {slot} ({state}) holds {key} of {np.abs(t).max():.3g}"
    return True, f"slots {sorted(slots)} finite"


# ----------------------------------------------------------------------------- class 1
def class_1(out: str, base: str, data: str, res: Results) -> None:
    for method, lr in (("dcbh", "1e30"), ("ddch", "1e30"), ("ddch", "1e8"), ("dcbh", "1e4")):
        case = f"train_{method}_lr{lr}"
        run_dir = os.path.join(out, "c1", case)
        shutil.rmtree(run_dir, ignore_errors=True)
        rc, _, err = run(train_args(run_dir, data, "--learning_rate", lr,
                                    "--max_steps_per_epoch", "1", method=method, epochs=3))
        sane, why = finite_and_sane(run_dir)
        if rc == 0:
            res.add(1, case, sane, f"exit 0; {why}")
        else:
            ok, detail = one_error(rc, err, codes=(1,))
            res.add(1, case, ok and sane, f"{detail}; {why}")
    for lr in ("nan", "inf", "-1"):
        rc, _, err = run(train_args(os.path.join(out, "c1", "flag"), data, "--learning_rate", lr))
        ok, detail = one_error(rc, err, codes=(2,), names=("learning_rate",))
        res.add(1, f"flag_learning_rate_{lr}", ok, detail)

    def corrupt(name: str, slot: str, pick: Callable[[str, np.ndarray], bool], value: float,
                single: bool = False) -> str:
        run_dir = copy_run(base, os.path.join(out, "c1", name))
        state = slot_dirs(run_dir)[slot]
        changed = rewrite_checkpoint(os.path.join(run_dir, "checkpoints", state, "ckpt"),
                                     pick, value, single)
        assert changed, f"{name}: no tensor matched"
        return run_dir

    def weight(key: str, t: np.ndarray) -> bool:  # the model's weights (tracked by Adam)
        return key.startswith("optimizer/_trainable_variables/") and t.ndim >= 2

    def bias(key: str, t: np.ndarray) -> bool:
        return key.startswith("optimizer/_trainable_variables/") and t.ndim == 1

    cases = [
        ("nan_kernels", weight, np.nan, False),
        ("one_nan_weight", weight, np.nan, True),
        ("inf_moving_variance", lambda k, t: "moving_variance" in k, np.inf, False),
        ("huge_1e30_kernels", weight, 1e30, False),
        ("neg_inf_biases", bias, -np.inf, False),
    ]
    for name, pick, value, single in cases:
        run_dir = corrupt(name, "best_map", pick, value, single)
        before = snapshot(run_dir)
        export_dir = os.path.join(out, "c1", name + "_export")
        rc, _, err = run(["-m", "dcbh_tf.export", "--model_dir", run_dir,
                          "--export_dir", export_dir])
        ok, detail = one_error(rc, err)
        leftovers = [p for p in os.listdir(os.path.dirname(export_dir))
                     if os.path.basename(export_dir) in p]
        intact = snapshot(run_dir) == before
        res.add(1, f"{name}_export", ok and not leftovers and intact,
                f"{detail}; export leftovers {leftovers}; run intact {intact}")
        if name in ("nan_kernels", "huge_1e30_kernels", "inf_moving_variance"):
            rc, _, err = run(["-m", "dcbh_tf.evaluate", "--model_dir", run_dir])
            res.add(1, f"{name}_evaluate", *one_error(rc, err))
    # the full training state "last" with NaN Adam moments / statistics: resume refused
    for name, pick in (("nan_adam_moments", lambda k, t: k.startswith("optimizer/_variables/")),
                       ("nan_moving_mean", lambda k, t: "moving_mean" in k)):
        run_dir = corrupt(name, "last", pick, np.nan)
        before = slot_dirs(run_dir)
        rc, _, err = run(train_args(run_dir, data, epochs=3))
        ok, detail = one_error(rc, err)
        after = slot_dirs(run_dir)
        res.add(1, f"{name}_resume", ok and after == before,
                f"{detail}; slots unchanged {after == before}")
    # a run_config.json whose normalisation is not finite
    for name, value in (("nan_normalization_std", float("nan")),
                        ("inf_normalization_mean", float("inf"))):
        run_dir = copy_run(base, os.path.join(out, "c1", name))
        cfg_path = os.path.join(run_dir, "run_config.json")
        with open(cfg_path) as f:
            cfg = json.load(f)
        cfg["normalization"]["std" if "std" in name else "mean"] = value
        with open(cfg_path, "w") as f:
            json.dump(cfg, f)
        export_dir = os.path.join(out, "c1", name + "_export")
        rc, _, err = run(["-m", "dcbh_tf.export", "--model_dir", run_dir,
                          "--export_dir", export_dir])
        ok, detail = one_error(rc, err)
        res.add(1, f"{name}_export", ok and not os.path.exists(export_dir), detail)


# ----------------------------------------------------------------------------- class 2
class Writer(threading.Thread):
    """Writes ``user_NNNNN.txt`` into ``folder`` every ``period`` s once ``start_when()``."""

    def __init__(self, folder: str, start_when: Callable[[], bool], period: float = 0.004):
        super().__init__(daemon=True)
        self.folder, self.start_when, self.period = folder, start_when, period
        self.written: dict[str, bytes] = {}
        self.stop = threading.Event()
        self.errors = 0

    def run(self) -> None:
        while not self.stop.is_set() and not self.start_when():
            time.sleep(0.002)
        n = 0
        while not self.stop.is_set():
            name = f"user_{n:05d}.txt"
            content = f"user data {n} {time.time()}\n".encode()
            try:
                with open(os.path.join(self.folder, name), "wb") as f:
                    f.write(content)
                self.written[name] = content
            except OSError:
                self.errors += 1  # the folder is gone for an instant (a swap): the user retries
            n += 1
            time.sleep(self.period)


def user_files_survive(folder: str, written: dict[str, bytes]) -> tuple[bool, str]:
    """Every file the user wrote is in ``folder`` (or a kept-aside copy beside it)."""
    parent, name = os.path.split(folder.rstrip("/"))
    kept = sorted(glob.glob(os.path.join(parent, f"*{name}.kept-*")))
    missing, moved = [], 0
    for fname, content in written.items():
        for place in [folder, *kept]:
            path = os.path.join(place, fname)
            if os.path.isfile(path) and open(path, "rb").read() == content:
                moved += place != folder
                break
        else:
            missing.append(fname)
    detail = f"{len(written)} written, {len(missing)} missing, {moved} moved to {kept}"
    return not missing, detail + (f" e.g. {missing[:3]}" if missing else "")


def export_cmd(run_dir: str, export_dir: str) -> list[str]:
    return ["-m", "dcbh_tf.export", "--model_dir", run_dir, "--export_dir", export_dir]


def export_ok(export_dir: str) -> bool:
    info = os.path.join(export_dir, "export_info.json")
    return os.path.isfile(os.path.join(export_dir, "saved_model.pb")) and os.path.isfile(info)


def class_2(out: str, base: str, res: Results) -> None:
    c2 = os.path.join(out, "c2")
    os.makedirs(c2, exist_ok=True)
    prev = os.path.join(c2, "previous_export")
    if not export_ok(prev):
        shutil.rmtree(prev, ignore_errors=True)
        rc, _, err = run(export_cmd(base, prev))
        if rc != 0:
            res.add(2, "setup_previous_export", False, err[-300:])
            return

    # concurrent writers into an empty (or previous-export) target, at several instants
    def concurrent(case: str, target_is_previous: bool, when: str, delay: float = 0.0) -> None:
        target = os.path.join(c2, case)
        shutil.rmtree(target, ignore_errors=True)
        for old in glob.glob(os.path.join(c2, f"*{case}.*")):
            shutil.rmtree(old, ignore_errors=True)
        if target_is_previous:
            shutil.copytree(prev, target)
        else:
            os.makedirs(target)
        t0 = [0.0]
        tmp_glob = os.path.join(c2, f".{case}.tmp-*")

        def start_when() -> bool:
            if when == "delay":
                return t0[0] > 0 and time.time() - t0[0] >= delay
            # "end": the export's temporary folder holds its info file (written, not swapped)
            return any(os.path.exists(os.path.join(p, "export_info.json"))
                       for p in glob.glob(tmp_glob))

        writer = Writer(target, start_when, period=0.001 if when == "end" else 0.004)
        writer.start()
        t0[0] = time.time()
        rc, _, err = run(export_cmd(base, target))
        time.sleep(0.3)
        writer.stop.set()
        writer.join()
        survive, detail = user_files_survive(target, writer.written)
        if not writer.written:  # the export ended before the writer's instant came
            detail += " (NOT EXERCISED: the export finished before the writer started)"
        if rc == 0:
            outcome = export_ok(target) or any(export_ok(p) for p in
                                               glob.glob(os.path.join(c2, f"*{case}*")))
            res.add(2, case, survive and outcome, f"exit 0; {detail}")
        else:
            ok, edetail = one_error(rc, err)
            res.add(2, case, survive and ok, f"{edetail}; {detail}")

    concurrent("empty_writer_from_start", False, "delay", 0.0)
    concurrent("empty_writer_after_2s", False, "delay", 2.0)
    concurrent("empty_writer_after_4.5s", False, "delay", 4.5)
    concurrent("empty_writer_at_swap", False, "end")
    concurrent("previous_export_writer_at_swap", True, "end")
    concurrent("previous_export_writer_after_4s", True, "delay", 4.0)

    # static user content: refused before anything is written, all intact
    def static(case: str, build: Callable[[str], None], protect: list[str]) -> None:
        target = os.path.join(c2, case)
        for p in [target, *glob.glob(os.path.join(c2, f"*{case}.*")),
                  os.path.join(c2, case + "_user")]:
            if os.path.islink(p) or os.path.isfile(p):
                os.remove(p)
            else:
                shutil.rmtree(p, ignore_errors=True)
        build(target)
        before = {p: snapshot(p) if os.path.isdir(p) else open(p, "rb").read() for p in protect}
        rc, _, err = run(export_cmd(base, target))
        after = {p: snapshot(p) if os.path.isdir(p) else
                 (open(p, "rb").read() if os.path.exists(p) else None) for p in protect}
        ok, detail = one_error(rc, err, codes=(2,))
        res.add(2, case, ok and before == after, f"{detail}; user content intact "
                f"{before == after}")

    def user_dir(path: str) -> str:
        os.makedirs(path, exist_ok=True)
        with open(os.path.join(path, "notes.txt"), "w") as f:
            f.write("precious\n")
        return path

    static("folder_with_user_file", user_dir, [os.path.join(c2, "folder_with_user_file")])

    def symlink_inside(target: str) -> None:
        os.makedirs(target)
        user_dir(target + "_user")
        os.symlink(target + "_user", os.path.join(target, "variables"))

    static("empty_but_symlinked_variables", symlink_inside,
           [os.path.join(c2, "empty_but_symlinked_variables_user")])

    def prev_with_symlink(target: str) -> None:
        shutil.copytree(prev, target)
        user_dir(target + "_user")
        shutil.rmtree(os.path.join(target, "assets"), ignore_errors=True)
        os.symlink(target + "_user", os.path.join(target, "assets"))

    static("previous_export_assets_symlink", prev_with_symlink,
           [os.path.join(c2, "previous_export_assets_symlink_user")])

    def prev_with_file_in_variables(target: str) -> None:
        shutil.copytree(prev, target)
        with open(os.path.join(target, "variables", "my_notes.txt"), "w") as f:
            f.write("precious\n")

    static("previous_export_user_file_in_variables", prev_with_file_in_variables,
           [os.path.join(c2, "previous_export_user_file_in_variables", "variables",
                         "my_notes.txt")])

    def target_symlink(target: str) -> None:
        user_dir(target + "_user")
        os.symlink(target + "_user", target)

    static("target_is_symlink_to_user_dir", target_symlink,
           [os.path.join(c2, "target_is_symlink_to_user_dir_user")])

    def dangling_file_link(target: str) -> None:
        os.makedirs(target)
        os.symlink("/etc/hostname", os.path.join(target, "export_info.json"))

    static("empty_with_symlinked_export_info", dangling_file_link, ["/etc/hostname"])


# ----------------------------------------------------------------------------- class 3
def _int(v: int) -> bytes:
    if 0 <= v < 2 ** 31:
        return pickle.BININT + struct.pack("<i", v)
    raw = v.to_bytes((v.bit_length() + 8) // 8, "little", signed=True)
    return pickle.LONG1 + bytes([len(raw)]) + raw if len(raw) < 256 else \
        pickle.LONG4 + struct.pack("<i", len(raw)) + raw


def _float(v: float) -> bytes:
    return pickle.BINFLOAT + struct.pack(">d", v)


def _x_rows(n: int = 2) -> bytes:
    """A genuine (n, 3072) float32 array, protocol 2, without PROTO/STOP."""
    x = np.random.default_rng(0).integers(0, 256, (n, 3072)).astype(np.float32)
    return pickle.dumps(x, protocol=2)[2:-1]


def _pair(y: bytes, proto: int = 2) -> bytes:
    """(x, <y opcodes>) as a whole pickle."""
    return pickle.PROTO + bytes([proto]) + _x_rows() + y + pickle.TUPLE2 + pickle.STOP


def harmless(size: int) -> bytes:
    items = pickle.MARK + _float(0.5) + _int(7) + pickle.TUPLE
    return pickle.PROTO + b"\x02" + pickle.MARK + items * (size // len(items)) + \
        pickle.LIST + pickle.STOP


def _list_of(item: Callable[[int], bytes], size: int) -> bytes:
    body, n, parts = 0, 0, []
    while body < size:
        chunk = item(n)
        parts.append(chunk)
        body += len(chunk)
        n += 1
    return pickle.MARK + b"".join(parts) + pickle.LIST


def p_colliding_int_labels(size: int) -> bytes:
    return _pair(_list_of(lambda n: _int((n + 1) * MERSENNE), size))


def p_colliding_float_tuple_labels(size: int) -> bytes:
    floats = [2.0 ** (61 * j) for j in range(-17, 17)]
    return _pair(_list_of(lambda n: pickle.MARK + _float(floats[n % 34])
                          + _int(MERSENNE * (1 + n // 34)) + pickle.TUPLE, size))


def p_minus1_minus2_set_after_array(size: int) -> bytes:
    keys = _list_of(lambda n: _int(-1 - n % 2) + pickle.NONE, size)[1:-1]
    return _pair(pickle.EMPTY_SET + pickle.MARK + keys + pickle.ADDITEMS, proto=4)


def p_frozenset_global_after_keys(size: int) -> bytes:
    """Colliding keys pushed first, then builtins.frozenset by STACK_GLOBAL and REDUCE."""
    keys = _list_of(lambda n: _int((n + 1) * MERSENNE), size)
    call = (pickle.SHORT_BINUNICODE + b"\x08builtins" + pickle.SHORT_BINUNICODE + b"\x09frozenset"
            + pickle.STACK_GLOBAL)
    return pickle.PROTO + b"\x04" + keys + call + pickle.STOP


def p_dict_deep_in_labels(size: int) -> bytes:
    """y = [[..., [{colliding keys}]]]: the dict opcodes sit below list nesting."""
    keys = _list_of(lambda n: _int((n + 1) * MERSENNE) + pickle.NONE, size)[1:-1]
    return _pair(pickle.EMPTY_LIST * 50 + pickle.EMPTY_DICT + pickle.MARK + keys
                 + pickle.SETITEMS + pickle.APPEND * 50)


def p_deep_nested_lists(size: int) -> bytes:
    depth = size // 2
    return _pair(pickle.EMPTY_LIST * depth + pickle.APPEND * (depth - 1))


def p_deep_mark_tuples(size: int) -> bytes:
    depth = size // 2
    return _pair(pickle.MARK * depth + pickle.TUPLE * depth)


def p_huge_declared_lengths(size: int) -> bytes:
    """A harmless list of ``size``, then BINUNICODE8 declaring 2**62 bytes."""
    pad = harmless(size)[2:-1]
    return pickle.PROTO + b"\x04" + pad + pickle.POP + b"\x8d" + struct.pack("<Q", 2 ** 62) \
        + b"abc" + pickle.STOP


def p_huge_declared_array(size: int) -> bytes:
    """Padding, then _reconstruct + BUILD of a (2**31, 3072) float32 array from 8 bytes."""
    pad = harmless(size)[2:-1]
    arr = (b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\n" + _int(0)
           + pickle.TUPLE1 + pickle.SHORT_BINBYTES + b"\x01b" + pickle.TUPLE3 + pickle.REDUCE
           + pickle.MARK + _int(1) + _int(2 ** 31) + _int(3072) + pickle.TUPLE2
           + b"cnumpy\ndtype\n" + pickle.SHORT_BINUNICODE + b"\x02f4" + pickle.TUPLE1
           + pickle.REDUCE + pickle.NEWFALSE + pickle.SHORT_BINBYTES + b"\x08" + b"\0" * 8
           + pickle.TUPLE + pickle.BUILD)
    return pickle.PROTO + b"\x02" + pad + pickle.POP + arr + pickle.NONE + pickle.TUPLE2 \
        + pickle.STOP


def p_memo_bomb_buffers(size: int) -> bytes:
    """One 64 KiB buffer stored once, then ndarray(...) on it again and again."""
    buf = pickle.BINBYTES + struct.pack("<I", 65536) + b"\x01" * 65536 + pickle.BINPUT + b"\x01"
    call = (b"cnumpy\nndarray\n" + pickle.MARK + pickle.MARK + _int(16384) + pickle.TUPLE
            + pickle.SHORT_BINUNICODE + b"\x02f4" + pickle.BINGET + b"\x01" + pickle.TUPLE
            + pickle.REDUCE + pickle.POP)
    return pickle.PROTO + b"\x02" + buf + pickle.POP + call * (size // len(call)) \
        + pickle.NONE + pickle.STOP


def p_memo_refs_as_labels(size: int) -> bytes:
    """y = a list of a million references to one stored label (memo reuse)."""
    return _pair(_int(1) + pickle.BINPUT + b"\x02" + pickle.POP + pickle.MARK
                 + (pickle.BINGET + b"\x02") * (size // 2) + pickle.LIST)


def p_long_global_name(size: int) -> bytes:
    return pickle.PROTO + b"\x02" + b"c" + b"m" * size + b"\nname\n" + pickle.STOP


def p_frombuffer_long_order(size: int) -> bytes:
    """numpy _frombuffer(b'', 'f4', (0,), order=<size chars>): numpy's message holds it."""
    return (pickle.PROTO + b"\x02" + b"cnumpy.core.numeric\n_frombuffer\n" + pickle.MARK
            + pickle.SHORT_BINBYTES + b"\x00" + pickle.SHORT_BINUNICODE + b"\x02f4"
            + pickle.MARK + _int(0) + pickle.TUPLE + pickle.BINUNICODE
            + struct.pack("<I", size) + b"Z" * size + pickle.TUPLE + pickle.REDUCE
            + pickle.STOP)


def p_protocol0_long_floats(size: int) -> bytes:
    item = b"F0." + b"1" * 10000 + b"\n"
    return _pair(pickle.MARK + item * (size // len(item)) + pickle.LIST)


def p_protocol0_hex_long_label(size: int) -> bytes:
    return _pair(pickle.MARK + b"L0x" + b"f" * size + b"L\n" + pickle.LIST)


PICKLES: dict[str, Callable[[int], bytes]] = {
    name[2:]: fn for name, fn in globals().items() if name.startswith("p_")}


def read_child(path: str, base_path: str) -> None:
    """Child mode: time the reader on ``path`` and on a harmless file; print JSON."""
    sys.path.insert(0, ROOT)
    from common.data import load_pickle_file  # noqa: PLC0415
    from common.data.errors import DataFormatError  # noqa: PLC0415
    start = time.perf_counter()
    try:
        from common.data.safe_pickle import restricted_loads  # noqa: PLC0415
        restricted_loads(open(base_path, "rb").read())
    except Exception:  # noqa: BLE001
        pass
    base_s = time.perf_counter() - start
    start = time.perf_counter()
    outcome, message = "loaded", ""
    try:
        load_pickle_file(path)
    except DataFormatError as exc:
        outcome, message = "refused", str(exc)
    except BaseException as exc:  # noqa: BLE001 (what escapes the reader is the finding)
        outcome, message = f"crash {type(exc).__name__}", str(exc)[:300]
    seconds = time.perf_counter() - start
    print(json.dumps({"seconds": seconds, "base_seconds": base_s, "outcome": outcome,
                      "message_chars": len(message), "message": message[:160]}))


def class_3(out: str, res: Results) -> None:
    c3 = os.path.join(out, "c3")
    os.makedirs(c3, exist_ok=True)
    sizes = {"100KB": 100_000, "1MB": 1_000_000, "2MB": 2_000_000}
    for label, size in sizes.items():
        with open(os.path.join(c3, f"harmless_{label}.pkl"), "wb") as f:
            f.write(harmless(size))
    for name, make in PICKLES.items():
        rows, fail = [], []
        for label, size in sizes.items():
            path = os.path.join(c3, f"{name}_{label}.pkl")
            with open(path, "wb") as f:
                f.write(make(size))
            rc, stdout, err = run([os.path.abspath(__file__), "--_read", path,
                                   os.path.join(c3, f"harmless_{label}.pkl")], timeout=60)
            if rc != 0:
                fail.append(f"{label}: child exit {rc} {err[-200:]}")
                continue
            r = json.loads(stdout.strip().splitlines()[-1])
            rows.append((label, r))
            if r["outcome"].startswith("crash"):
                fail.append(f"{label}: {r['outcome']}: {r['message'][:100]}")
            if r["seconds"] > 5.0:
                fail.append(f"{label}: {r['seconds']:.1f} s")
            if r["seconds"] > 0.5 + 3 * r["base_seconds"]:
                fail.append(f"{label}: {r['seconds']:.2f} s > 0.5 s + 3 x list "
                            f"{r['base_seconds']:.2f} s")
            if r["message_chars"] > 2000:
                fail.append(f"{label}: error message of {r['message_chars']} chars")
        times = {label: r["seconds"] for label, r in rows}
        if "1MB" in times and "2MB" in times and times["1MB"] > 0.2 \
                and times["2MB"] > 3.5 * times["1MB"]:
            fail.append(f"superlinear: 1MB {times['1MB']:.2f} s, 2MB {times['2MB']:.2f} s")
        shown = ", ".join(f"{lb} {r['outcome']} {r['seconds']:.2f}s" for lb, r in rows)
        msg = rows[-1][1]["message"][:90] if rows else ""
        res.add(3, name, not fail, "; ".join(fail) or f"{shown} | {msg}")


# ----------------------------------------------------------------------------- class 4
def _write_split(folder: str, x: np.ndarray, y: Any, name: str = "part_000.pkl") -> str:
    os.makedirs(folder, exist_ok=True)
    path = os.path.join(folder, name)
    with open(path, "wb") as f:
        pickle.dump((x, y), f, protocol=2)
    return path


def class_4(out: str, data: str, res: Results) -> None:
    import warnings  # noqa: PLC0415
    sys.path.insert(0, ROOT)
    from common.data import load_pickle_folder  # noqa: PLC0415
    from common.data.errors import DataFormatError, DataFormatWarning  # noqa: PLC0415
    c4 = os.path.join(out, "c4")
    shutil.rmtree(c4, ignore_errors=True)
    rng = np.random.default_rng(1)
    x = rng.integers(0, 256, (4, 3072)).astype(np.float32)
    good_y = np.array([0, 1, 2, 1], np.int64)
    labels = {
        "label_1e300": np.array([0, 1, 1e300, 2], np.float64),
        "label_nan": np.array([0, np.nan, 1, 2]),
        "label_inf": np.array([0, np.inf, 1, 2]),
        "label_minus1": np.array([0, -1, 1, 2], np.int64),
        "label_minus1_int8": np.array([0, -1, 1, 2], np.int8),
        "label_uint64_2p64m5": np.array([0, 2 ** 64 - 5, 1, 2], np.uint64),
        "label_fraction": np.array([0, 0.5, 1, 2]),
        "label_float32_fraction": np.array([0, 1.5, 1, 2], np.float32),
        "label_list_fraction": [0, 1, 2.25, 1],
        "label_list_bigint": [0, 1, 2 ** 70, 1],
        "label_complex": np.array([0, 1j, 1, 2]),
        "label_bool": np.array([True, False, True, False]),
        "label_float16_2049": np.array([0, 2049.0, 1, 2], np.float16),
    }
    for case, y in labels.items():
        folder = os.path.join(c4, case)
        path = _write_split(folder, x, y)
        try:
            load_pickle_folder(folder)
            ok, detail = case == "label_float16_2049", "loaded"
        except DataFormatError as exc:
            ok, detail = path in str(exc), str(exc)[:160]
        except Exception as exc:  # noqa: BLE001
            ok, detail = False, f"crash {type(exc).__name__}: {exc}"
        if case == "label_bool":  # bools are 0/1: refusing or reading as 0/1 are both sound
            ok = detail == "loaded" or "bool" in detail
        res.add(4, case, ok, detail)
    pixels = {
        "pixels_0_1": (rng.random((4, 3072)), "scaled"),
        "pixels_minus1_1": (rng.random((4, 3072)) * 2 - 1, "scaled"),
        "pixels_0_1_float16": (rng.random((4, 3072)).astype(np.float16), "scaled"),
        "pixels_0_20_narrow": (rng.integers(0, 20, (4, 3072)).astype(np.float32), "warn"),
        "pixels_0_1_uint8_binary": (rng.integers(0, 2, (4, 3072)).astype(np.uint8), "either"),
        "pixels_0_2_spread": (rng.random((4, 3072)) * 2, "warn"),
    }
    for case, (px, expect) in pixels.items():
        folder = os.path.join(c4, case)
        path = _write_split(folder, px, good_y)
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                load_pickle_folder(folder)
                outcome = "loaded"
                detail = "; ".join(str(w.message)[:120] for w in caught
                                   if issubclass(w.category, DataFormatWarning))
            except DataFormatError as exc:
                outcome, detail = "refused", str(exc)[:160]
            except Exception as exc:  # noqa: BLE001
                outcome, detail = "crash", f"{type(exc).__name__}: {exc}"
        named = folder in detail or path in detail
        warned = outcome == "loaded" and bool(detail) and named
        if expect == "scaled":
            ok = outcome == "refused" and "scaled" in detail and named
        elif expect == "warn":
            ok = warned or (outcome == "refused" and named)
        else:
            ok = warned or (outcome == "refused" and named)
        res.add(4, case, ok, f"{outcome}: {detail or 'no warning'}")
    # the command line: refused before TensorFlow with one line naming the file / folder
    for case, y, px in (("cli_train_label_nan", np.array([0, np.nan, 1, 2]), x),
                        ("cli_train_label_uint64", np.array([0, 2 ** 64 - 5, 1, 2], np.uint64), x),
                        ("cli_train_pixels_0_1", good_y, rng.random((4, 3072)))):
        split = os.path.join(c4, case)
        path = _write_split(os.path.join(split, "train"), px, y)
        _write_split(os.path.join(split, "test"), x[:2], good_y[:2])
        start = time.time()
        rc, _, err = run(["-m", "dcbh_tf.train", *TINY[8:], "--dataset", "folder",
                          "--train_dir", os.path.join(split, "train"),
                          "--test_dir", os.path.join(split, "test"),
                          "--model_dir", os.path.join(split, "run"), "--epochs", "1"])
        ok, detail = one_error(rc, err, codes=(2,),
                               names=(path, os.path.join(split, "train")))
        res.add(4, case, ok, f"{detail} ({time.time() - start:.1f} s)")


# ----------------------------------------------------------------------------- class 5
def class_5(out: str, base: str, data: str, res: Results) -> None:
    c5 = os.path.join(out, "c5")
    os.makedirs(c5, exist_ok=True)

    def damaged_run(case: str, rel: str, content: bytes | Callable[[bytes], bytes],
                    expect: str) -> None:
        """expect 'error': one error naming ``rel``; 'rebuild': exit 0, damaged file kept."""
        run_dir = copy_run(base, os.path.join(c5, case))
        path = os.path.join(run_dir, rel)
        raw = open(path, "rb").read()
        damaged = content(raw) if callable(content) else content
        with open(path, "wb") as f:
            f.write(damaged)
        states = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
        rc, _, err = run(["-m", "dcbh_tf.evaluate", "--model_dir", run_dir])
        if expect == "error":
            ok, detail = one_error(rc, err, names=(os.path.basename(rel),))
        else:  # evaluate reads the rebuilt index (writing nothing); training writes it
            states_after = [s for s in states if os.path.exists(
                os.path.join(run_dir, "checkpoints", s))]
            ok = rc == 0 and states_after == states and "error:" not in err \
                and "Traceback" not in err
            detail = f"evaluate exit {rc}; states intact {states_after == states}"
            if expect == "rebuild+train":
                rc, _, err = run(train_args(run_dir, data, epochs=3))
                kept = glob.glob(path + ".damaged-*")
                kept_same = bool(kept) and open(kept[0], "rb").read() == damaged
                epochs = slot_dirs(run_dir).get("last")
                ok = ok and rc == 0 and kept_same
                detail += f"; resumed training exit {rc}, damaged file kept intact " \
                          f"{kept_same}, last state {epochs}"
        res.add(5, case, ok, detail)

    damaged_run("run_config_deep_lists", "run_config.json", b"[" * 100000, "error")
    damaged_run("run_config_deep_dicts", "run_config.json", b'{"a":' * 60000, "error")
    damaged_run("run_config_truncated", "run_config.json", lambda r: r[:len(r) // 2], "error")
    damaged_run("run_config_wrong_types", "run_config.json",
                lambda r: r.replace(b'"num_bits": 12', b'"num_bits": "12"'), "error")
    damaged_run("run_config_invalid_utf8", "run_config.json",
                lambda r: r.replace(b"synthetic", b"synth\xff\xfetic", 1), "error")
    damaged_run("ckpt_index_deep_lists", "checkpoints/index.json", b"[" * 100000, "rebuild")
    damaged_run("ckpt_index_truncated", "checkpoints/index.json",
                lambda r: r[:len(r) // 3], "rebuild+train")
    damaged_run("ckpt_index_wrong_dir_type", "checkpoints/index.json",
                lambda r: r.replace(b'"dir": "e', b'"dir": ["e', 1).replace(
                    b'",\n      "epoch"', b'"],\n      "epoch"', 1), "rebuild")
    damaged_run("ckpt_index_epoch_string", "checkpoints/index.json",
                lambda r: r.replace(b'"epoch": 2', b'"epoch": "2"'), "rebuild")
    damaged_run("ckpt_index_dir_escapes", "checkpoints/index.json",
                lambda r: r.replace(b'"dir": "e000002', b'"dir": "../../c5/e000002'), "rebuild")

    # a truncated checkpoint data file: one error line (damaged checkpoint)
    run_dir = copy_run(base, os.path.join(c5, "ckpt_data_truncated"))
    state = slot_dirs(run_dir)["best_map"]
    data_file = glob.glob(os.path.join(run_dir, "checkpoints", state, "ckpt.data-*"))[0]
    os.truncate(data_file, os.path.getsize(data_file) // 2)
    rc, _, err = run(["-m", "dcbh_tf.evaluate", "--model_dir", run_dir])
    res.add(5, "ckpt_data_truncated", *one_error(rc, err))

    # a run folder name that is not UTF-8, on the command line (bytes argv)
    bad = os.fsencode(os.path.join(c5, "run_")) + b"\xff\xfe"
    parent_before = sorted(os.listdir(c5))
    rc, _, err = run([b"-m", b"dcbh_tf.train", *[a.encode() for a in TINY], b"--data_dir",
                      data.encode(), b"--model_dir", bad, b"--epochs", b"1"])
    ok, detail = one_error(rc, err, codes=(2,))
    res.add(5, "train_non_utf8_model_dir", ok and sorted(os.listdir(c5)) == parent_before
            and not os.path.exists(bad), detail)
    bad_copy = os.fsencode(os.path.join(c5, "copied_")) + b"\xff"
    if os.path.exists(bad_copy):
        shutil.rmtree(bad_copy)
    shutil.copytree(os.fsencode(base), bad_copy)
    os.remove(os.path.join(bad_copy, b".lock"))
    rc, _, err = run([b"-m", b"dcbh_tf.evaluate", b"--model_dir", bad_copy])
    if rc == 0:
        res.add(5, "evaluate_non_utf8_model_dir", "error:" not in err, "exit 0 (evaluated)")
    else:
        res.add(5, "evaluate_non_utf8_model_dir", *one_error(rc, err))
    rc, _, err = run([b"-m", b"dcbh_tf.export", b"--model_dir", os.fsencode(base), b"--export_dir",
                      os.fsencode(os.path.join(c5, "exp_")) + b"\xff"])
    ok, detail = one_error(rc, err, codes=(2,))
    res.add(5, "export_non_utf8_export_dir", ok, detail)

    # the gallery index manifest: bit flips, nesting, wrong types (command line `info`)
    sys.path.insert(0, ROOT)
    from face_search.errors import IndexFolderError  # noqa: PLC0415
    from face_search.index import GalleryIndex  # noqa: PLC0415
    idx = os.path.join(c5, "index")
    shutil.rmtree(idx, ignore_errors=True)
    index = GalleryIndex.create(12)
    index.add(np.arange(40, dtype=np.uint8).reshape(20, 2) % 16,
              [(f"person {i % 4}", i % 4, f"src{i}") for i in range(20)])
    index.save(idx)
    manifest = os.path.join(idx, "index.json")
    raw = open(manifest, "rb").read()
    reference = GalleryIndex.load(idx)

    def same(a: Any, b: Any) -> bool:
        return (len(a) == len(b) and a.next_id == b.next_id and a.num_bits == b.num_bits
                and a.kind == b.kind and np.array_equal(a.codes, b.codes)
                and np.array_equal(a.ids, b.ids) and np.array_equal(a.labels, b.labels))

    rng = random.Random(5)
    silent = []
    for pos in range(len(raw)):
        bit = rng.randrange(8)
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << bit
        with open(manifest, "wb") as f:
            f.write(bytes(flipped))
        try:
            got = GalleryIndex.load(idx)
            if not same(got, reference) or got.model != reference.model:
                silent.append(pos)
        except IndexFolderError:
            pass
        except Exception as exc:  # noqa: BLE001
            silent.append(f"{pos}:{type(exc).__name__}")
    with open(manifest, "wb") as f:
        f.write(raw)
    res.add(5, "index_manifest_bitflip_every_byte_api", not silent,
            f"{len(raw)} flips; loaded differently or crashed at {silent[:6]}")

    def info_case(case: str, content: bytes) -> None:
        with open(manifest, "wb") as f:
            f.write(content)
        rc, stdout, err = run(["-m", "face_search", "info", "--index", idx], timeout=60)
        if rc == 0:  # only a flip that changes nothing may load
            ok = json.loads(stdout)["count"] == 20
            detail = "exit 0 (loaded the same index)"
        else:
            ok, detail = one_error(rc, err, codes=(1, 2), names=("index.json", idx))
        res.add(5, case, ok, detail)

    for pos in sorted(rng.sample(range(len(raw)), 4)):
        flipped = bytearray(raw)
        flipped[pos] ^= 1 << rng.randrange(8)
        info_case(f"index_manifest_bitflip_cli_byte{pos}", bytes(flipped))
    info_case("index_manifest_deep_nesting_cli", b"[" * 200000)
    info_case("index_manifest_count_as_string_cli",
              raw.replace(b'"count": 20', b'"count": "20"'))
    info_case("index_manifest_truncated_cli", raw[: len(raw) // 2])
    with open(manifest, "wb") as f:
        f.write(raw)


# ----------------------------------------------------------------------------- class 6
_WRITER = """
import sys, numpy as np
import common.io.folder_swap as folder_swap
from face_search.index import GalleryIndex
path, seconds, mode = sys.argv[1], float(sys.argv[2]), sys.argv[3]
if mode == "no-exchange":
    folder_swap._exchange = lambda a, b: False
import time
end, saves = time.time() + seconds, 0
while time.time() < end:
    index = GalleryIndex.load(path)
    n = len(index)
    if mode == "remove" and n > 300 and saves % 2:
        index.remove(index.ids[:50].tolist())
    else:
        k = 1 + saves % 7
        index.add(np.array([[n % 256, saves % 16]] * k, np.uint8),
                  [(f"p{saves % 5}", saves % 5, f"s{saves}-{i}") for i in range(k)])
    index.save(path)
    saves += 1
print(saves)
"""

_READER = """
import sys, json, numpy as np
from face_search.index import GalleryIndex
path, loads = sys.argv[1], int(sys.argv[2])
errors, bad = [], 0
for _ in range(loads):
    try:
        index = GalleryIndex.load(path)
        ids = index.ids
        if len(ids) and (index.next_id <= ids[-1] or len(index.codes) != len(ids)
                         or len(index.labels) != len(ids)):
            bad += 1
    except Exception as exc:
        errors.append(f"{type(exc).__name__}: {exc}"[:200])
print(json.dumps({"errors": errors, "inconsistent": bad}))
"""


def class_6(out: str, res: Results) -> None:
    sys.path.insert(0, ROOT)
    from face_search.index import GalleryIndex  # noqa: PLC0415
    c6 = os.path.join(out, "c6")
    os.makedirs(c6, exist_ok=True)
    for case, mode, readers, start_size in (
            ("exchange_add_2_reader_processes", "add", 2, 3),
            ("no_exchange_add_2_reader_processes", "no-exchange", 2, 3),
            ("exchange_add_remove_bigger_index", "remove", 2, 5000),
            ("exchange_add_4_reader_processes", "add", 4, 50)):
        idx = os.path.join(c6, case)
        shutil.rmtree(idx, ignore_errors=True)
        index = GalleryIndex.create(12)
        index.add(np.zeros((start_size, 2), np.uint8), [("p", 1, "s0")] * start_size)
        index.save(idx)
        per_reader = 2000 // readers
        writer = subprocess.Popen([PY, "-c", _WRITER, idx, "600", mode], cwd=ROOT, env=env(),
                                  stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        time.sleep(0.5)
        procs = [subprocess.Popen([PY, "-c", _READER, idx, str(per_reader)], cwd=ROOT,
                                  env=env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                 for _ in range(readers)]
        outs = [p.communicate(timeout=600) for p in procs]
        writer.send_signal(signal.SIGKILL)
        writer.communicate()
        errors, bad, crashed = [], 0, []
        for p, (o, e) in zip(procs, outs):
            if p.returncode != 0:
                crashed.append(_text(e)[-200:])
                continue
            r = json.loads(_text(o).strip().splitlines()[-1])
            errors += r["errors"]
            bad += r["inconsistent"]
        try:
            final = f"final index loads, next_id {GalleryIndex.load(idx).next_id}"
        except Exception as exc:  # noqa: BLE001
            final = f"final load failed: {exc}"
            crashed.append(final)
        total = per_reader * readers
        res.add(6, case, not errors and not bad and not crashed,
                f"{total} loads: {len(errors)} errors {errors[:2]}, {bad} inconsistent, "
                f"{crashed[:1]}; {final}")


# ----------------------------------------------------------------------------- class 7
def _history_epochs(run_dir: str) -> tuple[list[int], int]:
    epochs, broken = [], 0
    path = os.path.join(run_dir, "history.jsonl")
    if not os.path.exists(path):
        return [], 0
    for line in open(path, "rb").read().splitlines():
        try:
            epochs.append(json.loads(line)["epoch"])
        except (ValueError, KeyError, TypeError):
            broken += 1
    return epochs, broken


def class_7(out: str, base: str, data: str, res: Results) -> None:
    c7 = os.path.join(out, "c7")
    os.makedirs(c7, exist_ok=True)
    epochs = 3

    def signalled(case: str, sig: int, when: str, delay: float) -> None:
        run_dir = os.path.join(c7, case)
        shutil.rmtree(run_dir, ignore_errors=True)
        args = [PY, *train_args(run_dir, data, epochs=epochs)]
        p = subprocess.Popen(args, cwd=ROOT, env=env(), stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE)
        err_chunks: list[bytes] = []
        t_err = threading.Thread(target=lambda: err_chunks.append(p.stderr.read()), daemon=True)
        t_err.start()
        start, sent = time.time(), None
        out_lines = []
        if when == "time":
            stop = threading.Event()

            def reader() -> None:
                for line in p.stdout:
                    out_lines.append(line)
                stop.set()

            t_out = threading.Thread(target=reader, daemon=True)
            t_out.start()
            stop.wait(delay)
            if p.poll() is None:
                p.send_signal(sig)
                sent = time.time() - start
            t_out.join()
        else:  # after the last stdout line ("metrics: ..."), plus ``delay``
            for line in p.stdout:
                out_lines.append(line)
                if line.startswith(b"metrics:"):
                    if delay:
                        time.sleep(delay)
                    if p.poll() is None:
                        p.send_signal(sig)
                        sent = time.time() - start
            p.stdout.close()
        rc = p.wait(timeout=300)
        t_err.join()
        err = _text(b"".join(err_chunks))
        done, broken = _history_epochs(run_dir)
        complete = os.path.exists(os.path.join(run_dir, "metrics.json")) and \
            sorted(set(done)) == list(range(1, epochs + 1)) and not broken
        when_s = "not sent (already exited)" if sent is None else f"sent at {sent:.2f} s"
        if rc == 0:
            lines = [ln for ln in err.splitlines() if ln.startswith("error:")]
            res.add(7, case, complete and not lines, f"exit 0, {when_s}, complete {complete}")
        else:
            ok, detail = one_error(rc, err, codes=(130,))
            res.add(7, case, ok, f"{when_s}: {detail}")

    signalled("sigterm_at_0.3s_startup", signal.SIGTERM, "time", 0.3)
    signalled("sigint_at_2s_imports", signal.SIGINT, "time", 2.0)
    signalled("sigterm_at_7s_training", signal.SIGTERM, "time", 7.0)
    signalled("sigterm_right_after_last_line", signal.SIGTERM, "last", 0.0)
    signalled("sigint_right_after_last_line", signal.SIGINT, "last", 0.0)
    signalled("sigterm_teardown_+0.05s", signal.SIGTERM, "last", 0.05)
    signalled("sigint_teardown_+0.2s", signal.SIGINT, "last", 0.2)

    # a history line torn by a kill: the next epoch's line must not be lost on restart
    for case, cut in (("torn_history_half_line", 0.5), ("torn_history_one_byte", None)):
        run_dir = copy_run(base, os.path.join(c7, case))
        path = os.path.join(run_dir, "history.jsonl")
        raw = open(path, "rb").read()
        last_start = raw.rstrip(b"\n").rfind(b"\n") + 1
        keep = last_start + (1 if cut is None else int((len(raw) - last_start) * cut))
        with open(path, "wb") as f:
            f.write(raw[:keep])
        rc, _, err = run(train_args(run_dir, data, epochs=3))
        done, broken = _history_epochs(run_dir)
        ok = rc == 0 and 3 in done and 1 in done
        res.add(7, case, ok, f"exit {rc}; parsed epochs {done}, {broken} unparsable lines"
                + ("" if rc == 0 else f"; {err.strip().splitlines()[-1:]}"))


# ----------------------------------------------------------------------------- main
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--_read":
        read_child(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="scratch folder (created)")
    parser.add_argument("--classes", default="1,2,3,4,5,6,7", help="comma-separated 1..7")
    args = parser.parse_args()
    classes = [int(c) for c in args.classes.split(",") if c.strip()]
    out = os.path.abspath(args.out)
    os.makedirs(out, exist_ok=True)
    start = time.time()
    res = Results()
    data = os.path.join(out, "data")
    base = os.path.join(out, "base_dcbh")
    if any(c in classes for c in (1, 2, 5, 7)) and not os.path.exists(
            os.path.join(base, "metrics.json")):
        shutil.rmtree(base, ignore_errors=True)
        rc, _, err = run(train_args(base, data, epochs=2))
        if rc != 0:
            sys.exit(f"base training failed: {err[-500:]}")
    steps = {1: lambda: class_1(out, base, data, res), 2: lambda: class_2(out, base, res),
             3: lambda: class_3(out, res), 4: lambda: class_4(out, data, res),
             5: lambda: class_5(out, base, data, res), 6: lambda: class_6(out, res),
             7: lambda: class_7(out, base, data, res)}
    for cls in classes:
        t0 = time.time()
        print(f"class {CLASS_NAMES[cls]}", flush=True)
        try:
            steps[cls]()
        except Exception as exc:  # noqa: BLE001 (a script error is reported, the pass goes on)
            res.add(cls, "script_error", False, f"{type(exc).__name__}: {exc}")
        print(f"  ({time.time() - t0:.0f} s)", flush=True)
    with open(os.path.join(out, "results.json"), "w") as f:
        json.dump({str(k): v for k, v in res.cases.items()}, f, indent=1)
    print()
    print(res.table())
    print(f"\ntotal wall time {time.time() - start:.0f} s")


if __name__ == "__main__":
    main()
