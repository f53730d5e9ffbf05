"""GPU readiness check: what one machine's devices do with DCBH at the original's size.

Run through ``bench/device_check.sh`` (which also saves ``nvidia-smi`` and the log).
Every training configuration runs in its own fresh Python process (a process's devices,
precision policy and strategy are fixed at its first TensorFlow op, and a hang or an
out-of-memory crash of one configuration must not stop the others); the parent never
imports TensorFlow, so it holds no GPU memory.

1. devices: TensorFlow and Keras versions, CUDA/cuDNN build info, the physical devices
   (GPU names and compute capability), as the first configuration's process sees them
   (a process of their own only when no configuration reported them), and nvidia-smi's
   list (a warning when it lists GPUs that TensorFlow does not see);
2. evaluation: one ``common.metrics.retrieval_metrics`` call at the YouTube Faces size
   (7,975 queries x 63,800 database codes, 48 bits), after an untimed small call that
   compiles (or loads) the numba kernel; it runs in the parent, before the training;
3. training: the shared loop's real DCBH train step (``_Trainer``: all loss parts, the
   direct center update, Adam; the loop's input pipeline) on random images (N, 32, 32, 3)
   at full width, batch 256, 530 classes (FaceScrub), 48 bits, per configuration:
   float32 / mixed precision, with and without XLA, on one device and ``mirrored`` over
   every visible GPU. Reported: median step time over ``--steps`` timed steps after
   ``--warmup`` untimed ones (each step waited for), images/s = batch / median step, the
   first step's time (tracing, XLA compilation), the peak GPU memory per GPU during the
   timed steps (``tf.config.experimental.get_memory_info``, after ``reset_memory_stats``
   once warmed up; null on CPU). A configuration that ``TrainConfig.validate`` refuses is
   recorded as skipped with its message; one that fails, as an error with its message;
4. projection: wall hours of the original schedule (2000 epochs over FaceScrub's 67,177
   train images at the measured batch) from each configuration's median step time, plus
   the loop's retrieval evaluations (see :func:`project_hours`).

Writes ``device_check.json`` (every figure), ``device_check.md`` (a table to paste into
docs/BENCHMARKS.md) and ``workers.log`` (each worker process's own output) into ``--out``.

    bench/device_check.sh                       # on a GPU machine: everything, < 8 minutes
    python bench/device_check.py --out OUT --configs float32,mixed --steps 10
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
import traceback

from absl import app, flags


def define_flags() -> None:
    """The script's flags, defined only when it runs as a script: tests import its
    functions in a process whose other modules already define --batch_size and the like."""
    flags.DEFINE_string("out", "device_check_out",
                        "folder for device_check.json/.md and workers.log")
    flags.DEFINE_float("width_multiplier", 1.0, "DCBH backbone width (1.0 = the original)")
    flags.DEFINE_integer("batch_size", 256, "global batch (the original: 256)")
    flags.DEFINE_integer("steps", 20, "timed training steps per configuration")
    flags.DEFINE_integer("warmup", 3, "untimed training steps first (tracing, XLA compilation)")
    flags.DEFINE_integer("num_classes", 530, "classes (FaceScrub: 530)")
    flags.DEFINE_integer("num_bits", 48, "code length")
    flags.DEFINE_integer("eval_queries", 7975, "evaluation queries (YouTube Faces: 7,975)")
    flags.DEFINE_integer("eval_database", 63800,
                         "evaluation database items (YouTube Faces: 63,800)")
    flags.DEFINE_list("configs", None, "training configurations to run (default: all of them)")
    flags.DEFINE_integer("timeout_s", 240, "wall-clock limit of one configuration's process")
    flags.DEFINE_integer("budget_s", 420, "wall-clock budget of the whole check: configurations "
                         "that would start after it is spent are skipped")
    flags.DEFINE_integer("cpu_devices", 2, "logical CPU devices for mirrored when there is no GPU")
    flags.DEFINE_string("worker", None, "internal: run one step (devices or a configuration) in "
                        "this process and print its result")


FLAGS = flags.FLAGS

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
RESULT_MARKER = "DEVICE_CHECK_RESULT "

# name -> TrainConfig settings. In the order they run: the most wanted first, so a
# budget that runs out costs the least useful ones.
CONFIGS: dict[str, dict] = {
    "float32": {"mixed_precision": False, "jit_compile": False, "distribution": "default"},
    "mixed": {"mixed_precision": True, "jit_compile": False, "distribution": "default"},
    "float32_xla": {"mixed_precision": False, "jit_compile": True, "distribution": "default"},
    "mixed_xla": {"mixed_precision": True, "jit_compile": True, "distribution": "default"},
    "mirrored": {"mixed_precision": False, "jit_compile": False, "distribution": "mirrored"},
    "mirrored_mixed": {"mixed_precision": True, "jit_compile": False, "distribution": "mirrored"},
    "mirrored_xla": {"mixed_precision": False, "jit_compile": True, "distribution": "mirrored"},
    "mirrored_mixed_xla": {"mixed_precision": True, "jit_compile": True,
                           "distribution": "mirrored"},
}

# The original schedule (DCBH on FaceScrub).
ORIGINAL_EPOCHS = 2000
FACESCRUB_TRAIN_IMAGES = 67177
ORIGINAL_EVAL_EVERY = 100


# ----------------------------------------------------------------------- projection
def count_evaluations(epochs: int, eval_every: int) -> int:
    """Retrieval evaluations the shared loop runs over a whole run.

    Periodic ones after every ``eval_every``-th epoch before the last, then the final
    ones of the ``best_loss`` and ``last`` states (two; one when they are the same
    state, counted as two here): 19 + 2 = 21 for 2000 epochs every 100.
    """
    periodic = (epochs - 1) // eval_every if eval_every else 0
    return periodic + 2


def project_hours(step_seconds: float, eval_seconds: float | None, batch_size: int, *,
                  epochs: int = ORIGINAL_EPOCHS, train_images: int = FACESCRUB_TRAIN_IMAGES,
                  eval_every: int = ORIGINAL_EVAL_EVERY) -> dict:
    """Projected wall time of a run from one step's time and one evaluation's time.

    hours = (epochs * ceil(train_images / batch_size) * step_seconds
             + count_evaluations(epochs, eval_every) * eval_seconds) / 3600

    Every step is counted at the full batch's time (an epoch's last, smaller batch
    too). Not counted: the per-epoch test-split pass, checkpoint writes, computing the
    codes for each evaluation (a forward pass over the train and test splits).
    """
    steps_per_epoch = math.ceil(train_images / batch_size)
    evaluations = count_evaluations(epochs, eval_every)
    train_s = epochs * steps_per_epoch * step_seconds
    eval_s = evaluations * (eval_seconds or 0.0)
    return {"epochs": epochs, "train_images": train_images, "batch_size": batch_size,
            "steps_per_epoch": steps_per_epoch, "evaluations": evaluations,
            "step_seconds": step_seconds, "eval_seconds_each": eval_seconds,
            "train_hours": train_s / 3600, "eval_hours": eval_s / 3600,
            "hours": (train_s + eval_s) / 3600}


# ----------------------------------------------------------------------- workers
def device_info() -> dict:
    """Versions, build info and physical devices (no TensorFlow op is run)."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import keras
    import numpy as np
    import tensorflow as tf

    build = {k: str(v) for k, v in tf.sysconfig.get_build_info().items()}
    devices = []
    for device in tf.config.list_physical_devices():
        entry = {"name": device.name, "type": device.device_type}
        if device.device_type == "GPU":
            try:
                details = tf.config.experimental.get_device_details(device)
                entry.update({k: (list(v) if isinstance(v, tuple) else v)
                              for k, v in details.items()})
            except Exception as exc:  # noqa: BLE001 - details are a nicety
                entry["details_error"] = str(exc)
        devices.append(entry)
    return {"tensorflow": tf.__version__, "keras": keras.__version__, "numpy": np.__version__,
            "python": platform.python_version(), "machine": platform.machine(),
            "processor": platform.processor(), "cpu_count": os.cpu_count(),
            "build_info": build, "physical_devices": devices,
            "gpus": [d for d in devices if d["type"] == "GPU"]}


