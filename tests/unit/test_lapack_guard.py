"""Batched LAPACK on the CPU: the guard's lowering (one matrix at a time) gives the same numbers as
the kernel's batch loop, and a program that deadlocks XLA's CPU runtime without it finishes."""

from __future__ import annotations

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transst_bayes as tb
from conftest import REPO
from transst_bayes import lapack_guard

# eight independent batched Cholesky factorisations in one program, forty times: the runtime runs
# them at once, each kernel call blocking its pool thread while it waits for chunks queued on the
# same pool; with 8 calls every pool of up to 8 threads can end up waiting. Without the guard,
# jaxlib 0.10.2 hung on 9 of 9 tries on an idle 2-core machine (and on 1 of 2 with three other
# processes running); with it the program takes about 1 s
_DEADLOCK = """
import contextlib
import jax, jax.numpy as jnp
{guard}
@jax.jit
def f(xs):
    return [jnp.linalg.cholesky(x) for x in xs]
xs = []
for k in jax.random.split(jax.random.PRNGKey(0), 8):
    a = jax.random.normal(k, (256, 30, 30))
    xs.append(a @ jnp.swapaxes(a, -1, -2) + 30 * jnp.eye(30))
with scope():  # the program compiles at its first call
    for _ in range(40):
        jax.block_until_ready(f(xs))
print("finished")
"""


def _run(guard: str, timeout: float):
    code = _DEADLOCK.format(guard=guard)
    return subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=timeout,
                          cwd=str(REPO))


def test_concurrent_batched_cholesky_finishes_under_the_guard():
    try:
        out = _run("from transst_bayes.lapack_guard import guarded as scope", 120)
    except subprocess.TimeoutExpired:
        pytest.fail("four concurrent batched Cholesky calls did not finish in 120 s with the guard")
    assert out.returncode == 0, out.stderr[-2000:]
    assert "finished" in out.stdout


@pytest.mark.slow
def test_the_program_deadlocks_without_the_guard():
    """The check above can fail: without the guard the same program hangs (jaxlib < 0.11). The
    hang is a race, so three tries: one hang is enough."""
    if tuple(int(v) for v in jax.__version__.split(".")[:2]) >= (0, 11):
        pytest.skip("newer jaxlib runs batched LAPACK calls inline")
    for _ in range(3):
        try:
            out = _run("scope = contextlib.nullcontext", 20)
        except subprocess.TimeoutExpired:
            return
        assert out.returncode == 0, out.stderr[-2000:]
    pytest.fail("the program finished three times without the guard: jaxlib no longer deadlocks here")


def _spd(key, shape):
    a = jax.random.normal(key, shape)
    return a @ jnp.swapaxes(a, -1, -2) + shape[-1] * jnp.eye(shape[-1])


def _guarded_now() -> set:
    from jax._src.interpreters import mlir

    table = mlir._platform_specific_lowerings["cpu"]
    return {p.name for p, e in table.items() if getattr(e.rule, "one_matrix_at_a_time", False)}


@pytest.mark.slow
def test_the_guard_holds_only_inside_the_package_calls():
    """Importing the package changes no JAX lowering (it patched them process-wide, the caller's
    own programs included); a fit and `simulate` compile under the guard and put JAX's back."""
    assert _guarded_now() == set()
    with lapack_guard.guarded():
        inside = _guarded_now()
        with lapack_guard.guarded():  # nested: the held-out fits inside a fit
            assert _guarded_now() == inside
        assert _guarded_now() == inside
    assert len(inside) >= 6 and "cholesky" in inside
    assert _guarded_now() == set()
    seen = []
    original = lapack_guard.install

    def spy():
        seen.append(_guarded_now())
        return original()

    lapack_guard.install = spy
    try:
        src, tgt = tb.simulate(0, height=8, width=8, n_genes=20, n_factors=2, n_domains=2)
        tb.fit_em(tgt, src, n_domains=2, n_factors=2, n_restarts=1, max_iter=3, calibrate="none", transfer="eb")
    finally:
        lapack_guard.install = original
    assert len(seen) == 2  # simulate, fit_em: each installed it for its call
    assert _guarded_now() == set()


def test_batched_results_equal_one_matrix_calls():
    S = _spd(jax.random.PRNGKey(1), (3, 4, 6, 6))
    B = jax.random.normal(jax.random.PRNGKey(2), (3, 4, 6, 5))
    def ops(S, B):
        L = jnp.linalg.cholesky(S)
        return (L, jax.scipy.linalg.solve_triangular(L, B, lower=True), jnp.linalg.eigh(S)[0],
                jnp.linalg.solve(S, B), jnp.linalg.svd(B, compute_uv=False), jnp.linalg.qr(B)[1])

    with lapack_guard.guarded():
        batched = jax.jit(ops)(S, B)  # batch dimensions (3, 4): the guarded lowering
    one = jax.jit(ops)  # called on one matrix at a time below: the kernels' own path
    for i in range(3):
        for j in range(4):
            ref = one(S[i, j], B[i, j])
            for got, want in zip(batched, ref):
                np.testing.assert_array_equal(np.asarray(got[i, j]), np.asarray(want))
    # and the reference is right: L L^T = S
    L = np.asarray(batched[0], np.float64)
    np.testing.assert_allclose(L @ np.swapaxes(L, -1, -2), np.asarray(S, np.float64), rtol=1e-5, atol=1e-4)


def test_gradients_through_the_guarded_lowering():
    S = _spd(jax.random.PRNGKey(3), (5, 4, 4))
    f = lambda S: jnp.sum(jnp.log(jnp.diagonal(jnp.linalg.cholesky(S), axis1=-2, axis2=-1)))
    with lapack_guard.guarded():
        g = jax.jit(jax.grad(f))(S)
    # d/dS of sum_i log|L_ii| = (1/2) log det S is (1/2) S^{-1} (symmetrised input)
    np.testing.assert_allclose(np.asarray(g), 0.5 * np.linalg.inv(np.asarray(S, np.float64)), rtol=1e-3, atol=1e-5)
