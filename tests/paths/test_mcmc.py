"""fit_mcmc: the NumPyro models sampled by NUTS, against the EM fit and the simulator's truth."""

from __future__ import annotations

import numpy as np
import pytest

import transst_bayes as tb

# small enough for a test (2 chains of 150 draws), long enough for R-hat to mean something
SHORT = dict(n_factors=5, num_warmup=150, num_samples=150, num_chains=2)


@pytest.fixture(scope="module")
def pair():
    return tb.simulate(1, height=14, width=14, n_genes=120, n_factors=5, n_domains=3)


@pytest.fixture(scope="module")
def fitted(pair):
    src, tgt = pair
    em = tb.fit_em(tgt, src, n_domains=3, n_factors=5)
    res = tb.fit_mcmc(tgt, src, n_domains=3, **SHORT)
    return em, res


@pytest.mark.slow
def test_mcmc_samples_only_the_models_sites_and_reports_their_convergence(pair, fitted):
    """R-hat and ESS are reported for the sites the model samples (scores_model: mu, Sigma,
    beta) and for nothing else: the EM fit's loadings and noise are not NUTS dimensions (they
    were, as frozen dimensions with R-hat of 4-8, before the starting values were restricted
    to the model's latent sites)."""
    _, tgt = pair
    em, res = fitted
    m = res.info["mcmc"]
    assert set(m["rhat"]) == set(res.posterior) - {"W", "psi"} == {"mu", "Sigma", "beta"}, m["rhat"]
    assert all(np.isfinite(r) and r < 1.1 for r in m["rhat"].values()), m["rhat"]
    assert all(e > 20 for e in m["ess_bulk"].values()), m["ess_bulk"]
    assert m["mean_tree_size"] < 64, m["mean_tree_size"]  # no bogus flat dimensions to wander
    assert min(m["chain_agreement"]) >= 0.95, m["chain_agreement"]
    S = SHORT["num_chains"] * SHORT["num_samples"]
    assert res.posterior["mu"].shape == (S, 3, 5)
    assert res.spot_loglik.shape == (S, tgt.n_obs)
    np.testing.assert_allclose(res.proba.sum(1), 1.0, atol=1e-6)
    assert res.settings["method"] == "mcmc"


@pytest.mark.slow
def test_mcmc_agrees_with_em_and_the_truth(pair, fitted):
    """The posterior mean of each domain's expected expression (W_t mu_k, which does not
    depend on the signs of the factors) is near the EM (MAP) fit's, and the labels recover the
    simulated domains."""
    _, tgt = pair
    em, res = fitted
    truth = tgt.obs["truth"].cat.codes.to_numpy()
    assert tb.adjusted_rand_index(res.labels, truth) >= 0.8
    assert tb.adjusted_rand_index(res.labels, em.labels) >= 0.9
    e_mcmc, e_em = res.W_t @ res.mu.T, em.W_t @ em.mu.T
    rel = np.linalg.norm(e_mcmc - e_em) / np.linalg.norm(e_em)
    assert rel < 0.1, rel


@pytest.mark.slow
def test_mcmc_inference_data_has_one_chain_dimension_per_chain(fitted):
    _, res = fitted
    idata = tb.to_inference_data(res)
    assert idata.posterior.sizes["chain"] == SHORT["num_chains"]
    assert idata.posterior.sizes["draw"] == SHORT["num_samples"]
    assert idata.log_likelihood["x"].shape[:2] == (SHORT["num_chains"], SHORT["num_samples"])


@pytest.mark.slow
def test_mcmc_result_saves_and_loads(fitted, tmp_path):
    _, res = fitted
    path = res.save(tmp_path / "mcmc.h5ad")
    back = tb.load_result(path)
    np.testing.assert_allclose(back.proba, res.proba)
    assert back.info["mcmc"]["num_chains"] == SHORT["num_chains"]


@pytest.mark.parametrize("bad, match", [
    (dict(num_chains=0), "num_chains"),
    (dict(chain_method="threads"), "chain_method"),
    (dict(target_accept=1.0), "target_accept"),
    (dict(num_samples=2.5), "num_samples"),
    (dict(init_jitter=-1.0), "init_jitter"),
    (dict(dtype="float16"), "dtype"),
    (dict(criterion="aic"), "criterion"),
])
def test_mcmc_bad_options_are_named_before_any_work(bad, match):
    with pytest.raises((ValueError, TypeError), match=match):
        tb.fit_mcmc(np.zeros((4, 3)), None, n_domains=2, spatial=np.zeros((4, 2)), **bad)


@pytest.mark.slow
def test_mcmc_result_writes_into_anndata_and_gives_marker_intervals(pair, fitted):
    """The same result interface as the other paths: keys written, markers over the draws."""
    from transst_bayes import tl

    _, tgt = pair
    _, res = fitted
    ad = res.to_anndata(tgt, copy=True)
    assert ad.obsm["transst_proba"].shape == (tgt.n_obs, 3)
    m = tl.markers(ad, copy=True).uns["transst_markers"]
    assert (m["ci_high"] > m["ci_low"]).all()  # intervals over the draws, not points
    assert set(m["posterior"]) == {"mcmc"} and set(m["n_draws"]) == {res.spot_loglik.shape[0]}


def test_tl_transst_passes_method_mcmc_to_fit_mcmc():
    from transst_bayes import tl

    src, tgt = tb.simulate(0, height=6, width=6, n_genes=20, n_factors=2, n_domains=2)
    with pytest.raises(ValueError, match="num_chains"):
        tl.transst(tgt, src, n_domains=2, method="mcmc", num_chains=0)


@pytest.mark.slow
def test_mcmc_is_deterministic_for_a_fixed_seed():
    src, tgt = tb.simulate(2, height=8, width=8, n_genes=30, n_factors=2, n_domains=2)
    kw = dict(n_domains=2, n_factors=2, num_warmup=30, num_samples=30, num_chains=2, seed=3)
    a, b = (tb.fit_mcmc(tgt, src, **kw) for _ in range(2))
    np.testing.assert_array_equal(a.posterior["mu"], b.posterior["mu"])
    np.testing.assert_array_equal(a.labels, b.labels)
    c = tb.fit_mcmc(tgt, src, **dict(kw, seed=4))
    assert not np.array_equal(a.posterior["mu"], c.posterior["mu"])  # the seed reaches the chains
