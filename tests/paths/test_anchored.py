"""Source-anchored domains and the priors that keep the factor model proper (issue 11)."""

from __future__ import annotations

import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from numpyro import handlers

import transst_bayes as tb
from transst_bayes import factor as F
from transst_bayes import models as M
from transst_bayes import priors as P

from conftest import ari

FAST = dict(n_factors=5, n_restarts=2, max_iter=40)


def _sim(seed=0, **kw):
    return tb.simulate(seed, height=20, width=20, n_genes=200, n_factors=5, n_domains=3, **kw)


# ------------------------------------------------------------------------------- priors
def test_psi_map_maximises_the_log_posterior():
    rng = np.random.default_rng(0)
    ss, n = rng.uniform(0.0, 50.0, 20), 40.0
    psi = np.asarray(P.psi_map(jnp.asarray(ss), n))

    def logpost(v):  # Gaussian likelihood of the residuals (ss over n values) + the prior
        return -0.5 * n * np.log(v) - 0.5 * ss / v + np.asarray(
            [float(P.psi_log_prior(jnp.asarray([x]))) for x in v])

    for f in (0.9, 1.1):
        assert np.all(logpost(psi) > logpost(psi * f))
    # a noiseless gene (ss = 0) keeps a variance bounded away from 0: no Heywood collapse
    assert float(P.psi_map(jnp.zeros(1), 1e4)[0]) == pytest.approx(2 * P.PSI_B / (1e4 + 2 * P.PSI_A + 2))


@pytest.mark.slow
def test_domain_map_maximises_the_log_posterior_and_numpyro_prior_is_the_same():
    rng = np.random.default_rng(1)
    K, q = 3, 4
    A = rng.normal(size=(K, q, q))
    cov = A @ np.swapaxes(A, 1, 2) / q + np.eye(q)
    prior = P.DomainPrior(jnp.asarray(rng.normal(size=(K, q))), jnp.asarray(cov),
                          jnp.asarray([True, True, False]))
    kappa2 = 0.3
    N = jnp.asarray([30.0, 2.0, 50.0])
    B = rng.normal(size=(K, q, q))
    st = F.DomainStats(N=N, mean=jnp.asarray(rng.normal(size=(K, q))),
                       scatter=jnp.asarray(B @ np.swapaxes(B, 1, 2)) * N[:, None, None] / q)

    def logpost(mu, Sigma):  # complete-data Gaussian log-likelihood of the stats + log-prior
        Si = jnp.linalg.inv(Sigma)
        d = st.mean - mu
        S = st.scatter + N[:, None, None] * jnp.einsum("kq,kr->kqr", d, d)
        ll = -0.5 * jnp.sum(N * jnp.linalg.slogdet(Sigma)[1] + jnp.einsum("kab,kba->k", Si, S))
        return ll + P.domain_log_prior(mu, Sigma, prior, kappa2)

    # coordinate ascent: mu given Sigma is exact, then Sigma given mu is exact
    Sig0 = jnp.asarray(cov)
    mu, _ = P.domain_map(st, prior, kappa2, Sig0)
    g_mu = jax.grad(lambda m: logpost(m, Sig0))(mu)
    np.testing.assert_allclose(g_mu, 0.0, atol=1e-4)  # float32
    _, Sigma = P.domain_map(st, prior, kappa2, Sig0)
    mu_fixed = mu
    g_S = jax.grad(lambda S: logpost(mu_fixed, 0.5 * (S + jnp.swapaxes(S, 1, 2))))(Sigma)
    np.testing.assert_allclose(g_S, 0.0, atol=1e-3)  # float32, Sigma carries a 1e-6 jitter
    # the NumPyro model's domain sites have the same log-density
    mu_v, Sig_v = jnp.asarray(rng.normal(size=(K, q)), jnp.float32), jnp.asarray(cov, jnp.float32)
    pr32 = P.DomainPrior(*(jnp.asarray(a) if a.dtype == bool else jnp.asarray(a, jnp.float32) for a in prior))
    tr = handlers.trace(handlers.substitute(handlers.seed(
        lambda: M.domain_distributions(K, q, prior=pr32, form="anchored", kappa=np.sqrt(kappa2)), 0),
        data={"mu": mu_v, "Sigma": Sig_v[:, None]})).get_trace()
    lp = sum(float(jnp.sum(s["fn"].log_prob(s["value"]))) for s in tr.values() if s["type"] == "sample")
    assert lp == pytest.approx(float(P.domain_log_prior(mu_v, Sig_v, pr32, kappa2)), rel=1e-5)


