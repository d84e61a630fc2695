"""Kernels of the factor model x = W z + e, e ~ N(0, diag(psi)), z | k ~ N(mu_k, Sigma_k).

With z integrated out, x | k ~ N(W mu_k, W Sigma_k W^T + diag(psi)); evaluated with the Woodbury
identity and the matrix determinant lemma after one O(n p q) pass (`precompute`), never a p x p
matrix. The same kernels serve the source EM (labels fixed), the transfer step (one component
with mu = 0, Sigma = I) and the joint target clustering. All pure and jit-able.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

LOG2PI = 1.8378770664093453
PSI_FLOOR = 1e-4
JITTER = 1e-6


class Sufficient(NamedTuple):
    A: jax.Array  # (q, q) W^T Psi^-1 W
    b: jax.Array  # (n, q) X Psi^-1 W
    xPx: jax.Array  # (n,)  x^T Psi^-1 x
    logdet_psi: jax.Array  # ()


class Components(NamedTuple):
    """E[z_j | x_j, y_j = k] = b_j M_k + e_k is linear in a shared (n, q) array b: the weighted
    moments below are computed from b with flat GEMMs instead of from the (n, K, q) array Ez
    (which jit drops when nothing reads it)."""

    loglik: jax.Array  # (n, K) log N(x_j | W mu_k, W Sigma_k W^T + Psi)
    Ez: jax.Array  # (n, K, q) E[z_j | x_j, y_j = k]
    Vz: jax.Array  # (K, q, q) Cov[z_j | x_j, y_j = k]
    b: jax.Array  # (n, q)
    M: jax.Array  # (K, q, q) symmetric
    e: jax.Array  # (K, q)


def precompute(X, W, psi) -> Sufficient:
    Wp = W / psi[:, None]
    return Sufficient(
        A=W.T @ Wp,
        b=X @ Wp,
        # X * (X / psi), not X * X / psi: XLA hoists the loop-invariant X * X out of an EM
        # loop as an (n, p) temporary (8 GB at 1M x 2,000 in float32).
        xPx=jnp.sum(X * (X / psi), axis=1),
        logdet_psi=jnp.sum(jnp.log(psi)),
    )


def score_class_moments(W, psi, mu, Sigma, noise: bool = True):
    """Mean and covariance of the posterior-mean scores V = E[z | x] (z ~ N(0, I) a priori, x =
    W z + e, e ~ N(0, Psi)) of spots whose factors follow a class z ~ N(mu_c, Sigma_c):
    V = M^-1 W' Psi^-1 x with M = I + W' Psi^-1 W, so with B = I - M^-1
    V | c ~ N(B mu_c, B Sigma_c B' + M^-1 - M^-2): the class contracted toward 0 by B (strongly
    at low signal to noise, B << I) plus the scores' own noise. `noise=False` leaves out the
    noise term M^-1 - M^-2 (the contracted class alone)."""
    q = W.shape[1]
    eye = jnp.eye(q, dtype=W.dtype)
    Minv = jnp.linalg.inv(eye + W.T @ (W / psi[:, None]))
    Minv = 0.5 * (Minv + Minv.T)
    B = eye - Minv
    S = jnp.einsum("ab,kbc,dc->kad", B, Sigma, B)
    if noise:
        S = S + (Minv - Minv @ Minv)[None]
    return mu @ B.T, 0.5 * (S + jnp.swapaxes(S, 1, 2))


def _chol_inv(S, jitter=JITTER):
    q = S.shape[-1]
    L = jnp.linalg.cholesky(S + jitter * jnp.eye(q, dtype=S.dtype))
    Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(q, dtype=S.dtype), lower=True)
    return Linv.T @ Linv, 2.0 * jnp.sum(jnp.log(jnp.diag(L)))


def components(suf: Sufficient, mu, Sigma, p: int, jitter: float = JITTER) -> Components:
    """Per-spot, per-component marginal log-likelihood and posterior moments of z: the one
    Woodbury evaluation of the package (EM kernels and the NumPyro likelihood). `jitter` is
    added to Sigma_k and M_k before their Cholesky factors (0 where they are positive definite
    by construction, as in the NumPyro models)."""

    def one(m, S):
        Sinv, logdet_S = _chol_inv(S, jitter)
        Minv, logdet_M = _chol_inv(Sinv + suf.A, jitter)  # M = Sigma^-1 + W^T Psi^-1 W
        c = suf.b - m @ suf.A  # (n, q): W^T Psi^-1 (x - W m)
        quad = suf.xPx - 2.0 * suf.b @ m + m @ suf.A @ m - jnp.sum((c @ Minv) * c, axis=1)
        # matrix determinant lemma: |W S W^T + Psi| = |Psi| |S| |S^-1 + W^T Psi^-1 W|
        logdet = suf.logdet_psi + logdet_S + logdet_M
        ll = -0.5 * (p * LOG2PI + logdet + quad)
        e = (Sinv @ m) @ Minv  # Minv symmetric
        return ll, suf.b @ Minv + e, Minv, e

    ll, Ez, Vz, e = jax.vmap(one, in_axes=(0, 0), out_axes=(1, 1, 0, 0))(mu, Sigma)
    return Components(loglik=ll, Ez=Ez, Vz=Vz, b=suf.b, M=Vz, e=e)


def gaussian_components(V, mu, Sigma) -> Components:
    """Components for clustering observed factor scores V directly (the two-stage variant)."""
    q = V.shape[1]

    def one(m, S):
        L = jnp.linalg.cholesky(S + JITTER * jnp.eye(q, dtype=S.dtype))
        sol = jax.scipy.linalg.solve_triangular(L, (V - m).T, lower=True)
        ll = -0.5 * (q * LOG2PI + 2.0 * jnp.sum(jnp.log(jnp.diag(L))) + jnp.sum(sol**2, axis=0))
        return ll

    ll = jax.vmap(one, out_axes=1)(mu, Sigma)
    K = mu.shape[0]
    Ez = jnp.broadcast_to(V[:, None, :], (V.shape[0], K, q))
    eye = jnp.broadcast_to(jnp.eye(q, dtype=V.dtype), (K, q, q))
    return Components(loglik=ll, Ez=Ez, Vz=jnp.zeros((K, q, q), V.dtype), b=V, M=eye,
                      e=jnp.zeros((K, q), V.dtype))


class Moments(NamedTuple):
    Nk: jax.Array  # (K,) sum_j R_jk
    S1: jax.Array  # (K, q) sum_j R_jk E[z_j | k]
    S2: jax.Array  # (K, q, q) sum_j R_jk E[z_j | k] E[z_j | k]^T (without Vz)


def moments(R, comp: Components) -> Moments:
    """Responsibility-weighted moments of E[z | x, k] from the linear form b M_k + e_k."""
    n, q = comp.b.shape
    K = R.shape[1]
    Nk = jnp.sum(R, axis=0)
    B1 = R.T @ comp.b  # (K, q)
    B2 = ((R[:, :, None] * comp.b[:, None, :]).reshape(n, K * q).T @ comp.b).reshape(K, q, q)
    MB1 = jnp.einsum("kqr,kr->kq", comp.M, B1)
    S1 = MB1 + Nk[:, None] * comp.e
    outer = jnp.einsum("kq,kr->kqr", MB1, comp.e)
    S2 = (jnp.einsum("kqa,kab,kbr->kqr", comp.M, B2, comp.M) + outer + jnp.swapaxes(outer, 1, 2)
          + Nk[:, None, None] * jnp.einsum("kq,kr->kqr", comp.e, comp.e))
    return Moments(Nk=Nk, S1=S1, S2=S2)


def mean_factors(R, comp: Components):
    """sum_k R_jk E[z_j | x_j, k], shape (n, q), without forming the (n, K, q) array."""
    n, q = comp.b.shape
    K = R.shape[1]
    Rb = (R[:, :, None] * comp.b[:, None, :]).reshape(n, K * q)
    return Rb @ comp.M.reshape(K * q, q) + R @ comp.e


class DomainStats(NamedTuple):
    """Responsibility-weighted statistics of the factors of each domain (likelihood power applied)."""

    N: jax.Array  # (K,) sum_j w r_jk
    mean: jax.Array  # (K, q) weighted mean of E[z_j | k]
    scatter: jax.Array  # (K, q, q) sum_j w r_jk (E[z_j | k] - mean_k)(...)^T + Cov[z_j | k]


def domain_stats(R, comp: Components, weight=1.0):
    """Per-domain weighted count, mean and scatter of E[z | x, k] (posterior variance included),
    each spot's responsibility multiplied by the likelihood power `weight`."""
    mom = moments(R, comp)
    Nk = weight * mom.Nk
    safe = jnp.maximum(mom.Nk, 1e-12)
    mean = mom.S1 / safe[:, None]
    S = weight * (mom.S2 - mom.Nk[:, None, None] * jnp.einsum("kq,kr->kqr", mean, mean)
                  + mom.Nk[:, None, None] * comp.Vz)
    return DomainStats(N=Nk, mean=mean, scatter=0.5 * (S + jnp.swapaxes(S, 1, 2)))


