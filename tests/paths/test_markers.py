"""Marker-gene intervals of EM fits: draws of the domain means from their conditional posterior
(`summary.em_mean_draws`), checked against the Hessian of the explicit log-posterior."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transst_bayes as tb
from transst_bayes.priors import MU_SCALE
from transst_bayes.summary import em_mean_draws, marker_genes


@pytest.fixture(scope="module")
def pair():
    src, tgt = tb.simulate(0, height=14, width=14, n_genes=40, n_factors=3, n_domains=3)
    tgt.uns.pop("simulation")
    return src, tgt


@pytest.mark.slow
def test_em_marker_table_has_real_intervals(pair):
    """Regression: an EM fit's table had ci_low == ci_high == contrast, p_positive 1, NaN lfsr and
    one draw, and its temperature changed nothing."""
    src, tgt = pair
    res = tb.fit_em(tgt, src, n_domains=3, n_factors=3, n_restarts=1, calibrate="none")
    m = marker_genes(res)
    assert (m["n_draws"] == 400).all() and (m["posterior"] == "em_conditional").all()
    assert (m["ci_low"] < m["contrast"]).all() and (m["contrast"] < m["ci_high"]).all()
    assert m["lfsr"].between(0.0, 0.5).all() and m["lfsr"].max() > 0.0
    wide = marker_genes(res, temperature=4.0)
    np.testing.assert_allclose((wide["ci_high"] - wide["ci_low"]).sum(),
                               2.0 * (m["ci_high"] - m["ci_low"]).sum(), rtol=1e-6)


def _explicit_precision(res, X, k):
    """Minus the Hessian in mu_k of sum_j r_jk w log N(x_j | W mu_k, W Sigma_k W^T + Psi) +
    log N(mu_k | m_k, s_k^2 I), by autodiff of the explicit p x p density (no Woodbury)."""
    W = jnp.asarray(res.W_t, jnp.float64)
    C = W @ jnp.asarray(res.Sigma[k], jnp.float64) @ W.T + jnp.diag(jnp.asarray(res.psi, jnp.float64))
    r = jnp.asarray(res.proba[:, k], jnp.float64)
    Xj = jnp.asarray(X, jnp.float64)
    s2 = MU_SCALE**2 if res.kappa is None or res.names[k] not in res.source_classes else res.kappa**2

    def logpost(mu):
        ll = jax.scipy.stats.multivariate_normal.logpdf(Xj, W @ mu, C)
        return jnp.sum(r * ll) - 0.5 * jnp.sum(mu**2) / s2

    return -np.asarray(jax.hessian(logpost)(jnp.asarray(res.mu[k], jnp.float64)))


@pytest.mark.slow
def test_em_mean_draws_match_the_explicit_conditional_posterior(pair):
    """Joint variant (free domains, z integrated out): the draws' covariance is the inverse of
    the explicit Hessian (p x p covariances, autodiff) within Monte Carlo error."""
    src, tgt = pair
    from transst_bayes.job import precision

    with precision("float64"):
        res = tb.fit_em(tgt, None, n_domains=3, n_factors=3, n_restarts=1, dtype="float64")
        assert res.settings["variant_used"] == "joint"
        from transst_bayes.data import DataSettings, prepare

        X = prepare(tgt, None, "label", DataSettings(dtype="float64")).X
        D = em_mean_draws(res, n_draws=40000, seed=1)
        for k in range(3):
            cov = np.linalg.inv(_explicit_precision(res, X, k))
            np.testing.assert_allclose(np.cov(D[:, k].T), cov, rtol=0.05, atol=0.03 * np.abs(cov).max())
            np.testing.assert_allclose(D[:, k].mean(0), res.mu[k], atol=4 * np.sqrt(cov.max() / 40000))


def test_em_mean_draws_two_stage_anchored(pair):
    """Two-stage variant (the default with a source): precision w N_k Sigma_k^-1 + I / kappa^2,
    w the power on the expression likelihood the fit used (0.25 beside the classifier's term)."""
    src, tgt = pair
    res = tb.fit_em(tgt, src, n_domains=3, n_factors=3, n_restarts=1, calibrate="none")
    assert res.settings["variant_used"] == "two_stage" and res.kappa is not None
    D = em_mean_draws(res, n_draws=40000, seed=2)
    N = res.proba.sum(0)
    w = res.info["classifier"]["weight"]
    for k in range(3):
        s2 = res.kappa**2 if res.names[k] in res.source_classes else MU_SCALE**2
        cov = np.linalg.inv(w * N[k] * np.linalg.inv(res.Sigma[k]) + np.eye(3) / s2)
        np.testing.assert_allclose(np.cov(D[:, k].T), cov, rtol=0.05, atol=0.03 * np.abs(cov).max())
