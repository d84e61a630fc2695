"""Step 3: spatial clustering of the target with the Potts prior (EM with mean-field E-step).

Variants:
- "joint" (the default for free domains): x_j | y_j = k ~ N(W_t mu_k, W_t Sigma_k W_t^T + Psi_t), z integrated out;
  W_t, psi_t (and tau^2 in "eb" mode) are updated with the domain parameters, W_t under the
  transfer prior toward W_s.
- "two_stage" (the default for anchored domains): the published code's route: cluster fixed
  factor scores V (posterior means under the transfer step's loadings) with a Gaussian mixture
  under the Potts prior.

Each iteration: responsibilities by a chromatic mean-field sweep with the current beta; M-step for
mu_k, Sigma_k (and W_t, psi_t, tau^2); a Newton step for beta on the mean-field
pseudo-likelihood. The objective is the pseudo-marginal log-likelihood
sum_j log sum_k p(y_j = k | neighbours) N(x_j | k) (the quantity the published code uses for
BIC) plus the log-prior of the parameters (`priors`: noise, domains; the loadings' transfer prior
with a learned tau). Domains are free, or anchored to source classes (`priors.DomainPrior`) with
kappa^2 learned by empirical Bayes. Hard labels come from ICM started at the MAP responsibilities.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax.scipy.special import logsumexp

from .. import factor as F
from .. import mrf
from .. import priors as P
from .. import shard
from .loop import run_em
from .. import variants as VR

FINAL_SWEEPS = 3  # mean-field sweeps at the final parameters before the reported responsibilities
PADDED = -1e9  # alpha of a padding domain: its weight exp(PADDED) is 0 in every softmax (finite, so
# that 0 * alpha stays 0 in the pseudo-likelihood)


def live_domains(alpha):
    """(K,) 1 for a domain, 0 for a padding column (None: every column a domain)."""
    return None if alpha is None else (alpha > 0.5 * PADDED).astype(alpha.dtype)


class ClusterState(NamedTuple):
    W: jax.Array
    psi: jax.Array
    mu: jax.Array
    Sigma: jax.Array
    tau2: jax.Array
    beta: jax.Array
    R: jax.Array  # (n, K) responsibilities
    kappa2: jax.Array  # () prior variance of the anchored domains' means around their classes


class ClusterData(NamedTuple):
    """What a step reads and never changes."""
    X: jax.Array  # (n, p) expression ("joint") or (n, q) factor scores ("two_stage")
    graph: mrf.Graph  # the spots' neighbour graph (n_colors: Settings.n_colors)
    W_s: jax.Array  # (p, q) centre of the loadings' prior (zeros without a source)
    lam: jax.Array  # (p,) fixed ridge strength toward W_s ("cv" mode)
    prior: P.DomainPrior  # the domains' prior (free or anchored)
    w: jax.Array | None  # (n,) spot weights: 1 a spot, 0 a padded row (shard.py); None: no padding
    classifier: jax.Array | None = None  # (n, K) the classifier's term of each domain's data term
    #   (`classifier.domain_term`, weight included); None: none
    alpha: jax.Array | None = None  # (K,) 0 for a domain, PADDED for a padding column (K padded
    #   so that fits of different K share a compiled program: no spot takes it, and it adds
    #   nothing to the objective); None: no padding


class StepInfo(NamedTuple):
    """What one step records: the objective of the state entering it and that state's beta,
    tau^2 and kappa^2 (`run_em` keeps one per iteration: the trace of each)."""
    objective: jax.Array
    beta: jax.Array
    tau2: jax.Array
    kappa2: jax.Array


class ClusterFit(NamedTuple):
    state: ClusterState  # the parameters at the end
    labels: jax.Array  # (n,) ICM labels
    Z: jax.Array  # (n, q) posterior mean factors
    loglik: jax.Array  # (n, K) expression log-likelihood per domain
    objective: jax.Array  # () final objective: pseudo-marginal log-likelihood + log-prior
    log_prior: jax.Array  # () the log-prior part of the objective
    trace: StepInfo  # per iteration, (max_iter,) each, NaN after the last
    n_iter: jax.Array
    converged: jax.Array


class Settings(NamedTuple):
    """Static settings of the clustering kernel (hashable)."""
    K: int
    variant: str = "joint"
    mode: str = "eb"
    learn_beta: bool = True
    max_iter: int = 100
    tol: float = 1e-4
    n_colors: int = 2
    n_mean_field: int = 1
    weight: float = 1.0  # power on the expression likelihood (generalised posterior)
    learn_kappa: bool = False  # anchored domains: kappa^2 by empirical Bayes


def pseudo_marginal(loglik, counts, beta, w, alpha=None):
    """sum_j w_j log sum_k p(y_j = k | neighbours) exp(loglik_jk) (w: spot weights or None;
    alpha: ClusterData.alpha)."""
    lp = jax.nn.log_softmax(mrf.local_field(None, counts, beta, alpha), axis=1)
    return shard.total(logsumexp(loglik + lp, axis=1), w)


def data_term(comp, data: ClusterData, s: Settings):
    """(n, K) each domain's data term at each spot: the expression log-likelihood to the power
    `s.weight`, plus the classifier's term when there is one (`classifier.domain_term`)."""
    ll = s.weight * comp.loglik
    return ll if data.classifier is None else ll + data.classifier


def _components(data, state: ClusterState, s: Settings):
    if not VR.get(s.variant).on_scores:
        return F.components(F.precompute(data, state.W, state.psi), state.mu, state.Sigma,
                            data.shape[1])
    return F.gaussian_components(data, state.mu, state.Sigma)


