"""results.md and results.csv: the paper's table layout (rows methods, columns bits)."""

from __future__ import annotations

import csv
import io
import os
from typing import Any, Sequence

from common.metrics import METRIC_KEYS
from common.reproduce.cells import HAMMINGS
from common.reproduce.methods import display_name, is_deep, row_width


def _tie_rule(ties: str) -> str:
    return "by database index" if ties == "index" else "exact expectation over a random order"


METRIC_TITLES = {
    "map": "mAP",
    "precision_at_k": "precision@{top_k}",
    "precision_within_radius": "precision within Hamming radius {radius}",
    "recall_within_radius": "recall within Hamming radius {radius}",
}
HAMMING_TITLES = {"exact": "exact Hamming distance",
                  "legacy": "original evaluation's legacy distance (bit 7 of every byte lost)"}
# What re-runs of one cell were measured to give (common/reproduce/isolation.py runs each
# deep cell alone; see README "Reproducing the table").
RERUN_MEASURED = (
    "Measured 2026-12-01 on a 2-vCPU AMD EPYC machine without GPU (TensorFlow 2.21.0, "
    "Keras 3.15.1), each cell's command run twice in fresh processes, also under heavy load "
    "from other jobs: the same per-epoch losses to the last bit and identical codes, without "
    "`--deterministic` (DCBH and DDH at 48 bits on LFW, 3 epochs, evaluated every epoch; DDH "
    "at 12 bits on synthetic faces) and with it (DCBH 48 bits on LFW; DDH 12 bits synthetic). "
    "What does change the numbers: `--deterministic` itself (TensorFlow then picks other CPU "
    "kernels: DCBH 48 bits on LFW, epoch-1 loss 11.4194 with it, 11.4111 without; so it is a "
    "cell setting: cells finished without it are not reused with it), the number of CPU "
    "threads (1 instead of 2 gave other codes after 2 epochs), and presumably another CPU "
    "type, a GPU or other software versions. Such a change makes a re-run another sample of "
    "training noise: expect differences of the order of the seed-to-seed spread (DCBH at 48 "
    "bits on LFW, 30 epochs: mAP 0.355 to 0.395 over seeds 0 to 2, docs/RESULTS.md).")
CSV_FIELDS = ("method", "bits", "seed", "hamming", "ties", *METRIC_KEYS, "selected_on",
              "trainable_weights", "multiply_adds", "wall_seconds", "checkpoint", "state_epoch",
              "validation_map")


def _header(bits) -> list[str]:
    """The first two lines of a table with a row per method and a column per bit length."""
    return ["| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
            "|---" * (len(bits) + 1) + "|"]


def seed_values(cells, row: str, bits: int, seeds, value) -> list[float]:
    """``value(cell)`` of every finished seed of a row at a bit length."""
    return [value(cells[row, bits, s]) for s in seeds if (row, bits, s) in cells]


def mean_sd(values: list[float]) -> tuple[float, float | None]:
    """Mean and sample standard deviation (None for a single value)."""
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, (sum((v - mean) ** 2 for v in values) / (len(values) - 1)) ** 0.5


def _shown(values: list[float]) -> str:
    mean, sd = mean_sd(values)
    return f"{mean:.4f}" if sd is None else f"{mean:.4f} +- {sd:.4f}"


