"""results.md and results.csv: the paper's table layout (rows methods, columns bits)."""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from common.metrics import METRIC_KEYS
from common.reproduce.cells import HAMMINGS
from common.reproduce.methods import DISPLAY_NAMES

METRIC_TITLES = {
    "map": "mAP",
    "precision_at_k": "precision@{top_k}",
    "precision_within_radius": "precision within Hamming radius {radius}",
    "recall_within_radius": "recall within Hamming radius {radius}",
}
HAMMING_TITLES = {"exact": "exact Hamming distance",
                  "legacy": "original evaluation's legacy distance (bit 7 of every byte lost)"}
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
              f"backbone width x{settings['width_multiplier']} (DCBH/DDCH), state "
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