def _gpu_names(tf) -> list[str]:
    return [d.name.replace("/device:", "") for d in tf.config.list_logical_devices("GPU")]


def train_config_result(name: str, settings: dict) -> dict:
    """Time the shared loop's DCBH step in one configuration (in this fresh process)."""
    result = {"config": name, **settings, "status": "error", "replicas": None,
              "images_per_second": None, "step_seconds": None, "first_step_seconds": None,
              "peak_gpu_bytes": None, "peak_gpu_mib": None, "devices": None, "policy": None}
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf

    from common.training.distribution import configure_cpu_devices

    gpus_physical = tf.config.list_physical_devices("GPU")
    if settings["distribution"] != "default" and not gpus_physical:
        configure_cpu_devices(FLAGS.cpu_devices)  # before any op

    import keras
    import numpy as np

    from common.data import Normalization
    from common.training.data import SplitData
    from common.training.distribution import distributed_epoch, make_strategy
    from common.training.loop import TrainConfig, _Trainer
    from common.training.optimizers import precision_policy
    from dcbh_tf.method import DCBH

    model_dir = tempfile.mkdtemp(prefix="device_check_")
    config = TrainConfig(epochs=1, model_dir=model_dir, batch_size=FLAGS.batch_size,
                         mixed_precision=settings["mixed_precision"],
                         jit_compile=settings["jit_compile"],
                         distribution=settings["distribution"], log_every_steps=0)
    try:
        try:
            config.validate()
        except ValueError as exc:  # e.g. XLA with mirrored, while the loop refuses it
            result.update(status="skipped", reason=str(exc))
            return result
        policy = precision_policy(settings["mixed_precision"])
        keras.mixed_precision.set_global_policy(policy)
        keras.utils.set_random_seed(0)
        rng = np.random.default_rng(0)
        n = FLAGS.batch_size * (FLAGS.warmup + FLAGS.steps)
        images = rng.normal(size=(n, 32, 32, 3)).astype(np.float32)
        labels = rng.integers(0, FLAGS.num_classes, n).astype(np.int64)
        data = SplitData(images, labels, images[:FLAGS.batch_size], labels[:FLAGS.batch_size],
                         FLAGS.num_classes, Normalization(0.0, 1.0), {"dataset": "random"})
        strategy = (make_strategy(settings["distribution"])
                    if settings["distribution"] != "default" else None)
        trainer = _Trainer(DCBH(num_bits=FLAGS.num_bits, width_multiplier=FLAGS.width_multiplier),
                           data, config, strategy)
        batches = (trainer.pipeline.epoch(0) if strategy is None
                   else distributed_epoch(strategy, trainer.pipeline, 0))
        gpus = _gpu_names(tf)
        times = []
        for i, (x, y) in enumerate(batches):
            if i == FLAGS.warmup and gpus:  # peak of the timed steps (state included)
                for gpu in gpus:
                    tf.config.experimental.reset_memory_stats(gpu)
            start = time.perf_counter()
            values = trainer.steps.train_step(x, y)["loss"].numpy()
            times.append(time.perf_counter() - start)
            if not np.all(np.isfinite(values)):
                raise FloatingPointError(f"non-finite step result at step {i + 1}: {values}")
        timed = times[FLAGS.warmup:]
        if not timed:
            raise RuntimeError(f"no timed step ran ({len(times)} steps in all)")
        step = statistics.median(timed)
        result.update(
            status="ok", policy=policy,
            replicas=strategy.num_replicas_in_sync if strategy is not None else 1,
            devices=gpus or [d.name for d in tf.config.list_logical_devices("CPU")],
            step_seconds=step, images_per_second=FLAGS.batch_size / step,
            first_step_seconds=times[0], step_seconds_all=times, timed_steps=len(timed))
        if gpus:
            peaks = [int(tf.config.experimental.get_memory_info(g)["peak"]) for g in gpus]
            result.update(peak_gpu_bytes=peaks, peak_gpu_mib=max(peaks) / 2 ** 20)
        return result
    finally:
        shutil.rmtree(model_dir, ignore_errors=True)


