"""The priors of the noise, the target loadings (the transfer prior) and the domain parameters,
each written once beside its closed-form MAP M-step. The EM path calls the M-steps and adds the
log-priors to its objective; the NumPyro models (`models/domains.py`, `models/transfer.py`)
sample the same distributions with the same constants, so both paths
fit one posterior (dynamax keeps `log_prior` and `m_step` of a piece together in the same way).

    psi_g   ~ InverseGamma(PSI_A, PSI_B)                                   (noise, per gene)
    W_t[g]  ~ N(W_s[g], tau^2 I_q)             (transfer: target loadings around the source's)
    mu_k    ~ N(m_k, s_k^2 I_q)         s_k = kappa (anchored domain) or MU_SCALE (free domain)
    Sigma_k ~ InverseWishart(nu, (nu + q + 1) C_k)       nu = q + SIGMA_EXTRA_DOF, mode C_k

tau^2 is empirical Bayes here (`eb_tau2`) and has a half-Cauchy hyperprior in the NumPyro
model's "global" form (`models/transfer.py`, which also has a fixed-tau "ridge" form, whose
density is `loadings_log_prior`, and a per-gene "horseshoe"); the source's own loadings (no
prior) take the same ridge step with lam = 0. An anchored domain k is tied to a source class
c(k): m_k = m_c(k), C_k = S_c(k) (the source's class distribution of the factors); kappa is learned (empirical Bayes here, a half-Cauchy
hyperprior in the NumPyro model). A free domain has m_k = 0 and C_k = FREE_COV I. Without these
priors maximum likelihood has degenerate optima (Heywood cases: psi_g -> 0 for a gene that one
factor takes over; Sigma_k singular for a domain that shrinks onto a few spots).
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln, multigammaln

from .factor import JITTER, LOG2PI, PSI_FLOOR, DomainStats, LoadingStats, residual_ss

PSI_A = 2.0  # psi_g ~ InverseGamma(2, 1): mean 1, mode 1/3 on standardised genes
PSI_B = 1.0
MU_SCALE = 10.0  # prior sd of a free domain's mean (factors have unit pooled scale)
FREE_COV = 0.5  # prior mode of a free domain's covariance, FREE_COV * I
SIGMA_EXTRA_DOF = 1  # nu = q + 1: proper (nu > q - 1) with its mode at C_k, but without a finite
# mean (that needs nu > q + 1): heavy-tailed in Sigma_k's scale, so a posterior draw of a small
# domain's covariance is often several times its mode (benchmarks/EXPERIMENTS.md, SVI)
KAPPA_MIN2 = 1e-6  # floor of kappa^2


class DomainPrior(NamedTuple):
    """Centres of the domain priors (arrays, so they can be data of a compiled fit)."""

    mean: jax.Array  # (K, q) m_k
    cov: jax.Array  # (K, q, q) C_k, the prior mode of Sigma_k
    anchored: jax.Array  # (K,) bool: tied to a source class (mean scale kappa) or free


def free_prior(K: int, q: int, dtype=jnp.float32) -> DomainPrior:
    return DomainPrior(jnp.zeros((K, q), dtype), jnp.broadcast_to(FREE_COV * jnp.eye(q, dtype=dtype), (K, q, q)),
                       jnp.zeros((K,), bool))


def sigma_dof(q: int) -> float:
    return float(q + SIGMA_EXTRA_DOF)


# ------------------------------------------------------------------ noise: psi_g
def psi_log_prior(psi):
    a, b = PSI_A, PSI_B
    return jnp.sum(a * jnp.log(b) - gammaln(a) - (a + 1.0) * jnp.log(psi) - b / psi)


def psi_map(ss, n):
    """MAP of psi_g from the (weighted) residual sum of squares ss_g over n spots."""
    return jnp.maximum((ss + 2.0 * PSI_B) / (n + 2.0 * PSI_A + 2.0), PSI_FLOOR)


def update_psi(st: LoadingStats, W, weight=1.0):
    """The noise M-step: MAP of every psi_g, likelihood to the power `weight`."""
    return psi_map(weight * residual_ss(st, W), weight * st.n)


# ------------------------------------------------------------------ loadings: the transfer prior
def loadings_log_prior(W, W_prior, tau2):
    """log N(W_g | W0_g, tau^2 I_q), summed over genes."""
    p, q = W.shape
    return -0.5 * (jnp.sum((W - W_prior) ** 2) / tau2 + p * q * (LOG2PI + jnp.log(tau2)))


def update_loadings(st: LoadingStats, W_prior, lam):
    """Ridge M-step per gene toward W_prior: W_g = (XtEz_g + lam_g W0_g)(G + lam_g I)^-1.

    One eigendecomposition of G serves all genes (O(p q^2)).
    """
    D, U = jnp.linalg.eigh(st.G)
    D = jnp.maximum(D, 0.0)
    rhs = (st.XtEz + lam[:, None] * W_prior) @ U
    return (rhs / (D[None, :] + lam[:, None] + 1e-10)) @ U.T


def eb_tau2(st: LoadingStats, W_prior, psi, n_bisect: int = 60):
    """Empirical-Bayes tau^2 under W_g ~ N(W0_g, tau^2 I): maximises the marginal likelihood of
    the per-gene least-squares loadings directly (not an EM step on tau^2, which crawls towards
    tau = 0 when the target really follows the source).

    With G = U diag(D) U^T, the least-squares row in the eigenbasis is A_g / D (A = XtEz U) with
    independent errors of variance psi_g / D_j, so d_gj = A_gj / D_j - (W0 U)_gj ~
    N(0, tau^2 + psi_g / D_j). The derivative of that log-likelihood in tau^2 is found by
    bisection on log tau^2 in [1e-8, 10 * max d^2]; a negative slope at the lower end gives 1e-8.
    """
    D, U = jnp.linalg.eigh(st.G)
    D = jnp.maximum(D, 1e-8)
    d = (st.XtEz @ U) / D[None, :] - W_prior @ U
    v = psi[:, None] / D[None, :]
    return eb_variance(d * d, v, n_bisect=n_bisect)


def eb_variance(d2, v, weights=None, n_bisect: int = 60):
    """argmax over t > 0 of sum w log N(d | 0, t + v) (independent entries, known v): the
    empirical-Bayes variance of a Gaussian prior from estimates d with error variances v. The
    slope in t is found by bisection on log t in [1e-8, 10 * max d^2]; a negative slope at the
    lower end gives 1e-8."""
    w = jnp.ones_like(d2) if weights is None else weights

    def slope(t):
        return jnp.sum(w * (d2 / (t + v) ** 2 - 1.0 / (t + v)))

    lo = jnp.log(jnp.asarray(1e-8, d2.dtype))
    hi = jnp.log(10.0 * jnp.max(w * d2) + 1e-6)

    def body(i, c):
        lo, hi = c
        mid = 0.5 * (lo + hi)
        up = slope(jnp.exp(mid)) > 0
        return jnp.where(up, mid, lo), jnp.where(up, hi, mid)

    lo_, hi_ = jax.lax.fori_loop(0, n_bisect, body, (lo, hi))
    t = jnp.exp(0.5 * (lo_ + hi_))
    return jnp.where(slope(jnp.exp(lo)) > 0, t, jnp.exp(lo))


# ------------------------------------------------------------------ domains: mu_k, Sigma_k
def mean_scale2(prior: DomainPrior, kappa2):
    """Prior variance of each domain mean: kappa^2 (anchored) or MU_SCALE^2 (free)."""
    return jnp.where(prior.anchored, kappa2, MU_SCALE**2)


def domain_log_prior(mu, Sigma, prior: DomainPrior, kappa2, live=None):
    """log N(mu_k | m_k, s_k^2 I) + log InverseWishart(Sigma_k | nu, (nu + q + 1) C_k), summed
    over the domains (`live`: (K,) 1 for a domain, 0 for a padding column left out; None: all)."""
    K, q = mu.shape
    s2 = mean_scale2(prior, kappa2)
    per_mu = jnp.sum((mu - prior.mean) ** 2, axis=1) / s2 + q * (LOG2PI + jnp.log(s2))
    lp_mu = -0.5 * jnp.sum(per_mu if live is None else live * per_mu)
    nu = sigma_dof(q)
    Psi = (nu + q + 1.0) * prior.cov
    eye = jnp.eye(q, dtype=mu.dtype)
    L = jnp.linalg.cholesky(Sigma + JITTER * eye)
    LP = jnp.linalg.cholesky(Psi + JITTER * eye)
    logdet_S = 2.0 * jnp.sum(jnp.log(jnp.diagonal(L, axis1=1, axis2=2)), axis=1)
    logdet_P = 2.0 * jnp.sum(jnp.log(jnp.diagonal(LP, axis1=1, axis2=2)), axis=1)
    Linv = jax.scipy.linalg.solve_triangular(L, jnp.broadcast_to(eye, Sigma.shape), lower=True)
    tr = jnp.einsum("kab,kca,kcb->k", Psi, Linv, Linv)  # tr(Psi Sigma^-1)
    lp_S = (0.5 * nu * logdet_P - 0.5 * nu * q * jnp.log(2.0) - multigammaln(0.5 * nu, q)
            - 0.5 * (nu + q + 1.0) * logdet_S - 0.5 * tr)
    return lp_mu + jnp.sum(lp_S if live is None else live * lp_S)


def domain_map(st: DomainStats, prior: DomainPrior, kappa2, Sigma_old):
    """MAP of (mu_k, Sigma_k): mu_k given the current Sigma_k, then Sigma_k given mu_k.

    mu_k = m_k + s_k^2 N_k (s_k^2 N_k I + Sigma_k)^-1 (mean_k - m_k): N_k -> 0 gives m_k (an
    empty anchored domain sits on its source class; no NaN), s_k -> 0 pins it there (label
    transfer), s_k -> inf gives the weighted mean (free clustering).
    Sigma_k = (scatter about mu_k + (nu + q + 1) C_k) / (N_k + nu + q + 1).
    """
    K, q = st.mean.shape
    eye = jnp.eye(q, dtype=st.mean.dtype)
    s2N = (mean_scale2(prior, kappa2) * st.N)[:, None, None]
    d = st.mean - prior.mean
    mu = prior.mean + s2N[:, 0] * jnp.linalg.solve(s2N * eye + Sigma_old, d[..., None])[..., 0]
    off = st.mean - mu
    S = st.scatter + st.N[:, None, None] * jnp.einsum("kq,kr->kqr", off, off)
    nu = sigma_dof(q)
    c = nu + q + 1.0
    Sigma = (S + c * prior.cov) / (st.N + c)[:, None, None]
    Sigma = 0.5 * (Sigma + jnp.swapaxes(Sigma, 1, 2)) + JITTER * eye
    return mu, Sigma


def eb_kappa2(st: DomainStats, prior: DomainPrior, Sigma):
    """Empirical-Bayes kappa^2: maximises the marginal likelihood of the anchored domains' means
    around their source classes, mean_k - m_k ~ N(0, kappa^2 I + Sigma_k / N_k) (mu_k integrated
    out; rotated to the eigenbasis of Sigma_k, the same one-dimensional search as tau^2)."""
    D, U = jnp.linalg.eigh(Sigma)
    d = jnp.einsum("kqr,kq->kr", U, st.mean - prior.mean)
    used = prior.anchored & (st.N > 1.0)
    v = jnp.maximum(D, 1e-8) / jnp.maximum(st.N, 1e-8)[:, None]
    w = jnp.broadcast_to(used[:, None], d.shape).astype(d.dtype)
    k2 = eb_variance(d * d, v, w)
    return jnp.maximum(k2, KAPPA_MIN2)
