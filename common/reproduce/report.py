"""results.md and results.csv: the paper's table layout (rows methods, columns bits)."""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from common.metrics import METRIC_KEYS
from common.reproduce.cells import HAMMINGS
from common.reproduce.methods import DISPLAY_NAMES, is_deep

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
CSV_FIELDS = ("method", "bits", "hamming", "ties", *METRIC_KEYS, "wall_seconds", "checkpoint",
              "state_epoch")


def table(cells: dict[tuple[str, int], dict], methods, bits, metric: str, hamming: str) -> str:
    """One markdown table: rows methods, columns bit lengths; best of each column in bold."""
    lines = ["| method | " + " | ".join(f"{b} bits" for b in bits) + " |",
             "|---" * (len(bits) + 1) + "|"]
    best = {b: max((cells[m, b]["figures"][hamming][metric] for m in methods if (m, b) in cells),
                   default=None) for b in bits}
    for m in methods:
        row = []
        for b in bits:
            cell = cells.get((m, b))
            if cell is None:
                row.append("-")
                continue
            value = cell["figures"][hamming][metric]
            text = f"{value:.4f}"
            row.append(f"**{text}**" if value == best[b] and len(methods) > 1 else text)
        lines.append(f"| {DISPLAY_NAMES.get(m, m)} | " + " | ".join(row) + " |")
    return "\n".join(lines)


def reproducibility(cells, settings: dict[str, Any], environment: dict[str, Any]) -> str:
    """How each cell was run, and how far a re-run of its recorded command may differ."""
    unisolated = [f"{m}_{b}" for (m, b) in sorted(cells)
                  if is_deep(m) and not cells[m, b].get("command")]
    text = ("Every deep cell ran in a process of its own (`python -m "
            "common.reproduce.run_cell ...`; the exact command is `command` in "
            "`cells/<method>_<bits>/cell.json`), so its figures depend on its settings and "
            "data only, never on the cells run before it. ITQ and LSH are numpy functions of "
            "the data, the bit length and their own seeded generator; they ran in the "
            "harness's process. Re-running a cell's command with another `--out` re-runs it "
            "alone (with the same `--out` it reuses the finished cell).")
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


def results_markdown(cells, methods, bits, settings: dict[str, Any], environment: dict[str, Any],
                     figures: list[str]) -> str:
    out = io.StringIO()
    out.write("# Retrieval results\n\n")
    out.write(f"Data: **{settings['dataset']}** ({settings['train_images']} database / train "
              f"images, {settings['test_images']} queries / test images, "
              f"{settings['num_classes']} identities). Queries: the test split; database: the "
              "train split; relevant: same identity. Deep methods: "
              f"{settings['epochs']} epochs, batch {settings['batch_size']}, "
              f"{'shuffled' if settings['shuffle'] else 'file order'}, seed {settings['seed']}, "
              f"network width x{settings['width_multiplier']} (every deep method but DDH, "
              "whose network is small), state "
              f"`{settings['checkpoint']}`. Ties between equal distances: "
              f"**{settings['ties']}** "
              f"({'by database index' if settings['ties'] == 'index' else 'exact expectation over a random order'}).\n\n")
    for hamming in HAMMINGS:
        out.write(f"## Under the {HAMMING_TITLES[hamming]}\n\n")
        for metric in METRIC_KEYS:
            title = METRIC_TITLES[metric].format(**settings)
            out.write(f"### {title}\n\n{table(cells, methods, bits, metric, hamming)}\n\n")
    out.write("## Wall time per cell (seconds, this session's part for resumed cells)\n\n")
    out.write("| method | " + " | ".join(f"{b} bits" for b in bits) + " |\n")
    out.write("|---" * (len(bits) + 1) + "|\n")
    for m in methods:
        row = [f"{cells[m, b]['wall_seconds']:.0f}" if (m, b) in cells else "-" for b in bits]
        out.write(f"| {DISPLAY_NAMES.get(m, m)} | " + " | ".join(row) + " |\n")
    out.write(f"\n## Reproducibility\n\n{reproducibility(cells, settings, environment)}\n")
    if figures:
        out.write("\n## Figures\n\n")
        for path in figures:
            out.write(f"![{os.path.splitext(path)[0]}]({path})\n\n")
    out.write("\n## Settings and environment\n\n```\n")
    for key, value in {**settings, **environment}.items():
        out.write(f"{key}: {value}\n")
    out.write("```\n")
    return out.getvalue()


def results_csv(cells, methods, bits) -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=CSV_FIELDS, lineterminator="\n")
    writer.writeheader()
    for m in methods:
        for b in bits:
            cell = cells.get((m, b))
            if cell is None:
                continue
            for hamming in HAMMINGS:
                writer.writerow({"method": m, "bits": b, "hamming": hamming,
                                 "ties": cell["settings"]["ties"],
                                 **cell["figures"][hamming],
                                 "wall_seconds": round(cell["wall_seconds"], 3),
                                 "checkpoint": cell.get("checkpoint", ""),
                                 "state_epoch": cell.get("state_epoch", "")})
    return out.getvalue()