def worker(name: str) -> None:
    """Worker mode: one step in this process; its result is the last stdout line."""
    info = None
    try:
        if name == "devices":
            result = device_info()
        else:
            try:  # the devices come with every configuration: no process of their own
                info = device_info()
            except Exception as exc:  # noqa: BLE001
                info = {"status": "error", "error": f"{type(exc).__name__}: {exc}"}
            result = train_config_result(name, CONFIGS[name])
    except BaseException as exc:  # noqa: BLE001 - reported to the parent, which carries on
        traceback.print_exc()
        result = {"config": name, "status": "error",
                  "error": f"{type(exc).__name__}: {exc}"[-2000:]}
    if info is not None:
        result["device_info"] = info
    sys.stdout.flush()
    print(RESULT_MARKER + json.dumps(result, default=str), flush=True)


# ----------------------------------------------------------------------- parent side
def _worker_args() -> list[str]:
    names = ["width_multiplier", "batch_size", "steps", "warmup", "num_classes", "num_bits",
             "cpu_devices"]
    return [f"--{k}={getattr(FLAGS, k)}" for k in names]


def run_worker(name: str, timeout_s: float, log_path: str, args: list[str]) -> dict:
    """Run ``name`` in a fresh process (``args``: its flags); its result, or the reason it
    gave none (timed out, crashed)."""
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL=os.environ.get("TF_CPP_MIN_LOG_LEVEL", "2"))
    env["PYTHONPATH"] = ROOT + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    cmd = [sys.executable, os.path.abspath(__file__), f"--worker={name}", *args]
    start = time.perf_counter()
    try:
        proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True,
                              timeout=timeout_s, check=False)
        out, err, rc = proc.stdout, proc.stderr, proc.returncode
        timed_out = False
    except subprocess.TimeoutExpired as exc:
        def text(b):
            return b.decode(errors="replace") if isinstance(b, bytes) else (b or "")
        out, err, rc, timed_out = text(exc.stdout), text(exc.stderr), None, True
    seconds = time.perf_counter() - start
    with open(log_path, "a", encoding="utf-8") as log:
        log.write(f"===== {name}: exit {rc}, {seconds:.1f} s{' (timed out)' if timed_out else ''}"
                  f"\n$ {' '.join(cmd)}\n--- stdout\n{out}\n--- stderr\n{err}\n")
    lines = [line for line in out.splitlines() if line.startswith(RESULT_MARKER)]
    if lines:
        result = json.loads(lines[-1][len(RESULT_MARKER):])
    elif timed_out:
        result = {"config": name, "status": "timeout",
                  "error": f"no result within {timeout_s:.0f} s (process killed)"}
    else:
        tail = (err or out).strip().splitlines()[-5:]
        result = {"config": name, "status": "error",
                  "error": f"process exited {rc} without a result: " + " | ".join(tail)}
    result["process_seconds"] = seconds
    return result


