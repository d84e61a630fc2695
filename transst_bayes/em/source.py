"""Step 1: the source factor model with class-conditional Gaussian factors, labels fixed.

    x_i = W_s z_i + e_i,  e_i ~ N(0, diag(psi_s)),  z_i | c_i = k ~ N(m_k, S_k)

EM with the one-hot labels as fixed responsibilities and the noise prior of `priors`. The
objective (marginal log-likelihood given the labels plus the log-prior of psi) never decreases; after each M-step the factors are re-expressed so that their
pooled covariance is I, which leaves the likelihood unchanged and fixes the scale that the
target's transfer prior then inherits.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from .. import factor as F
from .. import priors as P
from ..pca_kmeans import pca
from .loop import run_em


class SourceFit(NamedTuple):
    W: jax.Array  # (p, q)
    psi: jax.Array  # (p,)
    mu: jax.Array  # (C, q) class means of z
    Sigma: jax.Array  # (C, q, q)
    trace: jax.Array
    n_iter: jax.Array


class _State(NamedTuple):
    W: jax.Array
    psi: jax.Array
    mu: jax.Array
    Sigma: jax.Array


def init_source(X, labels, C: int, q: int, key, n) -> _State:
    Z, W = pca(X, q, key, n=n)
    R = jax.nn.one_hot(labels, C, dtype=X.dtype)
    Nk = R.sum(0)
    mu = (R.T @ Z) / Nk[:, None]
    d = Z[:, None, :] - mu[None]
    Sigma = jnp.einsum("nk,nkq,nkr->kqr", R, d, d) / Nk[:, None, None]
    Sigma = Sigma + 1e-3 * jnp.eye(q, dtype=X.dtype)
    psi = jnp.maximum(jnp.sum((X - Z @ W.T) ** 2, axis=0) / n, 0.05)
    W, mu, Sigma = F.whiten(W, mu, Sigma, Nk)
    return _State(W, psi, mu, Sigma)


def source_step(X, R, state: _State, n=None):
    p = X.shape[1]
    comp = F.components(F.precompute(X, state.W, state.psi), state.mu, state.Sigma, p)
    obj = jnp.sum(comp.loglik * R) + P.psi_log_prior(state.psi)
    mu, Sigma = F.class_moments(R, comp)
    st = F.loading_stats(X, R, comp, n)
    zeros = jnp.zeros_like(state.psi)
    W = P.update_loadings(st, jnp.zeros_like(state.W), zeros)
    psi = P.update_psi(st, W)
    W, mu, Sigma = F.whiten(W, mu, Sigma, R.sum(0))
    return _State(W, psi, mu, Sigma), obj


def fit_source(X, labels, C: int, q: int, key, max_iter: int = 100, tol: float = 1e-5, n=None) -> SourceFit:
    """Fit the source model (jit this with C, q, max_iter static). `n`: the number of spots
    (default the rows of X; fewer where X ends in zero rows of padding, whose label is C: no
    class, so they add nothing to any sum)."""
    n = X.shape[0] if n is None else n
    R = jax.nn.one_hot(labels, C, dtype=X.dtype)
    state0 = init_source(X, labels, C, q, key, n)
    res = run_em(lambda s: source_step(X, R, s, n), state0, max_iter, tol, n)
    s = res.state
    return SourceFit(s.W, s.psi, s.mu, s.Sigma, res.trace, res.n_iter)