def test_empty_anchored_domain_sits_on_its_class_without_nan():
    q = 3
    prior = P.DomainPrior(jnp.ones((2, q)), jnp.broadcast_to(2.0 * jnp.eye(q), (2, q, q)),
                          jnp.asarray([True, True]))
    st = F.DomainStats(N=jnp.asarray([0.0, 10.0]), mean=jnp.zeros((2, q)), scatter=jnp.zeros((2, q, q)))
    mu, Sigma = P.domain_map(st, prior, 0.5, jnp.broadcast_to(jnp.eye(q), (2, q, q)))
    assert np.all(np.isfinite(mu)) and np.all(np.isfinite(Sigma))
    np.testing.assert_allclose(mu[0], 1.0)
    np.testing.assert_allclose(Sigma[0], 2.0 * np.eye(q), atol=1e-5)
    assert np.isfinite(float(P.eb_kappa2(st, prior, Sigma)))


# ------------------------------------------------------------------------ anchored fits
@pytest.mark.slow
def test_anchored_beats_free_on_a_noisy_target_whose_classes_match():
    src, tgt = _sim(3, error=8.0, source_error=1.0)
    truth = tgt.obs["truth"].astype(str).to_numpy()
    a = tb.fit_em(tgt, src, n_domains=3, **FAST)
    f = tb.fit_em(tgt, src, n_domains=3, domains="free", **FAST)
    assert a.settings["domains_used"] == "anchored" and f.kappa is None
    assert set(a.names) == {"domain0", "domain1", "domain2"}
    # named domains: accuracy is read off directly, no matching
    acc = np.mean(a.named_labels == truth)
    assert ari(a.labels, truth) >= ari(f.labels, truth) + 0.05, (ari(a.labels, truth), ari(f.labels, truth))
    assert acc > 0.8
    assert a.kappa < 0.3  # the classes carry over: kappa small


def test_large_class_shift_grows_kappa_and_falls_back_to_free():
    src, tgt = _sim(4, class_shift=3.0)
    small_src, small_tgt = _sim(4)
    truth = tgt.obs["truth"].astype(str).to_numpy()
    a = tb.fit_em(tgt, src, n_domains=3, **FAST)
    f = tb.fit_em(tgt, src, n_domains=3, domains="free", **FAST)
    a0 = tb.fit_em(small_tgt, small_src, n_domains=3, **FAST)
    assert a.kappa > 5 * a0.kappa, (a.kappa, a0.kappa)
    assert ari(a.labels, truth) >= ari(f.labels, truth) - 0.02
    # kappa >= 1 (1.11 here; 0.06 without the shift): the fit says that its names are weak
    weak = [w for w in a.info["warnings"] if "kappa =" in w and "barely inform" in w]
    assert a.kappa >= 1.0 and len(weak) == 1, (a.kappa, a.info["warnings"])
    assert a0.kappa < 1.0 and not any("barely inform" in w for w in a0.info["warnings"])


def _sectioned(scramble: bool):
    """A target and a source of three sections; `scramble`: each section names the classes
    differently, so that the source's classes do not carry over from section to section. Noise
    2 (held-out ARI with / without the source 0.884 / 0.768 unscrambled): at noise 1 both are
    near 0.9 and the choice is a tie once the target alone is centred on its own means."""
    src, tgt = tb.simulate(0, height=20, width=20, n_genes=80, n_factors=4, n_domains=3, source_sections=3,
                           error=2.0)
    if scramble:
        lab = src.obs["label"].astype(str).to_numpy().copy()
        names = np.unique(lab)
        for i, sec in enumerate(np.unique(src.obs["section"])):
            rows = (src.obs["section"] == sec).to_numpy()
            shift = {a: names[(j + i) % names.size] for j, a in enumerate(names)}
            lab[rows] = [shift[a] for a in lab[rows]]
        src.obs["label"] = lab
    return src, tgt


