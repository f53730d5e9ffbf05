"""Run every method x bit length into one output folder and write the tables and figures."""

from __future__ import annotations

import contextlib
import os
import platform
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from absl import logging

from common.reproduce import isolation
from common.reproduce import methods as registry
from common.reproduce.cells import check_started_cell, finished_cell, run_cell
from common.reproduce.figures import write_figures
from common.reproduce.layout import replaced_whole
from common.reproduce.report import results_csv, results_markdown
from common.io.locks import run_lock
from common.training.data import hold_out_validation

RESULTS_MD = "results.md"
RESULTS_CSV = "results.csv"
DEFAULT_EPOCHS = 100
DEFAULT_VALIDATION_FRACTION = 0.1  # DDH's protocol: 10% of the training set for validation
ORIGINAL_EPOCHS = 2000


@dataclass(kw_only=True)
class ReproduceConfig:
    """What to run. Deep methods share the training settings; baselines use the seed.

    ``deterministic`` switches TensorFlow's op determinism on in every deep cell's
    process (bit-identical re-runs on the same machine and software). ``sparse_adam``
    is the deep cells' Adam on the centers' repeated rows (common.training.sparse_gradients).

    ``methods`` are the table's rows: a method name, or ``method@width`` for a row at its
    own width (common.reproduce.methods.parse_row; spelled ``method@{width:g}``, see
    common.reproduce.methods.check_methods). Every row x bit length runs once per
    seed of ``seeds`` (``seed`` alone when ``seeds`` is empty). ``validation_fraction``
    holds out that share of each identity's train images (seeded by ``validation_seed``,
    the same rows for every seed); the tabulated ``best_map`` state is then chosen on
    them, and the test split is scored once, on that state. 0: ``best_map`` is chosen on
    the test split (the original code's way), which the table then says. ``best_loss``
    and ``last`` choose no state on a split (the lowest training loss, the last epoch).

    ``finished_only``: run no cell, write the tables from the finished ones; it takes no
    lock on ``out`` (it only reads cells and replaces the tables whole), so it works while
    another harness fills the folder.
    """

    out: str
    methods: list[str] = field(default_factory=lambda: ["dcbh", "ddch", "ddh", "itq", "lsh"])
    bits: list[int] = field(default_factory=lambda: [12, 24, 36, 48])
    epochs: int = DEFAULT_EPOCHS
    batch_size: int = 256
    shuffle: bool = True
    seed: int = 0
    seeds: list[int] = field(default_factory=list)
    validation_fraction: float = DEFAULT_VALIDATION_FRACTION
    validation_seed: int = 0
    eval_every: int = 10
    width_multiplier: float = 1.0
    checkpoint: str = "best_map"
    top_k: int = 50
    radius: int = 2
    ties: str = "index"
    deterministic: bool = False
    sparse_adam: str = "tf1"
    finished_only: bool = False

    def validate(self) -> None:
        self.methods = registry.check_methods(self.methods, self.width_multiplier)
        if not self.bits or any(b < 1 for b in self.bits):
            raise ValueError(f"bits must be positive, got {self.bits}")
        self.bits = sorted(set(int(b) for b in self.bits))
        self.seeds = sorted(set(int(s) for s in self.seeds)) or [int(self.seed)]
        if any(s < 0 for s in self.seeds):
            raise ValueError(f"seeds must be >= 0, got {self.seeds}")
        if not 0.0 <= self.validation_fraction < 1.0:
            raise ValueError(f"validation_fraction must be in [0, 1), got "
                             f"{self.validation_fraction}")
        if self.validation_seed < 0:
            raise ValueError(f"validation_seed must be >= 0, got {self.validation_seed}")
        for name, value, low in (("epochs", self.epochs, 1), ("batch_size", self.batch_size, 1),
                                 ("eval_every", self.eval_every, 0), ("top_k", self.top_k, 1),
                                 ("radius", self.radius, 0), ("seed", self.seed, 0)):
            if value < low:
                raise ValueError(f"{name} must be >= {low}, got {value}")
        if self.width_multiplier <= 0:
            raise ValueError(f"width_multiplier must be > 0, got {self.width_multiplier}")
        if self.checkpoint not in ("best_map", "best_loss", "last"):
            raise ValueError(f"checkpoint must be best_map, best_loss or last, got "
                             f"{self.checkpoint!r}")
        if self.sparse_adam not in ("tf1", "keras"):
            raise ValueError(f"sparse_adam must be tf1 or keras, got {self.sparse_adam!r}")
        if self.ties not in ("index", "expected"):
            raise ValueError(f"ties must be index or expected, got {self.ties!r}")


