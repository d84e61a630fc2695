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


def test_domain_field_names_anchored_classes_and_leaves_novel_domains_neutral():
    logp = jnp.log(jnp.asarray([[0.7, 0.2, 0.1], [0.1, 0.1, 0.8]]))
    f = CL.domain_field(logp, [2, 0], 3, 2.0)
    np.testing.assert_allclose(f[:, 0], 2 * logp[:, 2], rtol=1e-6)
    np.testing.assert_allclose(f[:, 1], 2 * logp[:, 0], rtol=1e-6)
    np.testing.assert_allclose(f[:, 2], 2 * np.log(1 / 3), rtol=1e-6)


def _fit(t, s, K, **kw):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        return tb.fit_em(t, s, "truth", n_domains=K, calibrate="none", **kw)


@pytest.mark.slow
def test_hybrid_fit_recovers_carried_over_classes_better_than_the_gaussians_alone():
    """Classes that carry over, one novel domain (measured: hybrid 0.881 / 0.873, Gaussians
    alone 0.843 / 0.862 on seeds 0 / 1)."""
    hyb, gen = [], []
    for seed in (0, 1):
        t, s = tb.simulate(seed, height=30, width=30, n_genes=300, error=3.0, novel_domains=1)
        res = _fit(t, s, 5)
        assert res.info["classifier"]["used"] and res.info["classifier"]["agreement"] > 0.9
        hyb.append(tb.adjusted_rand_index(res.labels, t.obs["label"]))
        gen.append(tb.adjusted_rand_index(_fit(t, s, 5, classifier=0.0).labels, t.obs["label"]))
    assert np.mean(hyb) >= 0.86 and np.mean(hyb) > np.mean(gen) + 0.01, (hyb, gen)


@pytest.mark.slow
def test_hybrid_fit_falls_back_to_the_gaussians_where_classes_do_not_carry_over():
    """Every class shifted in the target (class_shift=2): the classifier disagrees with the
    target's own domains (agreement 0.36 / 0.69 measured) and the fit is the Gaussians' alone."""
    for seed in (0, 1):
        t, s = tb.simulate(seed, height=30, width=30, n_genes=300, error=3.0, class_shift=2.0)
        res = _fit(t, s, 4)
        info = res.info["classifier"]
        assert not info["used"] and info["agreement"] < CL.AGREEMENT_MIN
        assert np.array_equal(res.labels, _fit(t, s, 4, classifier=0.0).labels)


@pytest.mark.slow
def test_em_and_svi_delta_agree_on_the_hybrid_model():
    t, s = tb.simulate(0, height=30, width=30, n_genes=300, error=3.0, novel_domains=1)
    em = _fit(t, s, 5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        sv = tb.fit_svi(t, s, "truth", n_domains=5, calibrate="none", guide="delta")
    assert sv.info["classifier"]["used"] and em.info["classifier"]["used"]
    assert tb.adjusted_rand_index(sv.labels, em.labels) >= 0.98
    assert abs(sv.beta - em.beta) < 0.05
