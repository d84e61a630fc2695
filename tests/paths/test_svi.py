"""fit_svi: the NumPyro models fitted by SVI, against the EM path and the simulator's truth."""

from __future__ import annotations

import jax.numpy as jnp
import numpy as np
import numpyro
import numpyro.distributions as dist
import pytest

import transst_bayes as tb
from conftest import benchmark
from transst_bayes import models as M

FAST = dict(n_factors=5, steps_per_round=150, max_rounds=8, num_samples=40)


@pytest.fixture(scope="module")
def pair():
    return tb.simulate(3, height=20, width=20, n_genes=200, n_factors=5, n_domains=3, shift_genes=20)


@pytest.fixture(scope="module")
def em(pair):
    src, tgt = pair
    return tb.fit_em(tgt, src, n_domains=3, n_factors=5, variant="joint")  # the model of form=...


def _truth(tgt):
    return tgt.obs["truth"].cat.codes.to_numpy()


@pytest.mark.slow
def test_delta_guide_reproduces_em(pair, em):
    src, tgt = pair
    r = tb.fit_svi(tgt, src, n_domains=3, guide="delta", form="ridge",
                   model_options={"tau": em.tau}, **FAST)
    assert tb.adjusted_rand_index(r.labels, em.labels) >= 0.98
    rel = np.linalg.norm(r.W_t - em.W_t) / np.linalg.norm(em.W_t)
    assert rel < 0.1, rel
    assert abs(r.beta - em.beta) < 0.25
    assert r.posterior["W"].shape == (1, 200, 5)
    # one assembly (issue 14): the data, source and gene fields and the shared settings agree
    for name in ("genes", "obs_names", "source_classes"):
        assert list(getattr(r, name)) == list(getattr(em, name)), name
    for name in ("W_s", "psi_s", "mu_s", "Sigma_s", "gene_mean", "gene_scale"):
        np.testing.assert_array_equal(getattr(r, name), getattr(em, name), err_msg=name)
    shared = [k for k in em.settings if k.startswith("data_")] + ["transfer_used", "version", "domains_used"]
    assert {k: r.settings[k] for k in shared} == {k: em.settings[k] for k in shared}


@pytest.mark.slow
def test_without_a_source_the_default_keeps_the_em_loadings_and_labels(pair):
    """Without a source fit_svi's default model is `fixed_loadings_model`: the loadings and noise
    are the EM fit's (no site), the delta guide's labels are EM's (both by ICM), and AutoNormal
    keeps every domain (the free-loadings model sent every HER2ST spot to one domain)."""
    _, tgt = pair
    em = tb.fit_em(tgt, None, n_domains=3, n_factors=5)
    for guide in ("delta", "normal"):
        r = tb.fit_svi(tgt, None, n_domains=3, guide=guide, **FAST)
        assert r.settings["model"] == "fixed_loadings_model"
        assert "W" not in r.posterior and "psi" not in r.posterior and "mu" in r.posterior
        np.testing.assert_allclose(r.W_t, em.W_t, rtol=1e-6)
        assert tb.adjusted_rand_index(r.labels, em.labels) >= (0.98 if guide == "delta" else 0.9)
        assert np.bincount(r.labels, minlength=3).min() >= 0.1 * tgt.n_obs


@pytest.mark.slow
def test_tau_limits(pair, em):
    src, tgt = pair
    small = tb.fit_svi(tgt, src, n_domains=3, guide="delta", form="ridge",
                       model_options={"tau": 1e-3}, **FAST)
    np.testing.assert_allclose(small.W_t, small.W_s, atol=0.01)
    big = tb.fit_svi(tgt, src, n_domains=3, guide="delta", form="ridge",
                     model_options={"tau": 1e3}, **FAST)
    free = tb.fit_svi(tgt, src, n_domains=3, guide="delta", model=M.no_transfer_model, **FAST)
    assert tb.adjusted_rand_index(big.labels, free.labels) >= 0.95
    # the same fit: equal log-likelihood per spot (rotation of the factors aside)
    assert abs(big.spot_loglik.mean() - free.spot_loglik.mean()) < 0.05 * abs(free.spot_loglik.mean()) 