def make_codes(queries: int, database: int, bits: int, seed: int = 0):
    """Real-valued codes clustered by identity, 5 queries per identity (as YouTube Faces:
    1,595 identities, 5 queries and 40 database items each at the full size)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    identities = max(1, queries // 5)
    centers = rng.normal(size=(identities, bits))
    q_y = np.arange(queries) % identities
    db_y = np.arange(database) % identities
    q = centers[q_y] + 1.2 * rng.normal(size=(queries, bits))
    db = centers[db_y] + 1.2 * rng.normal(size=(database, bits))
    return q.astype(np.float32), q_y, db.astype(np.float32), db_y


def evaluation_result(queries: int, database: int, bits: int) -> dict:
    """Time one retrieval_metrics call (exact Hamming, index ties: the loop's default)."""
    from common.metrics import retrieval_metrics

    q, q_y, db, db_y = make_codes(queries, database, bits)
    start = time.perf_counter()
    retrieval_metrics(q[:2], q_y[:2], db[:100], db_y[:100])  # numba: compile or load the kernel
    first = time.perf_counter() - start
    start = time.perf_counter()
    metrics = retrieval_metrics(q, q_y, db, db_y)
    seconds = time.perf_counter() - start
    return {"queries": queries, "database": database, "bits": bits, "seconds": seconds,
            "kernel_load_seconds": first, "metrics": metrics}


def nvidia_smi_gpus() -> list[str] | None:
    """GPUs as nvidia-smi lists them (None without nvidia-smi)."""
    if shutil.which("nvidia-smi") is None:
        return None
    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=name,memory.total,driver_version",
                              "--format=csv,noheader"], capture_output=True, text=True,
                             timeout=30, check=False).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return [line.strip() for line in out.splitlines() if line.strip()]


def _fmt(value, spec: str, missing: str = "-") -> str:
    return missing if value is None else format(value, spec)


