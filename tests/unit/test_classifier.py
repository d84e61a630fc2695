"""The source classifier's term (classifier.py): the regression's MAP, the agreement that gates
the term, and the hybrid anchored fit on both paths."""

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import transst_bayes as tb
from transst_bayes import classifier as CL


def _multinomial(seed, n=600, q=3, C=4):
    rng = np.random.default_rng(seed)
    V = rng.normal(size=(n, q))
    A = rng.normal(scale=1.5, size=(q, C))
    b = rng.normal(scale=0.5, size=C)
    logits = V @ A + b
    P = np.exp(logits - logits.max(1, keepdims=True))
    P /= P.sum(1, keepdims=True)
    y = np.array([rng.choice(C, p=p) for p in P])
    return jnp.asarray(V, jnp.float64), jnp.asarray(y), A, b


def test_fit_map_is_the_stationary_point_of_the_log_joint():
    with jax.enable_x64(True):
        V, y, _, _ = _multinomial(0)
        reg = CL.fit_map(V, y, C=4)
        g = jax.grad(lambda r: CL.log_joint(r, V, y))(reg)
        assert float(jnp.max(jnp.abs(g.A))) < 1e-6 and float(jnp.max(jnp.abs(g.b))) < 1e-6


def test_fit_map_matches_an_independent_l2_logistic_regression():
    """scikit-learn's multinomial regression with C = COEF_SCALE^2 has the same objective up to
    the intercepts' weak prior (sd B_SCALE = 5 here, none there): probabilities within 0.01."""
    sklearn = pytest.importorskip("sklearn.linear_model")
    with jax.enable_x64(True):
        V, y, A, _ = _multinomial(1)
        reg = CL.fit_map(V, y, C=4)
        P = np.exp(np.asarray(CL.log_probs(reg, V)))
    ref = sklearn.LogisticRegression(C=CL.COEF_SCALE**2, max_iter=2000, tol=1e-10).fit(np.asarray(V), np.asarray(y))
    assert np.max(np.abs(P - ref.predict_proba(np.asarray(V)))) < 0.01
    # and the truth is recovered (600 draws, 3 x 4 coefficients of sd 1.5): correlation > 0.9
    assert np.corrcoef(np.asarray(reg.A - reg.A.mean(1, keepdims=True)).ravel(),
                       (A - A.mean(1, keepdims=True)).ravel())[0, 1] > 0.9


def test_agreement_is_one_for_domains_the_classifier_predicts_and_near_zero_otherwise():
    rng = np.random.default_rng(0)
    logp = jax.nn.log_softmax(jnp.asarray(rng.normal(scale=2.0, size=(2000, 5)), jnp.float32), axis=1)
    R = jax.nn.softmax(logp, axis=1)  # responsibilities that the classifier predicts exactly
    assert abs(float(CL.agreement_weight(R, logp)) - 1.0) < 0.02
    R_other = jax.nn.one_hot(rng.integers(0, 5, 2000), 5)  # domains unrelated to it
    assert float(CL.agreement_weight(R_other, logp)) < 0.1


def test_domain_term_names_anchored_classes_and_keeps_out_classes_not_found():
    logp = jnp.log(jnp.asarray([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    f = CL.domain_term(logp, [2, 0], 3, 2.0)
    np.testing.assert_allclose(f[:, 0], 2 * logp[:, 2], rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], 2 * logp[:, 0], rtol=1e-6)
    np.testing.assert_allclose(f[:, 2], 2 * np.log(1 / 3), rtol=1e-6)


def _fit(t, s, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tb.fit_em(t, s, n_domains=4, calibrate="none", **kw)


def _ari(res, t):
    return tb.adjusted_rand_index(res.labels, t.obs["truth"])


@pytest.mark.slow
def test_hybrid_fit_recovers_classes_that_carry_over():
    """Simulated Gaussian domains (the generative term is the true model here, so the
    classifier cannot add much): measured hybrid 0.873 / 0.902, Gaussians alone 0.887 / 0.892
    on seeds 0 / 1."""
    hyb, gen = [], []
    for seed in (0, 1):
        s, t = tb.simulate(seed, height=30, width=30, n_genes=300, error=3.0)
        res = _fit(t, s)
        assert res.info["classifier"]["used"] and res.info["classifier"]["agreement"] > 0.9
        hyb.append(_ari(res, t))
        gen.append(_ari(_fit(t, s, classifier=0.0), t))
    assert min(hyb) >= 0.85 and np.mean(hyb) >= np.mean(gen) - 0.02, (hyb, gen)


@pytest.mark.slow
def test_hybrid_fit_falls_back_where_classes_do_not_carry_over():
    """Every class shifted in the target (class_shift=2): the classifier disagrees with the
    target's own domains (agreement 0.32 / 0.33 measured), the fit is the Gaussians' alone, and
    no worse than free domains by more than 0.02 (1.000 / 0.982 against 0.998 / 0.986)."""
    for seed in (0, 1):
        s, t = tb.simulate(seed, height=30, width=30, n_genes=300, error=3.0, class_shift=2.0)
        res = _fit(t, s)
        info = res.info["classifier"]
        assert not info["used"] and info["agreement"] < CL.AGREEMENT_MIN
        assert np.array_equal(res.labels, _fit(t, s, classifier=0.0).labels)
        assert _ari(res, t) >= _ari(_fit(t, s, domains="free"), t) - 0.02


@pytest.mark.slow
def test_em_and_svi_delta_agree_on_the_hybrid_model():
    s, t = tb.simulate(0, height=30, width=30, n_genes=300, error=3.0)
    em = _fit(t, s)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sv = tb.fit_svi(t, s, n_domains=4, calibrate="none", guide="delta")
    assert sv.info["classifier"]["used"] and em.info["classifier"]["used"]
    assert tb.adjusted_rand_index(sv.labels, em.labels) >= 0.98
    assert abs(sv.beta - em.beta) < 0.05


@pytest.mark.slow
def test_a_fit_that_stays_generative_is_calibrated_on_generative_held_out_fits():
    """Regression (seqFISH: the held-out source sections used the classifier's term, the target
    did not, and the temperature learned on the sharper held-out fits raised the target's ECE
    from 0.040 to 0.068): the temperature of a fit whose term is not used is the one of the same
    call with classifier=0."""
    s, t = tb.simulate(0, height=30, width=30, n_genes=300, error=3.0, class_shift=2.0,
                       source_sections=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        res = tb.fit_em(t, s, n_domains=4, transfer="eb")
        ref = tb.fit_em(t, s, n_domains=4, transfer="eb", classifier=0.0)
    assert res.info["classifier"]["agreement"] is not None and not res.info["classifier"]["used"]
    assert "held-out" in res.info["calibration"]
    assert res.info["temperature"] == pytest.approx(ref.info["temperature"], rel=1e-6)
