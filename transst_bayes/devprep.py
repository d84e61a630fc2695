"""The target's expression prepared in JAX on the fit's device (`prepare_on`, DataSettings).

The host preparation (`data.prepare`) makes several NumPy passes over the target's matrix —
finite check, normalisation, gene statistics, the dense copy of the selected genes,
standardisation — and then the fit copies the result to the device. On a GPU those passes are
most of a large fit's time (1M spots x 2,000 genes: ~25 s of host work beside a ~2 s EM). Here
the raw matrix (dense, or CSR as data / row / column arrays) is put on the device once and every
pass runs there; the result stays on the device for the fit. The steps and checks are those of
the host path (the same error messages: `data.non_finite_error`, `data.counts_verdict`), in
float32; the source (small) is still prepared on the host. Used by `data.prepare(on_device=True)`.
"""

from __future__ import annotations

from functools import partial
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import scipy.sparse as sp

from .validate import COUNTS_SAMPLE, counts_verdict, non_finite_error

ROWS = 65_536  # rows per host-to-device block when the input needs a dtype conversion


class DeviceTarget(NamedTuple):
    """A normalised target on the device: dense `X`, or the CSR entries (`data`, `rows`, `cols`)."""
    shape: tuple
    X: jax.Array | None = None
    data: jax.Array | None = None
    rows: jax.Array | None = None
    cols: jax.Array | None = None


def fits(X, n_genes: int, device=None) -> bool:
    """Whether preparing X on `device` (default: JAX's default device) should fit in its free
    memory: the raw matrix, the selected genes and their standardised copy (x1.25 slack).
    Devices that do not report memory (the CPU) are taken to fit; CSR input needs fewer than
    2^31 stored values (int32 positions)."""
    n, p = X.shape
    g = min(n_genes, p)
    if sp.issparse(X):
        if X.nnz >= 2**31:
            return False
        need = 3 * 4 * X.nnz + 2 * 4 * n * g
    else:
        need = 4 * n * p + 2 * 4 * n * g
    stats = (device or jax.devices()[0]).memory_stats()
    if not stats or "bytes_limit" not in stats:
        return True
    return 1.25 * need < stats["bytes_limit"] - stats.get("bytes_in_use", 0)