@pytest.mark.slow
@pytest.mark.parametrize("scramble", [False, True])
def test_transfer_auto_keeps_the_source_only_where_its_classes_carry_over(scramble):
    """transfer="auto" (the default): held-out source sections fitted with and without the source
    decide. Classes that carry over: the source is used (named domains, the labels of
    transfer="eb"); classes named differently in each section: the source is set aside with a
    warning (the labels of transfer="none")."""
    src, tgt = _sectioned(scramble)
    kw = dict(n_domains=3, n_factors=4, n_restarts=2)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        auto = tb.fit_em(tgt, src, **kw)
    choice = auto.info["transfer_choice"]
    ari_h = choice["held_out_ari"]
    set_aside = [w for w in caught if "did not carry over" in str(w.message)]
    expect = "none" if scramble else "eb"
    assert choice["chosen"] == expect and choice["n_sections"] == 3, choice
    assert auto.settings["transfer_used"] == expect and auto.settings["transfer"] == expect
    given = tb.fit_em(tgt, src, transfer=expect, **kw)
    np.testing.assert_array_equal(auto.labels, given.labels)
    assert auto.info["temperature"] == given.info["temperature"]  # calibrated on the same held-out fits
    truth = tgt.obs["truth"].astype(str).to_numpy()
    if scramble:
        assert ari_h["none"] > ari_h["eb"] + 0.1, ari_h
        assert len(set_aside) == 1 and not set(auto.names) & set(src.obs["label"].astype(str)), auto.names
        assert ari(auto.labels, truth) > 0.5
    else:
        assert ari_h["eb"] > ari_h["none"], ari_h
        assert not set_aside and set(auto.names) == set(src.obs["label"].astype(str))
        assert ari(auto.labels, truth) > 0.8


@pytest.mark.slow
def test_a_held_out_fit_that_collapses_neither_stops_the_fit_nor_chooses_its_mode(monkeypatch):
    """A held-out source section whose fit without the source collapses numerically (a
    FloatingPointError: found on HER2ST G2 with 300 genes, in notebook 02) is not the target's
    failure: the fit goes on, the collapsed mode is not chosen, and the other fits calibrate."""
    from transst_bayes import fit as driver

    src, tgt = _sectioned(scramble=True)  # without the collapse: "none" is chosen (test above)
    original = driver.held_out_fit
    first = src.obs["section"].astype(str).unique()[0]

    def collapsing(em, target, *a):
        if em.transfer == "none" and set(target.obs["section"].astype(str)) == {first}:
            raise FloatingPointError("every restart for K=3 ended with a non-finite objective")
        return original(em, target, *a)

    monkeypatch.setattr(driver, "held_out_fit", collapsing)
    res = tb.fit_em(tgt, src, n_domains=3, n_factors=4, n_restarts=2)
    choice = res.info["transfer_choice"]
    assert choice["chosen"] == "eb" and choice["collapsed"] == {"eb": 0, "none": 1}, choice
    assert res.info["calibration"].startswith("held-out source sections (section: 3 fits"), res.info["calibration"]
    assert np.isfinite(res.proba).all()


def test_when_every_held_out_fit_of_one_mode_collapses_the_other_modes_fits_calibrate_once(monkeypatch):
    """Every held-out fit without the source collapses: the source is kept, and its held-out fits
    (made once for the choice) calibrate the target; none is made a second time."""
    from transst_bayes import fit as driver

    src, tgt = _sectioned(scramble=False)
    original, calls = driver.held_out_fit, []

    def counting(em, *a):
        calls.append(em.transfer)
        if em.transfer == "none":
            raise FloatingPointError("every restart ended with a non-finite objective")
        return original(em, *a)

    monkeypatch.setattr(driver, "held_out_fit", counting)
    res = tb.fit_em(tgt, src, n_domains=3, n_factors=4, n_restarts=2)
    assert res.info["transfer_choice"]["chosen"] == "eb", res.info["transfer_choice"]
    assert calls.count("eb") == 3 and calls.count("none") == 3, calls
    assert res.info["calibration"].startswith("held-out source sections (section: 3 fits"), res.info["calibration"]


