"""Step 1: the source factor model's EM."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import scipy.linalg

import transst_bayes as tb
from transst_bayes.job import precision
from transst_bayes.em.source import fit_source

fit_source_jit = jax.jit(fit_source, static_argnames=("C", "q", "max_iter", "tol"))


def _source(seed=0, h=30, w=30, p=300, q=6, K=4):
    src, tgt = tb.simulate(seed, height=h, width=w, n_genes=p, n_factors=q, n_domains=K)
    X = np.asarray(src.X, np.float64)
    labels = src.obs["label"].cat.codes.to_numpy()
    return X, labels, tgt.varm["W_source"], K, q


def test_source_objective_never_decreases():
    X, labels, _, K, q = _source()
    with precision("float64"):
        fit = fit_source_jit(jnp.asarray(X), jnp.asarray(labels), C=K, q=q,
                             key=jax.random.PRNGKey(0), max_iter=60, tol=0.0)
        trace = np.asarray(fit.trace)
    trace = trace[np.isfinite(trace)]
    assert trace.size >= 10  # ran (tol = 0) until the objective stopped changing at all
    assert np.all(np.diff(trace) >= -1e-6 * np.abs(trace[1:]))
    assert trace[-1] > trace[0]


def test_source_recovers_loading_subspace():
    X, labels, W_true, K, q = _source(seed=1)
    fit = fit_source_jit(jnp.asarray(X, jnp.float32), jnp.asarray(labels), C=K, q=q,
                         key=jax.random.PRNGKey(0))
    angles = np.degrees(scipy.linalg.subspace_angles(np.asarray(fit.W), W_true))
    assert angles.max() < 10.0
    # the pooled factor covariance is the identity after whitening
    Nk = np.bincount(labels, minlength=K) / labels.size
    mu, S = np.asarray(fit.mu), np.asarray(fit.Sigma)
    mbar = Nk @ mu
    C = np.einsum("k,kqr->qr", Nk, S) + np.einsum("k,kq,kr->qr", Nk, mu - mbar, mu - mbar)
    np.testing.assert_allclose(C, np.eye(q), atol=1e-2)