@pytest.mark.slow
def test_horseshoe_finds_planted_breaking_genes_and_posterior_outputs(pair, tmp_path):
    from sklearn.metrics import roc_auc_score

    src, tgt = pair
    r = tb.fit_svi(tgt, src, n_domains=3, guide="normal", form="horseshoe", **FAST)
    assert tb.adjusted_rand_index(r.labels, _truth(tgt)) >= 0.85
    g = tb.transfer_breaking_genes(r)
    planted = tgt.var.loc[g["gene"], "transfer_breaking"].to_numpy()
    assert planted.sum() == 20
    assert roc_auc_score(planted, g["score"]) >= 0.9
    # posterior draws vary; probabilities are proper
    assert r.posterior["W"].shape[0] == 40 and np.std(r.posterior["W"], axis=0).mean() > 0
    np.testing.assert_allclose(r.proba.sum(1), 1.0, rtol=1e-5)
    row = r.k_table[0]
    assert np.isfinite(row["elpd_waic"]) and np.isfinite(row["elpd_loo"]) and np.isfinite(row["hbic"])
    mk = tb.marker_genes(r, n_top=5)
    assert len(mk) == 15 and set(mk.columns) >= {"contrast", "ci_low", "ci_high", "p_positive", "lfsr"}
    assert np.all(mk["ci_low"] <= mk["contrast"]) and np.all(mk["contrast"] <= mk["ci_high"])
    # InferenceData round trip through netCDF keeps values and dims
    import arviz as az

    idata = tb.to_inference_data(r)
    path = tmp_path / "fit.nc"
    idata.to_netcdf(str(path))
    back = az.from_netcdf(str(path))
    assert back.posterior["W"].dims == ("chain", "draw", "gene", "factor")
    assert back.posterior["mu"].dims == ("chain", "draw", "domain", "factor")
    assert back.log_likelihood["x"].dims == ("chain", "draw", "spot")
    np.testing.assert_allclose(back.posterior["W"].values, idata.posterior["W"].values)
    np.testing.assert_allclose(back.spots["proba"].values, r.proba)
    assert list(back.posterior["gene"].values) == list(r.genes)
    # the result file keeps the posterior
    r.save(tmp_path / "r.npz")
    r2 = tb.load_result(tmp_path / "r.npz")
    np.testing.assert_allclose(r2.posterior["W"], r.posterior["W"])
    np.testing.assert_allclose(r2.spot_loglik, r.spot_loglik)


def student_t_model(data, K, n_factors, batch_size=None, df=4.0):
    """A user's variant in the models/ style: explicit factors, Student-t noise."""
    n, p = data.X.shape
    W = M.transfer_loadings(data.W_s, form="global")
    psi = M.noise_variances(p)
    mu, L = M.domain_distributions(K, n_factors)
    beta = M.smoothness()
    with numpyro.plate("spot", n, subsample_size=batch_size) as idx:
        logits = M.mean_field_logits(beta, data.field[idx])
        z = numpyro.sample("z", M.DomainMixture(logits, M.factor_components(mu, L)))
        numpyro.sample("x", dist.StudentT(df, z @ W.T, jnp.sqrt(psi)).to_event(1), obs=data.X[idx])


@pytest.mark.slow
def test_user_variant_runs_through_fit_svi(pair):
    src, tgt = pair
    r = tb.fit_svi(tgt, src, n_domains=3, model=student_t_model, guide="normal",
                   model_options={"df": 5.0}, **FAST)
    assert r.settings["model"] == "student_t_model"
    assert r.factors.shape == (400, 5) and np.all(np.isfinite(r.proba))
    assert tb.adjusted_rand_index(r.labels, _truth(tgt)) >= 0.8