def load(X, what: str, counts: bool | None, target_sum: float) -> tuple[DeviceTarget, int]:
    """X (NumPy or CSR, already checked non-empty) on the device, checked finite, told raw
    counts or not (`data.counts_verdict`) and log-normalised if counts; and the number of spots
    with no expression at all."""

    if sp.issparse(X):
        X = sp.csr_matrix(X)
        if X.nnz >= 2**31:
            raise ValueError(f"{what} has {X.nnz} stored values, too many to prepare on the device "
                             "(int32 positions); pass prepare_on='host'")
        if not X.has_canonical_format:
            X = X.copy()
            X.sum_duplicates()
        data = _put(X.data)
        bad, low = _check(data)
        if bad:
            raise non_finite_error(bad, what)
        is_counts = counts_verdict(low, X.data[:COUNTS_SAMPLE], X.nnz, lambda: _negatives(data), what, counts)
        rows = _rows(jnp.asarray(X.indptr.astype(np.int32)), X.shape[0], X.nnz)
        cols = jnp.asarray(X.indices.astype(np.int32))
        if is_counts:
            data = _log_normalise_sparse(data, rows, X.shape[0], float(target_sum))
        zero = int(_empty_rows_sparse(data, rows, X.shape[0]))
        return DeviceTarget(X.shape, data=data, rows=rows, cols=cols), zero
    X = np.asarray(X)
    Xd = _put(X)
    bad, low = _check(Xd)
    if bad:
        raise non_finite_error(bad, what)
    sample = X[:-(-COUNTS_SAMPLE // max(X.shape[1], 1))].ravel()[:COUNTS_SAMPLE]  # the first values, no full copy
    is_counts = counts_verdict(low, sample, X.size, lambda: _negatives(Xd), what, counts)
    if is_counts:
        Xd = _log_normalise_dense(Xd, float(target_sum))
    return DeviceTarget(X.shape, X=Xd), int(_empty_rows_dense(Xd))


def gene_stats(t: DeviceTarget, cols: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean, variance and number of non-zero spots of the genes `cols` (host arrays)."""
    if t.X is not None:
        m, v, nz = _stats_dense(t.X)
    else:
        m, v, nz = _stats_sparse(t.data, t.cols, t.shape[0], t.shape[1])
    cols = np.asarray(cols)
    return (np.asarray(m, np.float64)[cols], np.asarray(v, np.float64)[cols],
            np.asarray(nz, np.int64)[cols])


def dense(t: DeviceTarget, cols: np.ndarray) -> jax.Array:
    """The columns `cols` of the target as a dense float32 (n, len(cols)) device array."""
    cols = np.asarray(cols, np.int64)
    if t.X is not None:
        if cols.size == t.shape[1] and np.array_equal(cols, np.arange(t.shape[1])):
            return t.X
        return _take(t.X, jnp.asarray(cols.astype(np.int32)))
    new = np.full(t.shape[1], cols.size, np.int32)  # column -> position, cols.size = dropped
    new[cols] = np.arange(cols.size, dtype=np.int32)
    return _scatter(t.data, t.rows, t.cols, jnp.asarray(new), t.shape[0], cols.size)


def moments(X: jax.Array) -> tuple[np.ndarray, np.ndarray]:
    """Column means and standard deviations (two passes, on the device) as float64 host arrays."""
    m, v, _ = _stats_dense(X)
    return np.asarray(m, np.float64), np.sqrt(np.asarray(v, np.float64))


def scale(X: jax.Array, m: np.ndarray, sd: np.ndarray, max_z: float) -> jax.Array:
    """(X - m) / sd clipped to +-max_z, on the device."""
    return _scale(X, jnp.asarray(m, X.dtype), jnp.asarray(sd, X.dtype), max_z)


def _put(x: np.ndarray) -> jax.Array:
    """A host array on the default device as float32 (a block of rows at a time when it needs
    converting, so that no float32 copy of the whole matrix is made on the host)."""
    if x.dtype == np.float32:
        return jax.device_put(x)
    if x.ndim == 1:
        return jax.device_put(x.astype(np.float32))
    return jnp.concatenate([jax.device_put(np.asarray(x[i:i + ROWS], np.float32))
                            for i in range(0, max(x.shape[0], 1), ROWS)])


def _check(x) -> tuple[int, float]:
    """(number of NaN / inf values, smallest value)."""
    if x.size == 0:
        return 0, 0.0
    bad, low = _bad_low(x)
    return int(np.sum(np.asarray(bad), dtype=np.int64)), float(low)


@jax.jit
def _bad_low(x):  # counted per row, summed on the host in int64 (no int32 overflow)
    return jnp.sum(~jnp.isfinite(_as_rows(x)), axis=1), jnp.min(x)


def _negatives(x) -> int:
    return int(np.sum(np.asarray(_negative_rows(x)), dtype=np.int64))


@jax.jit
def _negative_rows(x):
    return jnp.sum(_as_rows(x) < 0, axis=1)


def _as_rows(x):  # CSR values (fewer than 2^31): one row
    return x.reshape(x.shape[0], -1) if x.ndim > 1 else x[None, :]


@partial(jax.jit, static_argnums=(1, 2))
def _rows(indptr, n: int, nnz: int):
    return jnp.repeat(jnp.arange(n, dtype=jnp.int32), jnp.diff(indptr), total_repeat_length=nnz)


@jax.jit
def _log_normalise_dense(X, target_sum):
    lib = X.sum(axis=1, keepdims=True)
    return jnp.log1p(X * jnp.where(lib > 0, target_sum / jnp.maximum(lib, 1e-12), 0.0))


@partial(jax.jit, static_argnums=(2,))
def _log_normalise_sparse(data, rows, n: int, target_sum):
    lib = jax.ops.segment_sum(data, rows, num_segments=n)
    scale_ = jnp.where(lib > 0, target_sum / jnp.maximum(lib, 1e-12), 0.0)
    return jnp.log1p(data * scale_[rows])


@jax.jit
def _empty_rows_dense(X):
    return jnp.sum(~jnp.any(X != 0, axis=1))


@partial(jax.jit, static_argnums=(2,))
def _empty_rows_sparse(data, rows, n: int):
    return jnp.sum(jax.ops.segment_sum(jnp.abs(data), rows, num_segments=n) == 0)


@jax.jit
def _stats_dense(X):
    m = X.mean(axis=0)
    return m, jnp.mean(jnp.square(X - m), axis=0), jnp.sum(X != 0, axis=0)


@partial(jax.jit, static_argnums=(2, 3))
def _stats_sparse(data, cols, n: int, p: int):
    s1 = jax.ops.segment_sum(data, cols, num_segments=p)
    s2 = jax.ops.segment_sum(data * data, cols, num_segments=p)
    nz = jax.ops.segment_sum(jnp.ones_like(cols), cols, num_segments=p)
    m = s1 / n
    return m, jnp.maximum(s2 / n - m * m, 0.0), nz


@jax.jit
def _take(X, cols):
    return jnp.take(X, cols, axis=1)


@partial(jax.jit, static_argnums=(4, 5))
def _scatter(data, rows, cols, new, n: int, g: int):
    return jnp.zeros((n, g), data.dtype).at[rows, new[cols]].add(data, mode="drop")


@jax.jit
def _scale(X, m, sd, max_z):
    return jnp.clip((X - m) / sd, -max_z, max_z)