@pytest.mark.slow
def test_weak_anchoring_warns_once_for_the_target_not_for_held_out_sections():
    """The calibration's held-out source sections are fitted like targets; their warnings (here
    their own weak anchoring) are not the target's and are not passed on (a HER2ST call printed
    the weak-anchoring warning 8 times). A source
    of three sections whose classes are shifted from one another: without the filter the held-out
    fits add two more warnings (measured)."""
    import anndata as ad

    kw = dict(height=20, width=20, n_genes=200, n_factors=5, n_domains=3, class_shift=6.0)
    first, tgt = tb.simulate(4, **kw)
    parts = [first] + [tb.simulate(seed, **kw)[1] for seed in (5, 6)]
    for i, part in enumerate(parts):
        label = part.obs["label"] if i == 0 else part.obs["truth"]
        part.obs = part.obs[[]].assign(label=label.astype(str).to_numpy(), section=f"s{i}")
        part.obs_names = [f"s{i}_{j}" for j in range(part.n_obs)]
    src = ad.concat(parts, merge="same")
    src.obsm["spatial"] = np.concatenate([part.obsm["spatial"] for part in parts])
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        a = tb.fit_em(tgt, src, n_domains=3, transfer="eb", **FAST)  # (not "auto": anchored kept)
    assert a.info["calibration"].startswith("held-out source sections"), a.info["calibration"]
    weak = [w for w in caught if "weak anchoring" in str(w.message)]
    assert a.kappa >= 1.0 and len(weak) == 1, (a.kappa, [str(w.message)[:80] for w in weak])


@pytest.mark.slow
def test_novel_domain_is_reported_as_novel_and_names_round_trip(tmp_path):
    import anndata as ad

    src, tgt = tb.simulate(5, height=24, width=24, n_genes=200, n_factors=5, n_domains=4,
                           novel_domains=1)
    truth = tgt.obs["truth"].astype(str).to_numpy()
    res = tb.fit_em(tgt, src, n_novel=[0, 1, 2], **FAST)
    tab = res.k_table_frame()
    assert list(tab["n_novel"]) == [0, 1, 2] and tab["chosen"].sum() == 1
    assert sorted(res.names) == ["domain0", "domain1", "domain2", "domain3", "novel 1"]  # HBIC: 1 novel
    novel = res.named_labels == "novel 1"
    assert np.mean(novel[truth == "novel0"]) > 0.9 and np.mean(novel[truth != "novel0"]) < 0.05
    assert res.info["classes_absent"] == []
    # named labels survive to_anndata -> h5ad -> from_anndata
    res.to_anndata(tgt)
    path = tmp_path / "t.h5ad"
    tgt.write_h5ad(path)
    back = ad.read_h5ad(path)
    assert list(back.obs["transst"].astype(str)) == list(res.named_labels)
    again = tb.TransSTResult.from_anndata(back)
    np.testing.assert_array_equal(again.labels, res.labels)
    assert again.names == res.names and again.kappa == pytest.approx(res.kappa)


@pytest.mark.slow
def test_absent_source_class_is_reported_and_leaves_no_nan():
    src, tgt = tb.simulate(5, height=24, width=24, n_genes=200, n_factors=5, n_domains=4,
                           absent_classes=1)
    truth = tgt.obs["truth"].astype(str).to_numpy()
    res = tb.fit_em(tgt, src, n_novel=0, **FAST)
    assert np.all(np.isfinite(res.proba)) and np.all(np.isfinite(res.mu)) and np.all(np.isfinite(res.Sigma))
    assert res.info["classes_absent"] == ["domain3"]
    assert sorted(res.info["classes_found"]) == ["domain0", "domain1", "domain2"]
    assert np.mean(res.named_labels == truth) > 0.9


