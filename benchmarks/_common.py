"""Shared helpers of the benchmark scripts: baselines, timing, tables, JSON output."""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))


def peak_rss_gb() -> float:
    """Peak resident memory of this process so far (GB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024**2


def timed(f, *a, **kw):
    t = time.perf_counter()
    out = f(*a, **kw)
    return out, time.perf_counter() - t


def pca_scores(X: np.ndarray, q: int) -> np.ndarray:
    Xc = X - X.mean(0)
    U, s, _ = np.linalg.svd(Xc, full_matrices=False)
    return U[:, :q] * s[:q]


def pca_kmeans(X, q, K, seed=0):
    from sklearn.cluster import KMeans

    return KMeans(K, n_init=10, random_state=seed).fit_predict(pca_scores(X, q))


def pca_gmm(X, q, K, seed=0):
    from sklearn.mixture import GaussianMixture

    return GaussianMixture(K, covariance_type="full", n_init=3, random_state=seed,
                           reg_covar=1e-4).fit(pca_scores(X, q)).predict(pca_scores(X, q))


def markdown_table(rows: list[dict], cols: list[str], fmt: dict | None = None) -> str:
    fmt = fmt or {}
    out = ["| " + " | ".join(cols) + " |", "|" + "|".join("---" for _ in cols) + "|"]
    for r in rows:
        cells = []
        for c in cols:
            v = r.get(c, "")
            cells.append(fmt.get(c, "{:.3f}").format(v) if isinstance(v, float) else str(v))
        out.append("| " + " | ".join(cells) + " |")
    return "\n".join(out)


def write_json(path, obj) -> None:
    if path:
        Path(path).write_text(json.dumps(obj, indent=2, default=float))
