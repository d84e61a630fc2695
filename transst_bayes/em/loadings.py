"""Step 2: target loadings under the transfer prior W_t[g] ~ N(W_s[g], tau^2 I).

Three modes:
- "eb" (default): a target factor model z ~ N(0, I) fitted by EM with the ridge M-step toward
  W_s (strength psi_g / tau^2); after each M-step tau^2 maximises the marginal likelihood of
  the per-gene least-squares loadings around W_s (`priors.eb_tau2`: empirical Bayes, found by
  bisection, not an EM step on tau^2).
- "cv": the published code's procedure for parity: alternate least squares for V and W with
  penalty lambda * ||W - W_s||^2, lambda from the grid {0, 0.01, ..., 0.2} chosen by 2-fold
  cross-reconstruction. The squared error is averaged over spots (divided by n) so that lambda
  is on the scale of the factor variances; summed over spots, as printed in the paper, the whole
  grid would be a no-op against n spots.
- "none": the target alone (PCA start, no prior): the ablation, and what runs without a source.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from .. import factor as F
from .. import priors as P
from .. import shard
from ..pca_kmeans import pca
from .loop import run_em

TRANSFER_MODES = ("eb", "cv", "none")
CV_GRID = tuple(round(0.01 * i, 2) for i in range(21))


class TransferFit(NamedTuple):
    W: jax.Array  # (p, q)
    psi: jax.Array  # (p,)
    tau2: jax.Array  # () learned tau^2 (eb), equivalent tau^2 (cv), inf (none)
    lam: jax.Array  # (p,) ridge strength per gene used by the joint step
    Z: jax.Array  # (n, q) factor scores
    trace: jax.Array
    n_iter: jax.Array
    cv_lambda: jax.Array  # () chosen lambda (cv), nan otherwise


class _State(NamedTuple):
    W: jax.Array
    psi: jax.Array
    tau2: jax.Array


def _fa_step(X, w, W_prior, mode: str, state: _State):
    p = X.shape[1]
    q = state.W.shape[1]
    mu0 = jnp.zeros((1, q), X.dtype)
    S0 = jnp.eye(q, dtype=X.dtype)[None]
    comp = F.components(F.precompute(X, state.W, state.psi), mu0, S0, p)
    R = jnp.ones((X.shape[0], 1), X.dtype) if w is None else w[:, None]
    obj = shard.total(comp.loglik, w) + P.psi_log_prior(state.psi)
    st = F.loading_stats(X, R, comp, shard.count(X, w))
    if mode == "eb":
        obj = obj + P.loadings_log_prior(state.W, W_prior, state.tau2)
        lam = state.psi / state.tau2
    else:
        lam = jnp.zeros_like(state.psi)
    W = P.update_loadings(st, W_prior, lam)
    psi = P.update_psi(st, W)
    tau2 = P.eb_tau2(st, W_prior, psi) if mode == "eb" else state.tau2
    return _State(W, psi, jnp.maximum(tau2, 1e-8)), obj


def scores(X, W, psi):
    """(n, q) posterior-mean factor scores of X under loadings W and noise psi (prior N(0, I))."""
    q = W.shape[1]
    comp = F.components(
        F.precompute(X, W, psi), jnp.zeros((1, q), X.dtype), jnp.eye(q, dtype=X.dtype)[None],
        X.shape[1],
    )
    return comp.Ez[:, 0, :]


def _adaptive_w(X, W0, lam, n_iter: int = 30):
    """Alternating least squares of the published code, error averaged over spots."""
    n = X.shape[0]
    q = W0.shape[1]
    eye = jnp.eye(q, dtype=X.dtype)

    def body(i, W):
        V = X @ W @ jnp.linalg.inv(W.T @ W + 1e-8 * eye)
        return (n * lam * W0 + X.T @ V) @ jnp.linalg.inv(n * lam * eye + V.T @ V + 1e-8 * eye)

    W = lax.fori_loop(0, n_iter, body, W0)
    V = X @ W @ jnp.linalg.inv(W.T @ W + 1e-8 * eye)
    return W, V


def _cv_lambda(X, W_s, key, grid):
    n = X.shape[0]
    half = n // 2

    def err(lam, k):
        perm = jax.random.permutation(k, n)
        X1, X2 = X[perm[:half]], X[perm[half:2 * half]]
        W1, V1 = _adaptive_w(X1, W_s, lam)
        W2, V2 = _adaptive_w(X2, W_s, lam)
        return jnp.sum((V1 @ W2.T - X1) ** 2) + jnp.sum((V2 @ W1.T - X2) ** 2)

    keys = jax.random.split(key, len(grid))
    errs = lax.map(lambda a: err(a[0], a[1]), (jnp.asarray(grid, X.dtype), keys))
    return jnp.asarray(grid, X.dtype)[jnp.argmin(errs)], errs


def fit_transfer(X, W_s, key, mode: str = "eb", max_iter: int = 100, tol: float = 1e-5,
                 q: int | None = None, w=None) -> TransferFit:
    """Target loadings and factor scores (jit with mode, max_iter, tol, q static). `w`: spot
    weights, 1 for a spot and 0 for a padded (zero) row (default: every row a spot; "cv" mode
    takes no padding)."""
    n, p = X.shape
    n_spots = shard.count(X, w)
    q = W_s.shape[1] if W_s is not None else q
    nan = jnp.asarray(jnp.nan, X.dtype)
    if mode == "cv":
        lam_cv, _ = _cv_lambda(X, W_s, key, CV_GRID)
        W, V = _adaptive_w(X, W_s, lam_cv)
        psi = jnp.maximum(jnp.mean((X - V @ W.T) ** 2, axis=0), F.PSI_FLOOR)
        lam = jnp.full((p,), n * lam_cv, X.dtype)
        tau2 = jnp.where(lam_cv > 0, jnp.mean(psi) / (n * lam_cv), jnp.inf)
        empty = jnp.full((1,), jnp.nan, X.dtype)
        return TransferFit(W, psi, tau2, lam, V, empty, jnp.asarray(1), lam_cv)
    if mode == "eb":
        W0 = W_s
        Z0 = X @ W_s @ jnp.linalg.inv(W_s.T @ W_s)
        tau2_0 = 0.5 * jnp.mean(W_s**2)
        prior = W_s
    else:
        Z0, W0 = pca(X, q, key, n=n_spots)
        tau2_0 = jnp.asarray(jnp.inf, X.dtype)
        prior = jnp.zeros((p, q), X.dtype)
    psi0 = jnp.maximum(shard.mean((X - Z0 @ W0.T) ** 2, w, axis=0), 0.05)
    state0 = _State(W0, psi0, jnp.asarray(tau2_0, X.dtype))
    res = run_em(lambda s: _fa_step(X, w, prior, mode, s), state0, max_iter, tol, n_spots)
    s = res.state
    lam = s.psi / s.tau2 if mode == "eb" else jnp.zeros((p,), X.dtype)
    return TransferFit(s.W, s.psi, s.tau2, lam, scores(X, s.W, s.psi), res.trace, res.n_iter, nan)