@pytest.mark.slow
def test_svi_delta_reproduces_anchored_em():
    """The default anchored fit (two-stage: the transferred factor scores clustered) by EM and
    by SVI with a delta guide on `models.scores_model`: one posterior, one MAP."""
    src, tgt = _sim(6, error=3.0)
    em = tb.fit_em(tgt, src, n_domains=3, n_factors=5, max_iter=200, tol=1e-7)
    assert em.settings["variant_used"] == "two_stage"
    r = tb.fit_svi(tgt, src, n_domains=3, n_factors=5, guide="delta",
                   model_options={"kappa": em.kappa}, steps_per_round=300, max_rounds=20,
                   lr=0.002, em_options={"max_iter": 200, "tol": 1e-7})
    assert r.settings["model"] == "scores_model"
    assert r.names == em.names
    np.testing.assert_array_equal(r.labels, em.labels)
    np.testing.assert_array_equal(r.W_t, em.W_t)  # the loadings of the transfer step, in both
    rel = np.linalg.norm(r.mu - em.mu) / np.linalg.norm(em.mu)
    assert rel < 1e-3, rel
    rel = np.linalg.norm(r.Sigma - em.Sigma) / np.linalg.norm(em.Sigma)
    assert rel < 1e-3, rel
    assert r.beta == pytest.approx(em.beta, rel=1e-3)
    # one set of info keys on both paths, apart from each path's own (PATH_INFO)
    from transst_bayes.job import PATH_INFO

    assert set(em.info) - set(PATH_INFO["em"]) == set(r.info) - set(PATH_INFO["svi"])
    for key in ("classes_found", "classes_absent", "classes_present", "source_n_iter", "n_colors"):
        assert r.info[key] == em.info[key], key


@pytest.mark.slow
def test_svi_delta_reproduces_free_joint_em():
    src, tgt = _sim(6, error=3.0)
    em = tb.fit_em(tgt, src, n_domains=3, n_factors=5, domains="free", max_iter=200, tol=1e-6)
    assert em.settings["variant_used"] == "joint"
    r = tb.fit_svi(tgt, src, n_domains=3, n_factors=5, domains="free", guide="delta",
                   form="ridge", model_options={"tau": em.tau}, steps_per_round=300,
                   max_rounds=10, lr=0.005, em_options={"max_iter": 200, "tol": 1e-6})
    # EM reports ICM labels, SVI the argmax of the responsibilities: one spot of 400 differs
    assert np.mean(r.labels == em.labels) >= 0.99
    rel = np.linalg.norm(r.W_t - em.W_t) / np.linalg.norm(em.W_t)
    assert rel < 1e-2, rel


def test_best_split_is_the_exact_one_dimensional_two_means():
    """plan._best_split: the cut equals brute force over every cut of the sorted projections
    (to 1e-9), two separated groups give a share near 1, a Gaussian about 2/pi (+-0.05)."""
    from transst_bayes.plan import _best_split

    rng = np.random.default_rng(0)
    Z = np.concatenate([rng.normal(size=(40, 3)), rng.normal(size=(25, 3)) + [8.0, 0, 0]])
    share, side = _best_split(Z)
    assert share > 0.9 and (side[:40].all() != side[40:].all()) and side[:40].std() == 0 == side[40:].std()
    t = np.sort((Z - Z.mean(0)) @ np.linalg.svd(Z - Z.mean(0))[2][0])
    sse = [((t[:j] - t[:j].mean()) ** 2).sum() + ((t[j:] - t[j:].mean()) ** 2).sum() for j in range(1, t.size)]
    assert 1.0 - min(sse) / ((t - t.mean()) ** 2).sum() == pytest.approx(share, abs=1e-9)
    g, _ = _best_split(rng.normal(size=(20000, 2)) * [3.0, 1.0])
    assert abs(g - 2 / np.pi) < 0.05