def cell_settings(config: ReproduceConfig, data, row: str | None = None,
                  seed: int | None = None) -> dict[str, Any]:
    """Everything that decides a cell's result (a finished cell must match it to be reused):
    the table's settings with the cell's own seed and its row's width (``row`` and
    ``seed``: default, the table's settings, with its first seed)."""
    settings = {k: v for k, v in asdict(config).items()
                if k not in ("out", "methods", "bits", "seeds", "finished_only")}
    settings["seed"] = int(config.seeds[0] if seed is None else seed)
    if row is not None:
        settings["width_multiplier"] = registry.row_width(row, config.width_multiplier)
    settings.update(dataset=data.description.get("dataset"),
                    train_images=int(len(data.train_labels)),
                    test_images=int(len(data.test_labels)), num_classes=int(data.num_classes),
                    extra_train_images=int(len(data.extra_train_labels)),
                    extra_train_sha256=data.description.get("extra_train_sha256"),
                    train_mean=round(float(data.normalization.mean), 6),
                    train_std=round(float(data.normalization.std), 6))
    return settings


def cpu_model() -> str:
    """The CPU's model name (a re-run is bit-identical only on the same CPU type)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def environment() -> dict[str, Any]:
    """Machine and software versions for the table's page."""
    import numpy as np

    from common.cli.tf_startup import import_tensorflow

    tf = import_tensorflow()  # once, its start-up notices filtered: before Keras imports it
    import keras

    gpus = tf.config.list_physical_devices("GPU")
    return {"machine": f"{platform.machine()} {cpu_model()}, "
                       f"{os.cpu_count()} CPUs, GPU: {', '.join(g.name for g in gpus) or 'none'}",
            "python": platform.python_version(), "tensorflow": tf.__version__,
            "keras": keras.__version__, "numpy": np.__version__,
            "written": time.strftime("%Y-%m-%d %H:%M:%S %Z")}


def run_isolated_cell(config: ReproduceConfig, method: str, bits: int, data,
                      settings: dict[str, Any], seed: int = 0) -> dict[str, Any]:
    """One cell, so that no other cell's state can reach it; returns its cell.json.

    A finished cell is reused; a deep one runs in a fresh process (its recorded
    command); a baseline runs here: it is a pure function of the data, the bit length
    and its own seeded numpy generator (no global state, no TensorFlow), and a
    process of its own would cost more than the fit (TensorFlow import, data reload).
    """
    try:
        command = isolation.command_record(
            isolation.cell_argv(config, method, bits, data.description, seed=seed))
    except ValueError:  # data not loaded by load_split_data: baselines only (see reproduce)
        command = None
    done = finished_cell(config.out, method, bits, settings)
    if done is not None:
        logging.info("%s %d bits: done earlier, skipped", method, bits)
        return done
    if not registry.is_deep(method):
        return run_cell(config.out, method, bits, data, settings, command)
    assert command is not None, "reproduce() checks that a child can load the data"
    label = f"{method} {bits} bits" + (f" seed {seed}" if len(config.seeds) > 1 else "")
    isolation.run_cell_process(command["argv"], label)
    cell = finished_cell(config.out, method, bits, settings)
    if cell is None:
        raise isolation.CellProcessError(label, 0,
                                         ["error: it exited 0 without writing its cell.json"],
                                         command["shell"])
    return cell


def table_data(data, config: ReproduceConfig):
    """``data`` with the table's validation split held out (what every cell's process
    loads from its flags); data that holds a validation split must hold this one."""
    if not data.has_validation:
        return hold_out_validation(data, config.validation_fraction, config.validation_seed)
    held = data.description.get("validation", {})
    if (held.get("fraction"), held.get("seed")) != (config.validation_fraction,
                                                      config.validation_seed):
        raise ValueError(f"the data holds a validation split of fraction {held.get('fraction')} "
                         f"(seed {held.get('seed')}), the table asks for "
                         f"{config.validation_fraction} (seed {config.validation_seed})")
    return data