def log_prior(state: ClusterState, W_s, dprior: P.DomainPrior, s: Settings, alpha=None):
    """Log-prior of the state's parameters: domains (padding columns left out: `alpha`), and for
    the joint variant the noise and (with a learned tau) the loadings."""
    lp = P.domain_log_prior(state.mu, state.Sigma, dprior, state.kappa2, live_domains(alpha))
    if not VR.get(s.variant).on_scores:
        lp = lp + P.psi_log_prior(state.psi)
        if s.mode == "eb":
            lp = lp + P.loadings_log_prior(state.W, W_s, state.tau2)
    return lp


def step(state: ClusterState, data: ClusterData, s: Settings) -> tuple[ClusterState, StepInfo]:
    """One EM iteration (pure): mean-field E-step, MAP M-step of the domains (and, joint, of the
    loadings, noise and tau^2), empirical-Bayes kappa^2, a Newton step for beta."""
    nbr, mask, colors = data.graph.nbr, data.graph.mask, data.graph.colors
    comp = _components(data.X, state, s)
    ll = data_term(comp, data, s)
    R = state.R
    for _ in range(s.n_mean_field):
        R = mrf.mean_field_sweep(R, ll, nbr, mask, colors, s.n_colors, state.beta, data.alpha)
    counts = mrf.neighbour_sums(R, nbr, mask)
    obj = pseudo_marginal(ll, counts, state.beta, data.w, data.alpha) + \
        log_prior(state, data.W_s, data.prior, s, data.alpha)
    dst = F.domain_stats(R, comp, s.weight)
    kappa2 = P.eb_kappa2(dst, data.prior, state.Sigma) if s.learn_kappa else state.kappa2
    mu, Sigma = P.domain_map(dst, data.prior, kappa2, state.Sigma)
    W, psi, tau2 = state.W, state.psi, state.tau2
    if not VR.get(s.variant).on_scores:
        st = F.loading_stats(data.X, R, comp, shard.count(data.X, data.w))
        lam = {"eb": psi / tau2, "cv": data.lam, "none": jnp.zeros_like(psi)}[s.mode]
        W = P.update_loadings(st, data.W_s, lam)
        psi = P.update_psi(st, W, s.weight)
        if s.mode == "eb":
            tau2 = jnp.maximum(P.eb_tau2(st, data.W_s, psi), 1e-8)
        if s.mode == "none":
            W, mu, Sigma = F.whiten(W, mu, Sigma, R.sum(0))
    beta = state.beta
    if s.learn_beta:
        beta = mrf.newton_beta(beta, R, counts, alpha=data.alpha, n_steps=3)
    info = StepInfo(obj, state.beta, state.tau2, state.kappa2)
    return ClusterState(W, psi, mu, Sigma, tau2, beta, R, kappa2), info


def init(Z, labels, W, psi, tau2, beta, K: int, kappa2, w, alpha=None) -> ClusterState:
    """The starting state: domain parameters from initial labels on the factor scores Z (the
    labels carry the randomness: k-means++ or the source classification, made by the driver);
    w the spot weights or None (0 rows: padding, which starts and stays with zero
    responsibilities); alpha: ClusterData.alpha (padding columns start with none)."""
    q = Z.shape[1]
    live = 1.0 if w is None else w[:, None]
    oh = jax.nn.one_hot(labels, K, dtype=Z.dtype) * live
    Nk = oh.sum(0)
    mu = (oh.T @ Z) / jnp.maximum(Nk, 1.0)[:, None]
    d = Z[:, None, :] - mu[None]
    Sigma = jnp.einsum("nk,nkq,nkr->kqr", oh, d, d) / jnp.maximum(Nk, 1.0)[:, None, None]
    glob = jnp.cov(Z.T, aweights=w).reshape(q, q)
    Sigma = jnp.where((Nk > q)[:, None, None], Sigma, glob[None]) + 1e-3 * jnp.eye(q, dtype=Z.dtype)
    if alpha is None:
        R = 0.8 * oh + (0.2 / K) * live
    else:
        on = live_domains(alpha)
        R = (0.8 * oh + (0.2 / jnp.sum(on)) * on[None, :]) * live
    return ClusterState(W, psi, mu, Sigma, jnp.asarray(tau2, Z.dtype), jnp.asarray(beta, Z.dtype), R,
                        jnp.asarray(kappa2, Z.dtype))


def fit_cluster(data: ClusterData, state0: ClusterState, s: Settings, limit=None) -> ClusterFit:
    """Run `step` from `state0` for at most `limit` (traced; default s.max_iter) iterations, then
    three mean-field sweeps and ICM for the labels (pure; the driver jits it with `s` static)."""
    g = data.graph
    res = run_em(lambda st: step(st, data, s), state0, s.max_iter, s.tol, shard.count(data.X, data.w), limit)
    st = res.state
    comp = _components(data.X, st, s)
    ll = data_term(comp, data, s)
    R = st.R
    for _ in range(FINAL_SWEEPS):
        R = mrf.mean_field_sweep(R, ll, g.nbr, g.mask, g.colors, s.n_colors, st.beta, data.alpha)
    counts = mrf.neighbour_sums(R, g.nbr, g.mask)
    lp = log_prior(st, data.W_s, data.prior, s, data.alpha)
    obj = pseudo_marginal(ll, counts, st.beta, data.w, data.alpha) + lp
    labels = mrf.icm(jnp.argmax(R, axis=1), ll, g.nbr, g.mask, g.colors, s.n_colors, st.beta, data.alpha)
    Z = F.mean_factors(R, comp)
    return ClusterFit(st._replace(R=R), labels, Z, comp.loglik, obj, lp, res.trace, res.n_iter,
                      res.converged)
