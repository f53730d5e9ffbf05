"""Unsupervised pixel baselines of the face-hashing tables: LSH and ITQ.

Both work on the preprocessed pixels, flattened (n, 3072), and return real-valued
projections whose sign is the code (0 -> +1, as every evaluator here binarises).

* LSH (Charikar 2002, sign random projections): centre with the train mean, project on
  ``num_bits`` Gaussian directions.
* ITQ (Gong & Lazebnik, CVPR 2011): centre, PCA to ``num_bits`` dimensions, then an
  orthogonal rotation R minimising ||B - V R||_F by alternating B = sign(V R) and the
  orthogonal Procrustes solution R = U W^T of V^T B = U S W^T (50 iterations, random
  orthogonal start, as the authors' code).

Pure numpy, seeded, float64 internally.
"""

from __future__ import annotations

import numpy as np


def _as_rows(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x)
    if x.ndim > 2:
        x = x.reshape(len(x), -1)
    if x.ndim != 2 or len(x) == 0:
        raise ValueError(f"expected a non-empty (n, d) array, got shape {x.shape}")
    return x.astype(np.float64, copy=False)


def binarize(projections: np.ndarray) -> np.ndarray:
    """+-1 int8 codes from projections (0 -> +1)."""
    return np.where(np.asarray(projections) >= 0, 1, -1).astype(np.int8)


class LSH:
    """Sign random projections of centred inputs.

    Args:
        num_bits: code length.
        seed: seeds the projection directions.

    Example:
        >>> lsh = LSH(48, seed=0).fit(train_rows)
        >>> codes = binarize(lsh.project(test_rows))
    """

    name = "lsh"

    def __init__(self, num_bits: int, seed: int = 0):
        if num_bits < 1:
            raise ValueError(f"num_bits must be >= 1, got {num_bits}")
        self.num_bits, self.seed = int(num_bits), int(seed)
        self.mean: np.ndarray | None = None
        self.directions: np.ndarray | None = None

    def fit(self, x: np.ndarray) -> "LSH":
        x = _as_rows(x)
        self.mean = x.mean(axis=0)
        rng = np.random.default_rng(self.seed)
        self.directions = rng.standard_normal((x.shape[1], self.num_bits))
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        if self.directions is None or self.mean is None:
            raise RuntimeError("call fit() first")
        x = _as_rows(x)
        if x.shape[1] != len(self.mean):
            raise ValueError(f"expected rows of width {len(self.mean)}, got {x.shape[1]}")
        return (x - self.mean) @ self.directions


class ITQ:
    """Iterative quantization: PCA then the rotation that best fits the binary corners.

    Args:
        num_bits: code length (at most the input width and the number of train rows).
        iterations: alternating steps (the authors used 50).
        seed: seeds the random orthogonal start.

    Attributes (after ``fit``):
        mean, components (d, bits) PCA directions, rotation (bits, bits) orthogonal,
        losses: ||B - V R||_F^2 after each iteration (non-increasing).
    """

    name = "itq"

    def __init__(self, num_bits: int, iterations: int = 50, seed: int = 0):
        if num_bits < 1:
            raise ValueError(f"num_bits must be >= 1, got {num_bits}")
        if iterations < 0:
            raise ValueError(f"iterations must be >= 0, got {iterations}")
        self.num_bits, self.iterations, self.seed = int(num_bits), int(iterations), int(seed)
        self.mean: np.ndarray | None = None
        self.components: np.ndarray | None = None
        self.rotation: np.ndarray | None = None
        self.losses: list[float] = []

    def fit(self, x: np.ndarray) -> "ITQ":
        x = _as_rows(x)
        n, d = x.shape
        if self.num_bits > min(n, d):
            raise ValueError(f"ITQ needs num_bits <= min(rows, width) = {min(n, d)}, "
                             f"got {self.num_bits}")
        self.mean = x.mean(axis=0)
        centred = x - self.mean
        # PCA through the d x d covariance (d = 3072 here; n may be larger).
        covariance = centred.T @ centred / n
        eigenvalues, eigenvectors = np.linalg.eigh(covariance)
        order = np.argsort(eigenvalues)[::-1][:self.num_bits]
        self.components = eigenvectors[:, order]
        v = centred @ self.components
        rng = np.random.default_rng(self.seed)
        rotation, _ = np.linalg.qr(rng.standard_normal((self.num_bits, self.num_bits)))
        self.losses = []
        for _ in range(self.iterations):
            b = np.where(v @ rotation >= 0, 1.0, -1.0)
            u, _, wt = np.linalg.svd(v.T @ b)
            rotation = u @ wt
            self.losses.append(float(np.sum((b - v @ rotation) ** 2)))
        self.rotation = rotation
        return self

    def project(self, x: np.ndarray) -> np.ndarray:
        if self.rotation is None or self.mean is None or self.components is None:
            raise RuntimeError("call fit() first")
        x = _as_rows(x)
        if x.shape[1] != len(self.mean):
            raise ValueError(f"expected rows of width {len(self.mean)}, got {x.shape[1]}")
        return (x - self.mean) @ self.components @ self.rotation


BASELINES = {"lsh": LSH, "itq": ITQ}