def table(cells: dict, methods, bits, seeds, metric: str, hamming: str) -> str:
    """One markdown table: rows methods, columns bit lengths (mean +- sample sd over the
    seeds where several ran); the best mean of each column in bold."""
    figure = lambda cell: cell["figures"][hamming][metric]  # noqa: E731
    means = {(m, b): mean_sd(v)[0] for m in methods for b in bits
             if (v := seed_values(cells, m, b, seeds, figure))}
    best = {b: max((means[m, b] for m in methods if (m, b) in means), default=None)
            for b in bits}
    lines = _header(bits)
    for m in methods:
        row = []
        for b in bits:
            values = seed_values(cells, m, b, seeds, figure)
            if not values:
                row.append("-")
                continue
            text = _shown(values)
            row.append(f"**{text}**" if means[m, b] == best[b] and len(methods) > 1 else text)
        lines.append(f"| {display_name(m)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def _count(n: int) -> str:
    """1234567 -> "1.23M"; 45678 -> "45.7k"."""
    for unit, size in (("G", 1e9), ("M", 1e6), ("k", 1e3)):
        if n >= size:
            return f"{n / size:.3g}{unit}"
    return str(n)


def size_table(cells: dict, methods, bits, seeds) -> str:
    """Trainable weights and multiply-adds per image of every row at every bit length."""
    lines = _header(bits)
    for m in methods:
        row = []
        for b in bits:
            cell = next((cells[m, b, s] for s in seeds if (m, b, s) in cells), None)
            size = (cell or {}).get("size")
            row.append(f"{_count(size['trainable_weights'])} / {_count(size['multiply_adds'])}"
                       if size else "-")
        lines.append(f"| {display_name(m)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def chosen_states(cells, methods, bits, seeds) -> str:
    """The validation mAP on which each deep row's state was chosen, and the chosen epochs.

    Why: the table's figures are the test split's; a reader judging the selection needs the
    figure it was made on (a row far better on validation than on test was lucky in its
    choice) and when the chosen state was (an early epoch means later ones scored lower)."""
    lines = _header(bits)
    for m in methods:
        if not is_deep(m):
            continue
        row = []
        for b in bits:
            done = [cells[m, b, s] for s in seeds if (m, b, s) in cells
                    and cells[m, b, s].get("validation_figures", {}).get("map") is not None]
            if not done:
                row.append("-")
                continue
            epochs = ", ".join(str(c.get("state_epoch", "?")) for c in done)
            row.append(f"{_shown([c['validation_figures']['map'] for c in done])} "
                       f"(epoch{'s' if len(done) > 1 else ''} {epochs})")
        lines.append(f"| {display_name(m)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def seed_list(cells, methods, bits, seeds) -> str:
    """Per-seed mAP (exact distance) of every row and bit length that ran several seeds."""
    lines = []
    for m in methods:
        for b in bits:
            done = [s for s in seeds if (m, b, s) in cells]
            if len(done) > 1:
                shown = " / ".join(f"{cells[m, b, s]['figures']['exact']['map']:.4f}"
                                   for s in done)
                lines.append(f"* {display_name(m)}, {b} bits, seeds "
                             f"{', '.join(map(str, done))}: {shown}")
    return "\n".join(lines)


def reproducibility(cells, settings: dict[str, Any], environment: dict[str, Any]) -> str:
    """How each cell was run, and how far a re-run of its recorded command may differ."""
    unisolated = [f"{m}_{b}" for (m, b, _) in sorted(cells)
                  if is_deep(m) and not cells[m, b, _].get("command")]
    text = ("Every deep cell ran in a process of its own (`python -m "
            "common.reproduce.run_cell ...`; the exact command is `command` in "
            "`cells/<method>_<bits>[_s<seed>]/cell.json`), so its figures depend on its "
            "settings and data only, never on the cells run before it. ITQ and LSH are numpy "
            "functions of the data, the bit length and their own seeded generator; they ran in "
            "the harness's process. Re-running a cell's command with another `--out` re-runs "
            "it alone (with the same `--out` it reuses the finished cell).")
    if unisolated:
        text += (" Exception, cells made by an earlier harness in one process with other "
                 f"cells (they record no command): {', '.join(unisolated)}.")
    gpu = "GPU: none" not in str(environment.get("machine", ""))
    same = ("on the same machine type (CPU or GPU model, thread count) with the same "
            "software versions")
    if settings.get("deterministic"):
        text += ("\n\nThese cells ran with `--deterministic` (TensorFlow op determinism): "
                 f"re-running a cell's command {same} gives bit-identical codes, hence the "
                 "same figures.")
    elif gpu:
        text += ("\n\nThese cells ran without `--deterministic` on a GPU, where TensorFlow "
                 "promises no repeatable results (not measured here): a re-run may differ from "
                 "the first epochs on. Use `--deterministic` for bit-identical re-runs.")
    else:
        text += ("\n\nThese cells ran without `--deterministic`, on CPU: re-running a cell's "
                 f"command {same} gave bit-identical codes even so (measured below).")
    return text + "\n\n" + RERUN_MEASURED


CHECKPOINT_STATES = {"best_loss": "the epoch of the lowest mean training loss",
                     "last": "the last epoch"}


def state_phrase(checkpoint: str, split: str) -> str:
    """How one deep run's tabulated state was chosen, in a few words (``split``: the one
    ``best_map`` was chosen on, "validation" or "test")."""
    if checkpoint == "best_map":
        return f"state best_map chosen on the {split} split"
    return f"state {checkpoint}: {CHECKPOINT_STATES.get(checkpoint, checkpoint)}"


def selection_text(settings: dict[str, Any]) -> str:
    """How the tabulated state of each deep run was chosen, in one sentence, by checkpoint:
    ``best_map`` on the validation split (or the test split, labelled as such),
    ``best_loss`` on the training loss, ``last`` the last epoch."""
    checkpoint = settings["checkpoint"]
    fraction = settings.get("validation_fraction", 0.0)
    split = (f"a **validation split** ({fraction:g} of each identity's train images, drawn "
             f"with seed {settings.get('validation_seed', 0)}, the same for every row and seed; "
             "the database is the train split without them)")
    if checkpoint == "best_map":
        if fraction:
            return (f"state `best_map` (the highest mAP of the evaluated states) chosen on "
                    f"{split}, then scored once on the test split")
        return ("state `best_map` (the highest mAP of the evaluated states) chosen **on the "
                "test split itself** (no validation split, the original code's way: this "
                "flatters every deep method, unstable ones most)")
    text = (f"state `{checkpoint}`: {CHECKPOINT_STATES.get(checkpoint, checkpoint)} (chosen "
            "on no retrieval figure), scored once on the test split")
    if fraction:
        text += f"; {split} was held out of training, though it chooses nothing"
    return text


def results_markdown(cells, methods, bits, seeds, settings: dict[str, Any],
                     environment: dict[str, Any], figures: list[str],
                     missing: Sequence[tuple[str, int, int]] = ()) -> str:
    """The table's page: every metric under both distances, sizes, times, how it was run.

    ``cells``: {(row, bits, seed): cell.json}; ``missing``: the (row, bits, seed) cells not
    finished (``--finished_only``), listed so that no mean is read as over every seed.
    """
    out = io.StringIO()
    out.write("# Retrieval results\n\n")
    held = settings.get("validation_fraction", 0.0)
    widths = sorted({w for m in methods if (w := row_width(m, settings["width_multiplier"]))
                     is not None})
    out.write(f"Data: **{settings['dataset']}** ({settings['train_images']} database / train "
              f"images{', validation rows held out of them' if held else ''}"
              + (f", and {settings['extra_train_images']} extra training rows of the deep "
                 "rows that are neither database nor validation items"
                 if settings.get("extra_train_images") else "")
              + f", {settings['test_images']} queries / test images, "
              f"{settings['num_classes']} identities). Queries: the test split; database: the "
              "train split; relevant: same identity. Deep methods: "
              f"{settings['epochs']} epochs, batch {settings['batch_size']}, "
              f"{'shuffled' if settings['shuffle'] else 'file order'}, "
              f"seed{'s' if len(seeds) > 1 else ''} {', '.join(map(str, seeds))}"
              f"{' (mean +- sample standard deviation over them)' if len(seeds) > 1 else ''}, "
              f"network width x{settings['width_multiplier']} (every deep method but DDH, "
              "whose network has one size; a row named with its own width trains at that "
              f"width{'; widths here: ' + ', '.join(f'{w:g}' for w in widths) if widths else ''}), "
              f"{selection_text(settings)}. Ties between equal distances: "
              f"**{settings['ties']}** "
              f"({_tie_rule(settings['ties'])}).\n\n")
    if missing:
        listed = ", ".join(f"{display_name(m)} {b} bits seed {s}" for m, b, s in missing)
        out.write(f"**Not finished: {len(missing)} of "
                  f"{len(methods) * len(bits) * len(seeds)} cells** (shown as - or left out "
                  f"of a mean, which is then over the seeds that finished): {listed}.\n\n")
    out.write("## Size: trainable weights / multiply-adds to code one image\n\n")
    out.write(f"{size_table(cells, methods, bits, seeds)}\n\n(Weights: every trainable "
              "weight of the trained network, classifier heads and centers included; ITQ and "
              "LSH: their fitted projection. Multiply-adds: the convolutions and matrix "
              "products of coding one 32x32 image, common/models/size.py.)\n\n")
    for hamming in HAMMINGS:
        out.write(f"## Under the {HAMMING_TITLES[hamming]}\n\n")
        for metric in METRIC_KEYS:
            title = METRIC_TITLES[metric].format(**settings)
            out.write(f"### {title}\n\n{table(cells, methods, bits, seeds, metric, hamming)}"
                      "\n\n")
    if held and settings.get("checkpoint", "best_map") != "best_map":
        out.write("## The tabulated states: validation mAP (exact distance, ties by index) "
                  "and epoch\n\n"
                  f"{chosen_states(cells, methods, bits, seeds)}\n\n(Each deep row's "
                  f"`{settings['checkpoint']}` state, not chosen on this figure, over the same "
                  "seeds as the tables above, and its epoch per seed.)\n\n")
    elif held:
        out.write("## The chosen states: validation mAP (exact distance, ties by index) and "
                  "epoch\n\n"
                  f"{chosen_states(cells, methods, bits, seeds)}\n\n(The figure each deep "
                  "row's state was chosen on, over the same seeds as the tables above, and the "
                  "chosen state's epoch per seed; the tables above score that state on the "
                  "test split.)\n\n")
    per_seed = seed_list(cells, methods, bits, seeds)
    if per_seed:
        out.write(f"## mAP of each seed (exact distance)\n\n{per_seed}\n\n")
    out.write("## Wall time per cell (seconds, this session's part for resumed cells; mean "
              "over seeds)\n\n")
    out.write("\n".join(_header(bits)) + "\n")
    for m in methods:
        row = []
        for b in bits:
            times = seed_values(cells, m, b, seeds, lambda c: c["wall_seconds"])
            row.append(f"{mean_sd(times)[0]:.0f}" if times else "-")
        out.write(f"| {display_name(m)} | " + " | ".join(row) + " |\n")
    out.write(f"\n## Reproducibility\n\n{reproducibility(cells, settings, environment)}\n")
    if figures:
        out.write(f"\n## Figures (seed {seeds[0]})\n\n")
        for path in figures:
            out.write(f"![{os.path.splitext(path)[0]}]({path})\n\n")
    out.write("\n## Settings and environment\n\n```\n")
    for key, value in {**settings, "seeds": seeds, **environment}.items():
        if key != "seed":
            out.write(f"{key}: {value}\n")
    out.write("```\n")
    return out.getvalue()


def results_csv(cells, methods, bits, seeds) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for m in methods:
        for b in bits:
            for seed in seeds:
                cell = cells.get((m, b, seed))
                if cell is None:
                    continue
                size = cell.get("size") or {}
                for hamming in HAMMINGS:
                    writer.writerow({"method": m, "bits": b, "seed": seed, "hamming": hamming,
                                     "ties": cell["settings"]["ties"],
                                     **cell["figures"][hamming],
                                     "selected_on": cell.get("selected_on", ""),
                                     "trainable_weights": size.get("trainable_weights", ""),
                                     "multiply_adds": size.get("multiply_adds", ""),
                                     "wall_seconds": round(cell["wall_seconds"], 3),
                                     "checkpoint": cell.get("checkpoint", ""),
                                     "state_epoch": cell.get("state_epoch", ""),
                                     # chosen under the exact distance: on those rows only
                                     "validation_map": (cell.get("validation_figures") or {})
                                     .get("map", "") if hamming == "exact" else ""})
    return out.getvalue()