@pytest.mark.slow
def test_minibatch_fit_agrees_with_em(pair, em):
    src, tgt = pair
    r = tb.fit_svi(tgt, src, n_domains=3, guide="normal", batch_size=100, **FAST)
    assert tb.adjusted_rand_index(r.labels, em.labels) >= 0.95


@pytest.mark.slow
def test_minibatch_intervals_cover():
    """Minibatch SVI reads its posterior from the last round's averaged iterates: 2,500 spots in
    batches of 250 (seed 1 of benchmarks/svi.py at size 50). Measured: 90% coverage 0.934 (0.818
    from the last iterate, before the averaging), ECE 0.007. Free domains (see
    test_calibration_on_simulated_data)."""
    one = benchmark("svi").one  # the benchmark's own computation

    row = one(1, 50, 300, 10, 4, "normal", {"batch_size": 250}, domains="free")
    assert 0.85 <= row["coverage90"] <= 0.97
    assert row["ECE"] <= 0.05
    assert row["ARI EM vs SVI"] >= 0.95


@pytest.mark.slow
def test_lowrank_guide(pair, em):
    """AutoLowRankMultivariateNormal with a rank-3 factor: the EM labels, correlated draws."""
    src, tgt = pair
    r = tb.fit_svi(tgt, src, n_domains=3, guide="lowrank", rank=3, form="global", **FAST)
    assert r.settings["rank"] == 3 and r.settings["guide"] == "lowrank"
    assert tb.adjusted_rand_index(r.labels, em.labels) >= 0.95
    W = r.posterior["W"].reshape(FAST["num_samples"], -1)
    assert W.shape == (40, 200 * 5) and np.all(W.std(0) > 0)


@pytest.mark.slow
def test_k_table_loglik_is_the_em_warm_starts(pair):
    """fit_svi's K table scores K by its EM warm start's log-likelihood: the same number as
    fit_em's for the joint variant (objective less the loadings' prior) and the two-stage one
    (whose objective holds no prior: subtracting it there was a bug)."""
    src, tgt = pair
    for variant in ("joint", "two_stage"):
        e = tb.fit_em(tgt, src, n_domains=3, n_factors=5, variant=variant)
        r = tb.fit_svi(tgt, src, n_domains=3, guide="delta", n_factors=5, steps_per_round=10,
                       max_rounds=1, em_options={"variant": variant})
        assert r.k_table[0]["loglik"] == pytest.approx(e.k_table[0]["loglik"], rel=1e-6), variant
        assert r.k_table[0]["bic"] == pytest.approx(e.k_table[0]["bic"], rel=1e-6), variant


def test_svi_bad_input(pair):
    src, tgt = pair
    with pytest.raises(ValueError, match="guide"):
        tb.fit_svi(tgt, src, n_domains=3, guide="laplace")
    with pytest.raises(ValueError, match="batch_size"):
        tb.fit_svi(tgt, src, n_domains=3, batch_size=10_000, n_factors=5)
    with pytest.raises(ValueError, match="form"):
        tb.fit_svi(tgt, src, n_domains=3, form="lasso")
    with pytest.raises(ValueError, match="rank"):
        tb.fit_svi(tgt, src, n_domains=3, guide="lowrank", rank=0)


@pytest.mark.slow
def test_calibration_on_simulated_data():
    """Seed 1 of benchmarks/svi.py: per-spot probabilities calibrated (ECE <= 0.05) and 90%
    credible intervals of the domain expression covering the truth at 0.85-0.95. Free domains:
    anchored ones cover 0.80 here (kappa learned at 0.05 pins the domain means to the source's
    classes more tightly than their error allows), a known gap that issue 12 owns."""
    one = benchmark("svi").one  # the benchmark's own computation

    row = one(1, 30, 300, 10, 4, "normal", domains="free")
    assert row["ECE"] <= 0.05
    assert 0.85 <= row["coverage90"] <= 0.95
    assert row["ARI EM vs SVI"] >= 0.95
