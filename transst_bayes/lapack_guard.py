"""Batched LAPACK calls on the CPU run one matrix after another, so that XLA's CPU runtime cannot
deadlock on them.

jaxlib 0.10's CPU LAPACK kernels (Cholesky, triangular solve, eigh, LU, QR, SVD, ...) split a
batch of matrices into chunks, schedule the chunks on XLA's intra-op thread pool and block the
calling pool thread until they finish. When the runtime runs as many independent batched calls at
once as the pool has threads (2 on a 2-core machine), every thread waits for chunks that no
thread is free to run, forever. That hung `fit_svi` (seqFISH embryo3_z2: the SVI round and the
posterior draws) and the EM restarts about one time in eight on 2 cores (native stacks: every
`tf_XLAEigen` thread in `jax::ParallelBatchMap` -> `BlockingCounter::Wait`). A single matrix is
run inline by the kernel, so this module lowers a batched call on the CPU as a loop of
single-matrix calls: the same LAPACK routine on the same matrices, so the same numbers, with no
waiting inside the pool. The package's fits and `simulate` compile their programs inside
`guarded()`, which registers the lowering (CPU only; other platforms keep theirs) for as long as
the call runs and then puts JAX's own back, so the caller's own programs compiled elsewhere are
left as JAX makes them (a program keeps the lowering it was compiled with). `install()`
registers it for the rest of the process instead (for a caller who runs the NumPyro models
with their own inference). `tests/unit/test_lapack_guard.py` holds a program that deadlocks without
it.
"""

from __future__ import annotations

import functools
import math
import threading
from contextlib import contextmanager

from jax import lax
from jax._src.interpreters import mlir
from jax._src.lax import linalg

# the core rank of each operand: its last dimensions that one LAPACK call works on
CORE_RANKS = {
    "cholesky_p": (2,),
    "triangular_solve_p": (2, 2),
    "eigh_p": (2,),
    "lu_p": (2,),
    "svd_p": (2,),
    "geqrf_p": (2,),
    "householder_product_p": (2, 1),
    "eig_p": (2,),
    "schur_p": (2,),
    "hessenberg_p": (2,),
    "tridiagonal_p": (2,),
    "tridiagonal_solve_p": (1, 1, 1, 2),
}


def _batch_shape(avals, ranks):
    """The common batch shape of the operands, or None when they do not share one."""
    shapes = {tuple(a.shape[: a.ndim - r]) for a, r in zip(avals, ranks)}
    return shapes.pop() if len(shapes) == 1 else None


def _sequential(prim, original, ranks):
    def rule(ctx, *args, **params):
        batch = _batch_shape(ctx.avals_in, ranks)
        if batch is None or math.prod(batch) <= 1:
            return original(ctx, *args, **params)
        nb = len(batch)

        def one_by_one(*ops):
            flat = [op.reshape((-1,) + op.shape[nb:]) for op in ops]
            out = lax.map(lambda xs: prim.bind(*xs, **params), flat)
            if prim.multiple_results:
                return [o.reshape(batch + o.shape[1:]) for o in out]
            return out.reshape(batch + out.shape[1:])

        return mlir.lower_fun(one_by_one, multiple_results=prim.multiple_results)(ctx, *args)

    rule.one_matrix_at_a_time = True
    return rule


def install() -> int:
    """Register the one-matrix-at-a-time CPU lowering for the batched LAPACK primitives; returns
    how many primitives carry it (0 where this JAX keeps its lowerings elsewhere: nothing is
    changed then). Calling it again changes nothing."""
    table = getattr(mlir, "_platform_specific_lowerings", {}).get("cpu")
    if table is None:
        return 0
    n = 0
    for name, ranks in CORE_RANKS.items():
        prim = getattr(linalg, name, None)
        original = getattr(table.get(prim), "rule", None) if prim is not None else None
        if original is None:
            continue
        if not getattr(original, "one_matrix_at_a_time", False):
            mlir.register_lowering(prim, _sequential(prim, original, ranks), platform="cpu")
        n += 1
    return n


_lock = threading.Lock()
_depth = [0]  # guarded() calls open in this process (fits nest: the held-out fits)
_saved: dict = {}  # primitive -> JAX's own CPU lowering entry, while guarded


@contextmanager
def guarded():
    """The one-matrix-at-a-time lowering for the programs compiled inside the block, JAX's own
    again after it (nested and concurrent blocks share one registration)."""
    table = getattr(mlir, "_platform_specific_lowerings", {}).get("cpu")
    with _lock:
        if _depth[0] == 0 and table is not None:
            _saved.clear()
            _saved.update({p: table[p] for p in (getattr(linalg, n, None) for n in CORE_RANKS)
                           if p is not None and p in table})
            install()
        _depth[0] += 1
    try:
        yield
    finally:
        with _lock:
            _depth[0] -= 1
            if _depth[0] == 0 and table is not None:
                table.update(_saved)
                _saved.clear()


def guard(fn):
    """`fn` run inside `guarded()` (for the package's entry points that compile)."""
    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        with guarded():
            return fn(*args, **kwargs)
    return wrapped
