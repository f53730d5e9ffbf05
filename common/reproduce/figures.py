"""PNG figures of a harness run (matplotlib, an optional extra: pip install .[plots])."""

from __future__ import annotations

import os

import numpy as np

from common.reproduce.curves import ranking
from common.reproduce.layout import replaced_whole
from common.reproduce.methods import display_name

PR_FIGURE = "precision_recall_radius.png"
PK_FIGURE = "precision_at_k.png"
GRID_FIGURE = "retrieval_grid.png"


def matplotlib_pyplot():
    """pyplot on the file-only Agg backend, or None when matplotlib is not installed."""
    try:
        import matplotlib
    except ImportError:
        return None
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt
    return plt


def _save(plt, fig, path: str) -> None:
    """The PNG written whole (a reader never sees a part: --finished_only may write the
    figures while a harness does), and the figure closed."""
    with replaced_whole(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


def _panels(plt, count: int):
    fig, axes = plt.subplots(1, count, figsize=(4.2 * count, 3.8), squeeze=False)
    return fig, axes[0]


def _curve_figure(plt, cells, methods, bits, path: str, curve: str, x: str, y: str,
                  axis: dict, ylabel: str, title: str) -> None:
    """One panel per bit length, one line per method, from each cell's ``curves[curve]``."""
    fig, axes = _panels(plt, len(bits))
    for ax, b in zip(axes, bits):
        for m in methods:
            cell = cells.get((m, b))
            if cell is not None:
                points = cell["curves"][curve]
                ax.plot(points[x], points[y], marker=".", label=display_name(m))
        ax.set(title=f"{b} bits", **axis)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(ylabel)
    axes[-1].legend(loc="best", fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    _save(plt, fig, path)


def precision_recall_figure(plt, cells, methods, bits, path: str) -> None:
    """Per bit length: precision vs recall of the items within Hamming radius r = 0..bits."""
    _curve_figure(plt, cells, methods, bits, path, "radius", "recall", "precision",
                  dict(xlabel="recall within radius r", xlim=(0, 1.02), ylim=(0, 1.02)),
                  "precision within radius r",
                  "Precision-recall over Hamming radii (exact distance)")


def precision_at_k_figure(plt, cells, methods, bits, path: str) -> None:
    """Per bit length: precision of the top K against K (log scale)."""
    _curve_figure(plt, cells, methods, bits, path, "precision_at_k", "k", "precision",
                  dict(xlabel="K (returned items)", xscale="log", ylim=(0, 1.02)),
                  "precision@K", "Precision of the top K (exact distance, index ties)")


def _show(image: np.ndarray) -> np.ndarray:
    """A preprocessed image min-max scaled to [0, 1] for display."""
    low, high = float(image.min()), float(image.max())
    return (image - low) / (high - low) if high > low else np.zeros_like(image)


def retrieval_grid_figure(plt, codes: dict, data, title: str, path: str, num_queries: int = 8,
                          top: int = 10) -> None:
    """Queries (first column) with their ``top`` nearest database images; wrong ones in red.

    Queries are the first test image of evenly spaced identities, so the grid is the
    same for every run on the same data.
    """
    labels = data.test_labels
    identities = np.unique(labels)
    chosen = identities[np.linspace(0, len(identities) - 1, min(num_queries, len(identities)))
                        .astype(int)]
    rows = [int(np.flatnonzero(labels == i)[0]) for i in chosen]
    order = ranking(codes["query_codes"][rows], codes["db_codes"], top)
    fig, axes = plt.subplots(len(rows), top + 1, figsize=(1.1 * (top + 1), 1.2 * len(rows)),
                             squeeze=False)
    for r, (q, ranked) in enumerate(zip(rows, order)):
        axes[r, 0].imshow(_show(data.test_images[q]))
        axes[r, 0].set_title("query", fontsize=7)
        for c, index in enumerate(ranked, start=1):
            ax = axes[r, c]
            ax.imshow(_show(data.train_images[index]))
            wrong = data.train_labels[index] != labels[q]
            for spine in ax.spines.values():
                spine.set_visible(True)
                spine.set_color("red" if wrong else "green")
                spine.set_linewidth(2.5)
            if wrong:
                ax.set_title("x", fontsize=8, color="red")
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    _save(plt, fig, path)


def write_figures(out: str, cells, methods, bits, data) -> list[str]:
    """All figures into ``out``; returns their file names (empty without matplotlib)."""
    plt = matplotlib_pyplot()
    if plt is None:
        return []
    precision_recall_figure(plt, cells, methods, bits, os.path.join(out, PR_FIGURE))
    precision_at_k_figure(plt, cells, methods, bits, os.path.join(out, PK_FIGURE))
    names = [PR_FIGURE, PK_FIGURE]
    best = max(cells.values(), key=lambda c: (c["bits"], c["figures"]["exact"]["map"]))
    from common.reproduce.layout import CODES_FILE, cell_dir
    codes = np.load(os.path.join(cell_dir(out, best["method"], best["bits"],
                                          best["settings"].get("seed", 0)), CODES_FILE))
    retrieval_grid_figure(
        plt, codes, data, f"{display_name(best['method'])}, "
        f"{best['bits']} bits (mAP {best['figures']['exact']['map']:.3f}): queries and their "
        "top 10; red = another identity", os.path.join(out, GRID_FIGURE))
    names.append(GRID_FIGURE)
    return names