# ------------------------------------------------------------ anchors in the scores' space
def test_score_class_moments_match_the_scores_of_simulated_spots():
    """The two-stage variant clusters posterior-mean scores V = E[z | x] under z ~ N(0, I); a
    class z ~ N(m, S) gives V ~ N((I - M^-1) m, (I - M^-1) S (I - M^-1)' + M^-1 - M^-2),
    M = I + W' Psi^-1 W. Monte Carlo over 200k spots: within 0.01 (means) and 0.01 (covariances)."""
    rng = np.random.default_rng(0)
    p, q, n = 30, 3, 200_000
    W = rng.normal(size=(p, q)) * 0.3
    psi = rng.uniform(0.5, 2.0, p)
    m = rng.normal(size=(1, q))
    B = rng.normal(size=(q, q))
    S = B @ B.T / q + 0.2 * np.eye(q)
    z = rng.multivariate_normal(m[0], S, size=n)
    X = z @ W.T + rng.normal(size=(n, p)) * np.sqrt(psi)
    M_ = np.eye(q) + W.T @ (W / psi[:, None])
    V = (X / psi) @ W @ np.linalg.inv(M_)
    mt, St = F.score_class_moments(jnp.asarray(W), jnp.asarray(psi), jnp.asarray(m), jnp.asarray(S[None]))
    np.testing.assert_allclose(np.asarray(mt)[0], V.mean(0), atol=0.01)
    np.testing.assert_allclose(np.asarray(St)[0], np.cov(V.T), atol=0.01)
    # the contraction is real here: the latent class mean is not the scores' mean
    assert np.abs(np.asarray(mt)[0] - m[0]).max() > 0.05


@pytest.mark.slow
def test_anchored_default_does_not_collapse_on_a_small_low_depth_count_section():
    """A 400-spot quadrant of low-depth negative binomial counts fitted from the other three
    (1,200 spots): with the source classes as anchors in latent space the two-stage fit drew
    nearly every spot into one domain (352 / 35 / 13 spots here; all 400 in a sibling case,
    2026-11-27); with the classes contracted into the scores' space (`plan.class_anchors`) each
    domain keeps at least 20 spots and ARI >= 0.6 (measured 0.86; the joint variant 0.84)."""
    src, _ = tb.simulate(0, height=10, width=10, n_genes=300, n_factors=5, n_domains=3, counts=True,
                         library_size=500, dispersion=2.0, source_height=40, source_width=40)
    xy = src.obsm["spatial"]
    quad = (xy[:, 0] < 20) & (xy[:, 1] < 20)
    tgt, rest = src[quad].copy(), src[~quad].copy()
    res = tb.fit_em(tgt, rest, "label", n_domains=3, transfer="eb", calibrate="none", seed=0)
    assert res.settings["variant_used"] == "two_stage"
    assert np.bincount(res.labels, minlength=3).min() >= 20
    assert ari(res.labels, tgt.obs["label"].astype(str).to_numpy()) >= 0.6


def test_anchored_domains_are_renamed_after_the_fit_by_their_overlap_with_the_source_classes():
    """Domain 0 was anchored to class 'a' but its spots are the ones the source model calls 'c';
    domain 1 stays on 'b'; the novel domain keeps its name. Brute force over all assignments
    agrees with the matching."""
    from itertools import permutations

    from transst_bayes import plan as D

    plan = D.DomainPlan(3, (0, 1), ("a", "b", "novel 1"))
    rng = np.random.default_rng(0)
    n = 90
    lab = np.repeat([0, 1, 2], 30)
    proba = np.full((n, 3), 0.05)
    proba[np.arange(n), lab] = 0.9
    src_class = np.where(lab == 0, 2, np.where(lab == 1, 1, 0))  # domain 0's spots look like 'c'
    post = rng.dirichlet(np.ones(3), size=n) * 0.2
    post[np.arange(n), src_class] += 0.8
    post /= post.sum(1, keepdims=True)
    after = D.named_after_fit(plan, proba, post, ["a", "b", "c"])
    assert after.names == ("c", "b", "novel 1") and after.classes == (2, 1)
    assert D.renamed(plan, after) == {"a": "c"}
    S = proba[:, :2].T @ post
    best = max(permutations(range(3), 2), key=lambda cs: S[0, cs[0]] + S[1, cs[1]])
    assert tuple(best) == after.classes
    assert D.named_after_fit(plan, proba, None, ["a", "b", "c"]) == plan
    # a fit that stays on its anchors keeps every name
    post_ok = np.eye(3)[np.where(lab == 2, 2, lab)]
    assert D.named_after_fit(plan, proba, post_ok, ["a", "b", "c"]) == plan