def markdown_table(report: dict) -> str:
    """The results as a markdown table (one row per configuration) with a header line."""
    dev = report.get("devices") or {}
    gpus = ", ".join(g.get("device_name", g["name"]) for g in dev.get("gpus", [])) or "none"
    s = report["settings"]
    ev = report.get("evaluation") or {}
    lines = [
        f"DCBH {s['num_bits']} bits, width x{s['width_multiplier']}, {s['num_classes']} classes, "
        f"global batch {s['batch_size']}, median of {s['steps']} steps after {s['warmup']} "
        f"warm-up steps. GPUs: {gpus}; TensorFlow {dev.get('tensorflow', '?')}, Keras "
        f"{dev.get('keras', '?')}, CUDA {dev.get('build_info', {}).get('cuda_version', '-')}, "
        f"cuDNN {dev.get('build_info', {}).get('cudnn_version', '-')}.",
        "",
        "| config | replicas | policy | XLA | img/s | step ms | first step s | peak GPU MiB "
        "| projected 2000-epoch hours | note |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in report["configs"]:
        proj = r.get("projection") or {}
        note = "" if r.get("status") == "ok" else (
            f"{r.get('status')}: {r.get('reason') or r.get('error') or ''}")
        note = note.replace("|", "/").replace("\n", " ")[:160]
        lines.append(
            f"| {r['config']} | {_fmt(r.get('replicas'), 'd')} | {r.get('policy') or '-'} "
            f"| {'yes' if r.get('jit_compile') else 'no'} "
            f"| {_fmt(r.get('images_per_second'), ',.1f')} "
            f"| {_fmt(r['step_seconds'] * 1e3 if r.get('step_seconds') else None, ',.1f')} "
            f"| {_fmt(r.get('first_step_seconds'), '.1f')} "
            f"| {_fmt(r.get('peak_gpu_mib'), ',.0f')} | {_fmt(proj.get('hours'), ',.2f')} "
            f"| {note} |")
    if ev.get("seconds") is not None:
        lines += ["", f"Evaluation (`retrieval_metrics`, exact Hamming, index ties) at "
                  f"{ev['queries']:,} queries x {ev['database']:,} database codes, {ev['bits']} "
                  f"bits: {ev['seconds']:.2f} s (kernel load first: "
                  f"{ev['kernel_load_seconds']:.2f} s)."]
    p = report.get("projection_basis") or {}
    if p:
        lines += ["", f"Projection: {p['epochs']} epochs x {p['steps_per_epoch']} steps "
                  f"(ceil({p['train_images']:,} / {p['batch_size']})) x the median step time, "
                  f"plus {p['evaluations']} evaluations x the evaluation time above "
                  f"({p['eval_note']}). Not counted: {p['not_counted']}."]
    return "\n".join(lines) + "\n"


def check_devices(devices: dict, warnings: list[str]) -> dict:
    """Add nvidia-smi's GPU list; warn when TensorFlow does not see the GPUs it lists."""
    devices["nvidia_smi"] = nvidia_smi_gpus()
    if devices.get("status") in ("error", "timeout"):
        warnings.append(f"device listing failed: {devices.get('error')}")
    elif devices.get("nvidia_smi") and not devices.get("gpus"):
        warnings.append(
            f"nvidia-smi lists {len(devices['nvidia_smi'])} GPU(s) but TensorFlow sees none: "
            "this TensorFlow has no CUDA libraries (pip install 'tensorflow[and-cuda]') or "
            "CUDA_VISIBLE_DEVICES hides them; the figures here are CPU figures")
    b = devices.get("build_info", {})
    print(f"== devices: TensorFlow {devices.get('tensorflow')}, Keras {devices.get('keras')}, "
          f"CUDA {b.get('cuda_version', '-')}, cuDNN {b.get('cudnn_version', '-')}; GPUs seen "
          f"by TensorFlow: {[g.get('device_name', g['name']) for g in devices.get('gpus', [])]}"
          f"; nvidia-smi: {devices['nvidia_smi']}", flush=True)
    return devices


def run_check(out: str) -> dict:
    """Everything, in order; writes device_check.json and device_check.md into ``out``."""
    start = time.perf_counter()
    os.makedirs(out, exist_ok=True)
    log_path = os.path.join(out, "workers.log")
    open(log_path, "w", encoding="utf-8").close()
    names = FLAGS.configs or list(CONFIGS)
    unknown = [n for n in names if n not in CONFIGS]
    if unknown:
        raise app.UsageError(f"unknown --configs {unknown}; known: {', '.join(CONFIGS)}")
    settings = {k: getattr(FLAGS, k) for k in (
        "width_multiplier", "batch_size", "steps", "warmup", "num_classes", "num_bits",
        "eval_queries", "eval_database", "timeout_s", "budget_s", "cpu_devices")}
    settings["configs"] = names
    report: dict = {"format": 1, "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                    "settings": settings, "warnings": []}

    print(f"== evaluation: {FLAGS.eval_queries} x {FLAGS.eval_database}, {FLAGS.num_bits} bits",
          flush=True)
    try:
        evaluation = evaluation_result(FLAGS.eval_queries, FLAGS.eval_database, FLAGS.num_bits)
        print(f"   {evaluation['seconds']:.2f} s (kernel load "
              f"{evaluation['kernel_load_seconds']:.2f} s), "
              f"mAP {evaluation['metrics']['map']:.4f}", flush=True)
    except Exception as exc:  # noqa: BLE001 - the training figures still count
        evaluation = {"status": "error", "error": f"{type(exc).__name__}: {exc}", "seconds": None}
        print(f"   failed: {evaluation['error']}", flush=True)
    report["evaluation"] = evaluation
    eval_seconds = evaluation.get("seconds")

    basis = project_hours(1.0, eval_seconds, FLAGS.batch_size)
    report["projection_basis"] = {
        k: basis[k] for k in ("epochs", "train_images", "batch_size", "steps_per_epoch",
                              "evaluations")}
    report["projection_basis"].update(
        eval_note=("each taken as the retrieval_metrics time measured above, as is: "
                   "FaceScrub's database, 67,177 codes, is 5% larger than YouTube Faces', and "
                   "its query count is not recorded in this repository"),
        not_counted=("the per-epoch test-split pass, checkpoint writes, encoding the codes "
                     "for each evaluation"))

    report["configs"] = []
    for name in names:
        left = FLAGS.budget_s - (time.perf_counter() - start)
        if left < 20:
            result = {"config": name, **CONFIGS[name], "status": "skipped",
                      "reason": f"--budget_s {FLAGS.budget_s} spent"}
        else:
            print(f"== {name}", flush=True)
            result = run_worker(name, min(FLAGS.timeout_s, left), log_path, _worker_args())
            result = {**CONFIGS[name], **result}
        if result.get("step_seconds"):
            result["projection"] = project_hours(result["step_seconds"], eval_seconds,
                                                 FLAGS.batch_size)
        report["configs"].append(result)
        if result.get("status") == "ok":
            print(f"   {result['replicas']} replica(s), {result['images_per_second']:.1f} img/s, "
                  f"{result['step_seconds'] * 1e3:.1f} ms/step, first step "
                  f"{result['first_step_seconds']:.1f} s, peak GPU "
                  f"{_fmt(result.get('peak_gpu_mib'), '.0f')} MiB, projected "
                  f"{result['projection']['hours']:.2f} h", flush=True)
        else:
            print(f"   {result.get('status')}: {result.get('reason') or result.get('error')}",
                  flush=True)
    # The devices as the first configuration's process saw them (their own process
    # only when no configuration reported them).
    infos = [r.pop("device_info", None) for r in report["configs"]]
    devices = next((i for i in infos if i and i.get("status") != "error"), None)
    if devices is None:
        print("== devices", flush=True)
        left = FLAGS.budget_s + 60 - (time.perf_counter() - start)
        devices = run_worker("devices", min(FLAGS.timeout_s, 120, max(30, left)), log_path, [])
    report["devices"] = check_devices(devices, report["warnings"])
    report["seconds"] = time.perf_counter() - start

    table = markdown_table(report)
    with open(os.path.join(out, "device_check.json"), "w", encoding="utf-8") as f:
        json.dump(report, f, indent=2, default=str)
    with open(os.path.join(out, "device_check.md"), "w", encoding="utf-8") as f:
        f.write(table)
    print("\n" + table, flush=True)
    for warning in report["warnings"]:
        print(f"WARNING: {warning}", flush=True)
    print(f"device check: {report['seconds']:.0f} s; results in {os.path.abspath(out)}/"
          "device_check.{json,md}", flush=True)
    return report


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments: {argv[1:]}")
    if FLAGS.worker:
        worker(FLAGS.worker)
        return
    run_check(FLAGS.out)


if __name__ == "__main__":
    define_flags()
    app.run(main)
