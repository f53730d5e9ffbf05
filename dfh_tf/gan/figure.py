"""The real-vs-generated grid: real training faces, each followed by G's variants.

matplotlib is imported on first use (Agg backend, files only), so training never
needs a display and importing this module costs nothing.
"""

from __future__ import annotations

import os

import numpy as np

from dfh_tf.gan.sampling import draw_noise, generate


def pick_sources(labels: np.ndarray, rows: int, seed: int) -> np.ndarray:
    """Indices of ``rows`` images of different identities (seeded; fewer identities: repeats)."""
    rng = np.random.default_rng([seed, 4])
    identities = np.unique(labels)
    chosen = rng.permutation(identities)[:rows]
    picks = [int(rng.choice(np.flatnonzero(labels == k))) for k in chosen]
    while len(picks) < rows:
        picks.append(int(rng.integers(len(labels))))
    return np.asarray(picks)


def sample_grid(generator, images: np.ndarray, labels: np.ndarray, noise_dim: int, seed: int,
                rows: int = 8, variants: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """(rows, 1 + variants, 32, 32, 3) images in [-1, 1]: each source then its variants;
    and the rows' labels."""
    idx = pick_sources(labels, rows, seed)
    sources = images[idx]
    repeated = np.repeat(sources, variants, axis=0)
    rng = np.random.default_rng([seed, 5])
    fakes = generate(generator, repeated, draw_noise(rng, len(repeated), noise_dim))
    grid = np.concatenate([sources[:, None], fakes.reshape(rows, variants, 32, 32, 3)], 1)
    return grid, labels[idx]


def save_grid_png(grid: np.ndarray, row_labels: np.ndarray, path: str, title: str = "") -> None:
    """Write the grid as a PNG (first column: the real source, framed)."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    import matplotlib.pyplot as plt

    rows, cols = grid.shape[:2]
    fig, axes = plt.subplots(rows, cols, figsize=(1.15 * cols + 0.3, 1.15 * rows + 0.5),
                             squeeze=False)
    for r in range(rows):
        for c in range(cols):
            ax = axes[r, c]
            ax.imshow(np.clip((grid[r, c] + 1.0) / 2.0, 0.0, 1.0), interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(c == 0)
                spine.set_linewidth(2.0)
                spine.set_color("tab:blue")
            if r == 0:
                ax.set_title("real" if c == 0 else f"G(x, z{c})", fontsize=8)
            if c == 0:
                ax.set_ylabel(f"id {int(row_labels[r])}", fontsize=7)
    if title:
        fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    fig.savefig(tmp, dpi=80)
    plt.close(fig)
    os.replace(tmp, path)


def write_samples(generator, images: np.ndarray, labels: np.ndarray, noise_dim: int, seed: int,
                  path: str, title: str = "", rows: int = 8, variants: int = 5) -> str:
    """G's variants of ``rows`` training faces of different identities, saved to ``path``."""
    grid, row_labels = sample_grid(generator, images, labels, noise_dim, seed, rows, variants)
    save_grid_png(grid, row_labels, path, title)
    return path