def check_cells(config: ReproduceConfig, data, work) -> None:
    """Before any cell runs: every finished cell, and every interrupted deep cell, of
    ``work`` ((row, bits, seed) triples) must have this table's settings (a refusal
    names the cell and the settings), and every row's method must accept them.

    Raises:
        CellSettingsError: a cell was made or started with other settings.
        ValueError: a row's method refuses its settings.
    """
    for method, bits, seed in work:
        settings = cell_settings(config, data, method, seed)
        if finished_cell(config.out, method, bits, settings) is None and \
                registry.is_deep(method):
            check_started_cell(config.out, method, bits, settings)


def write_text_whole(path: str, text: str) -> None:
    """Write ``path`` so that a reader sees the old file or the new one, never a part."""
    with replaced_whole(path) as tmp:
        with open(tmp, "w", encoding="utf-8") as f:
            f.write(text)


def reproduce(config: ReproduceConfig, data) -> dict[tuple[str, int, int], dict]:
    """Run (or reuse) every cell, then write results.md, results.csv and the figures.

    Each deep cell runs in a process of its own (see :func:`run_isolated_cell`). The
    folder is locked against a second harness, except with ``finished_only``, which runs
    nothing and so may write the tables while a harness runs (every file it writes is
    replaced whole).

    Args:
        config: methods, bit lengths, training settings, output folder.
        data: a :class:`common.training.data.SplitData`.

    Returns:
        {(row, bits, seed): cell record (see common.reproduce.cells)}.
    """
    config.validate()
    if config.validation_fraction and config.checkpoint != "best_map" and \
            any(registry.is_deep(m) for m in config.methods):
        logging.warning("--validation_fraction %g holds that share of the train split out of "
                        "training and of the database, but --checkpoint %s does not choose its "
                        "state on it: use --validation_fraction 0 to train on all of it",
                        config.validation_fraction, config.checkpoint)
    data = table_data(data, config)
    if any(registry.is_deep(m) for m in config.methods):
        isolation.data_flags(data.description)  # a child must be able to load the data
    os.makedirs(config.out, exist_ok=True)
    cells = {}
    with contextlib.nullcontext() if config.finished_only else run_lock(config.out):
        work = [(m, b, s) for b in config.bits for m in config.methods for s in config.seeds]
        # seeds last within a bit length: a table fills column by column, seed 0 first
        work.sort(key=lambda c: (config.seeds.index(c[2]), config.bits.index(c[1])))
        if not config.finished_only:
            check_cells(config, data, work)
        missing = []
        for i, (method, bits, seed) in enumerate(work, start=1):
            settings = cell_settings(config, data, method, seed)
            if config.finished_only:
                cell = finished_cell(config.out, method, bits, settings)
                if cell is None:
                    missing.append((method, bits, seed))
                else:
                    cells[method, bits, seed] = cell
                continue
            logging.info("cell %d/%d: %s, %d bits, seed %d", i, len(work), method, bits, seed)
            cells[method, bits, seed] = run_isolated_cell(config, method, bits, data, settings,
                                                          seed)
        if missing:  # the figures compare every row of one seed: only with all of them
            logging.info("%d of %d cells not finished (shown as -)", len(missing), len(work))
            figures = []
        else:
            first = {(m, b): cells[m, b, config.seeds[0]] for m in config.methods
                     for b in config.bits}
            figures = write_figures(config.out, first, config.methods, config.bits, data)
            if not figures:
                logging.warning("matplotlib is not installed: no figures "
                                "(pip install -e '.[plots]')")
        settings = cell_settings(config, data)
        write_text_whole(os.path.join(config.out, RESULTS_MD),
                         results_markdown(cells, config.methods, config.bits, config.seeds,
                                          settings, environment(), figures, missing))
        write_text_whole(os.path.join(config.out, RESULTS_CSV),
                         results_csv(cells, config.methods, config.bits, config.seeds))
    return cells