def class_moments(R, comp: Components):
    """Maximum-likelihood mean and covariance of z per class (the source: labels known, every
    class populated)."""
    st = domain_stats(R, comp)
    q = st.mean.shape[1]
    Sigma = st.scatter / jnp.maximum(st.N, 1e-12)[:, None, None] + JITTER * jnp.eye(q, dtype=st.mean.dtype)
    return st.mean, Sigma


class LoadingStats(NamedTuple):
    XtEz: jax.Array  # (p, q) sum_j x_j E[z_j]^T
    G: jax.Array  # (q, q) sum_j E[z_j z_j^T]
    xx: jax.Array  # (p,) sum_j x_jg^2
    n: jax.Array  # ()


def loading_stats(X, R, comp: Components, n=None) -> LoadingStats:
    """Sufficient statistics of the loadings' and noise's M-steps; `n` the number of spots
    (default the rows of X; less where padded rows, which are zero with zero responsibilities,
    are not spots: shard.py)."""
    mom = moments(R, comp)
    G = jnp.sum(mom.S2, axis=0) + jnp.einsum("k,kqr->qr", mom.Nk, comp.Vz)
    return LoadingStats(
        XtEz=X.T @ mean_factors(R, comp), G=0.5 * (G + G.T), xx=jnp.sum(X * X, axis=0),
        n=jnp.asarray(X.shape[0] if n is None else n, X.dtype)
    )


def residual_ss(st: LoadingStats, W):
    """Expected residual sum of squares per gene, sum_j E[(x_jg - W_g z_j)^2] (p,): the noise
    variances' sufficient statistic (their MAP step is priors.psi_map)."""
    return st.xx - 2.0 * jnp.sum(W * st.XtEz, axis=1) + jnp.sum((W @ st.G) * W, axis=1)


def whiten(W, mu, Sigma, weights):
    """Re-express z so that its pooled covariance is I (likelihood unchanged): removes the
    GL(q) freedom of an unanchored factor model."""
    w = weights / jnp.sum(weights)
    mbar = w @ mu
    C = jnp.einsum("k,kqr->qr", w, Sigma) + jnp.einsum("k,kq,kr->qr", w, mu - mbar, mu - mbar)
    q = C.shape[0]
    L = jnp.linalg.cholesky(C + JITTER * jnp.eye(q, dtype=C.dtype))
    Linv = jax.scipy.linalg.solve_triangular(L, jnp.eye(q, dtype=C.dtype), lower=True)
    return W @ L, mu @ Linv.T, jnp.einsum("qa,kab,rb->kqr", Linv, Sigma, Linv)
