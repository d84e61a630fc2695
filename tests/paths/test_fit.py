"""fit_em end to end: recovery on simulated data, K selection, transfer, agreement, determinism."""

from __future__ import annotations

import jax
import numpy as np
import pytest

import transst_bayes as tb
from conftest import ari

FAST = dict(n_factors=5, graph="st", n_restarts=2)


@pytest.mark.slow
def test_small_fit_recovers_domains(small_pair):
    src, tgt = small_pair
    res = tb.fit_em(tgt, src, n_domains=3, **FAST)
    assert ari(res.labels, tgt.obs["truth"]) >= 0.85
    n, K = tgt.n_obs, 3
    assert res.proba.shape == (n, K) and res.factors.shape == (n, 5)
    np.testing.assert_allclose(res.proba.sum(1), 1.0, atol=1e-5)
    assert res.W_t.shape == res.W_s.shape == (200, 5)
    assert np.isfinite(res.tau) and 0 <= res.beta <= 6
    # the trace of the chosen fit's final run: one objective per iteration, and the parameters
    # entering each iteration (issue 14); it ends where the run converged or stopped
    n_iter = res.k_table[0]["n_iter"]
    assert res.trace.shape == (n_iter,) and np.all(np.isfinite(res.trace))
    par = res.info["trace"]
    assert set(par) == {"beta", "tau", "kappa"} and all(len(v) == n_iter for v in par.values())
    assert par["beta"][0] != par["beta"][-1]  # beta is learned: it moved
    if res.k_table[0]["converged"]:
        assert abs(res.trace[-1] - res.trace[-2]) <= 1e-4 * n
    # seconds by stage: disjoint stages (the held-out fits of transfer="auto" included) that
    # add up to the total within 5%
    t = res.info["timings"]
    stages = ("prepare", "graph", "held_out", "source", "transfer", "cluster", "assemble", "calibration")
    assert set(t) == set(stages) | {"total"} and min(t.values()) >= 0.0
    assert 0.95 * t["total"] <= sum(t[k] for k in stages) <= t["total"] and t["total"] == res.info["seconds"]
    assert np.all((res.maxprob >= 1 / K - 1e-6) & (res.maxprob <= 1 + 1e-6))
    assert np.all(res.entropy >= -1e-9) and np.all(res.entropy <= np.log(K) + 1e-6)


@pytest.mark.parametrize("kw", [dict(variant="two_stage"), dict(transfer="cv"),
                                dict(transfer="none"), dict(beta=1.0)])
def test_variants_run_and_recover(small_pair, kw):
    src, tgt = small_pair
    res = tb.fit_em(tgt, src, n_domains=3, **dict(FAST, **kw))
    assert ari(res.labels, tgt.obs["truth"]) >= 0.8
    if kw.get("transfer") == "none":
        assert res.tau == np.inf
    if "beta" in kw:
        assert res.beta == pytest.approx(1.0)


def test_no_source_means_no_transfer(small_pair):
    _, tgt = small_pair
    res = tb.fit_em(tgt, None, n_domains=3, **FAST)
    assert res.W_s is None and res.tau == np.inf
    assert res.settings["transfer_used"] == "none"
    assert ari(res.labels, tgt.obs["truth"]) >= 0.8


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_a_fit_without_the_source_ignores_the_targets_offset_from_the_pooled_mean(seed):
    """transfer="none" beside a source: pooled standardisation leaves the target's gene means off
    zero by its section effect, and the free model has no intercept. Before the fix the offset
    sat in the domain means, which the whitening step blew up (|mu_k| ~ 2,000-3,000, objective
    falling by 9e4-1.8e5 nats over the run, ARI 0.756 -> 0.517 and 0.876 -> 0.589 on seeds 0, 1
    with a 2-sd offset; every float32 restart non-finite on HER2ST B1 with genes="source",
    n_genes=1000). Now the target is centred on its own means: the objective never falls by more
    than rounding, |mu_k| stays O(1) (1.4-1.6), and the reported gene means carry the offset
    back. (ARI: 0.446 / 0.720 now, 0.753 / 0.882 without the offset; pooled scaling still differs
    from the target's own, which moves the PCA start.)"""
    src, tgt = tb.simulate(seed, height=20, width=20, n_genes=200, n_factors=5)
    off = 2.0 * np.random.default_rng(seed).normal(size=tgt.n_vars)
    shifted = tgt.copy()
    shifted.X = tgt.X + off[None, :]
    kw = dict(n_domains=4, transfer="none", calibrate="none", dtype="float64", n_restarts=1)
    res = tb.fit_em(shifted, src, "label", **kw)
    tr = res.trace
    assert np.all(np.diff(tr) >= -1e-6 * np.abs(tr[:-1])), np.diff(tr).min()
    assert np.abs(res.mu).max() < 10.0
    assert ari(res.labels, tgt.obs["truth"]) >= 0.4
    # the target's own gene means, offset included (log-normalised scale: the simulated values)
    own = np.asarray(shifted[:, res.genes].X).mean(axis=0)
    np.testing.assert_allclose(res.gene_mean, own, atol=1e-4)


def test_the_target_is_centred_only_where_its_standardisation_did_not(monkeypatch):
    """No extra pass over the matrix where standardisation already removed the target's own
    means (no source, or standardize="separate"); one where it did not (pooled with a source,
    or standardize="none")."""
    from transst_bayes import job

    calls = []
    original = job.centred
    monkeypatch.setattr(job, "centred", lambda prep: calls.append(1) or original(prep))
    src, tgt = tb.simulate(0, height=12, width=12, n_genes=60, n_factors=3)
    kw = dict(n_domains=2, n_factors=3, n_restarts=1, calibrate="none")
    for source, extra, expect in ((None, {}, 0), (src, dict(standardize="separate"), 0),
                                  (src, {}, 1), (None, dict(standardize="none"), 1)):
        calls.clear()
        tb.fit_em(tgt, source, "label", transfer="none", **kw, **extra)
        assert len(calls) == expect, (source is None, extra)


def test_source_classes_may_differ_from_target_domains():
    src, tgt = tb.simulate(2, height=20, width=20, n_genes=200, n_factors=5, n_domains=4)
    # merge two source classes: the source has 3 classes, the target 4 domains
    lab = src.obs["label"].astype(str).replace({"domain3": "domain2"})
    src.obs["label"] = lab.astype("category")
    res = tb.fit_em(tgt, src, n_domains=4, **FAST)
    assert len(res.source_classes) == 3 and res.n_domains == 4
    assert ari(res.labels, tgt.obs["truth"]) >= 0.8


def test_same_seed_same_labels(small_pair):
    src, tgt = small_pair
    a = tb.fit_em(tgt, src, n_domains=3, seed=3, **FAST)
    b = tb.fit_em(tgt, src, n_domains=3, seed=3, **FAST)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.proba, b.proba)


@pytest.mark.slow
def test_anchored_fits_give_one_answer_for_every_seed(small_pair):
    """Regression: the seed drew the randomised PCA that starts the source's (and the free
    target's) factor model, a numerical device that the default anchored fit (one deterministic
    clustering start) turned into seed-to-seed differences (seqFISH: labels of seeds 0 and 1
    agreed at ARI 0.80-1.00). The sketch is drawn from one fixed key now: anchored fits agree
    exactly across seeds; the seed still draws free domains' k-means++ starts."""
    src, tgt = small_pair
    a, b = (tb.fit_em(tgt, src, n_domains=3, seed=s, transfer="eb", calibrate="none", **FAST) for s in (0, 5))
    assert set(a.names) <= set(src.obs["label"].astype(str))  # anchored: named after source classes
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_array_equal(a.proba, b.proba)
    np.testing.assert_array_equal(a.W_t, b.W_t)
    free = [tb.fit_em(tgt, n_domains=3, seed=s, calibrate="none", **FAST).proba for s in (0, 5)]
    assert not np.array_equal(*free)


@pytest.mark.slow
def test_float32_and_float64_agree(small_pair):
    src, tgt = small_pair
    a = tb.fit_em(tgt, src, n_domains=3, dtype="float32", **FAST)
    b = tb.fit_em(tgt, src, n_domains=3, dtype="float64", **FAST)
    assert b.proba.dtype == np.float64 and b.W_t.dtype == np.float64
    assert ari(a.labels, b.labels) >= 0.98
    assert abs(a.beta - b.beta) < 0.05
    assert abs(a.tau - b.tau) / b.tau < 0.05


@pytest.mark.slow
def test_compiled_and_uncompiled_agree():
    src, tgt = tb.simulate(4, height=6, width=6, n_genes=20, n_factors=2, n_domains=2)
    kw = dict(n_factors=2, graph="st", n_restarts=1, max_iter=3, dtype="float64")
    a = tb.fit_em(tgt, src, n_domains=2, **kw)
    with jax.disable_jit():
        b = tb.fit_em(tgt, src, n_domains=2, **kw)
    np.testing.assert_array_equal(a.labels, b.labels)
    np.testing.assert_allclose(a.proba, b.proba, atol=1e-6)
    np.testing.assert_allclose(a.W_t, b.W_t, atol=1e-6)
    np.testing.assert_allclose(a.trace, b.trace, rtol=1e-9)


def test_k_table_has_every_criterion(small_pair):
    src, tgt = small_pair
    res = tb.fit_em(tgt, src, n_domains=[2, 3, 4], **FAST)
    assert [r["K"] for r in res.k_table] == [2, 3, 4]
    for r in res.k_table:
        for c in ("loglik", "sbic", "bic", "mbic", "hbic", "icl", "n_params", "beta", "n_iter"):
            assert np.isfinite(r[c])
        assert r["n_params"] == r["K"] * (5 + 15) + 1
    chosen = [r for r in res.k_table if r["chosen"]]
    assert len(chosen) == 1 and chosen[0]["K"] == res.n_domains
    assert chosen[0]["hbic"] == min(r["hbic"] for r in res.k_table)  # the default criterion


def test_empty_cluster_does_not_produce_nan(small_pair):
    """Asking for far more domains than the data hold leaves some nearly empty: no NaN."""
    src, tgt = small_pair
    res = tb.fit_em(tgt, src, n_domains=12, **FAST)
    assert np.all(np.isfinite(res.proba)) and np.all(np.isfinite(res.mu))
    assert np.all(np.isfinite(res.Sigma))


@pytest.mark.slow
def test_paper_setting_ari_and_hbic(paper_pair):
    src, tgt = paper_pair
    kw = dict(n_factors=10, transfer="eb", calibrate="none")  # the held-out fits are not the subject
    res = tb.fit_em(tgt, src, n_domains=[2, 3, 4, 5, 6], **kw)
    table = {r["K"]: r for r in res.k_table}
    assert abs(res.n_domains - 4) <= 1
    fit4 = tb.fit_em(tgt, src, n_domains=4, **kw)
    assert ari(fit4.labels, tgt.obs["truth"]) >= 0.9
    assert table[4]["hbic"] < table[2]["hbic"] and table[4]["sbic"] < table[2]["sbic"]


@pytest.mark.slow
def test_free_domains_choose_the_true_k_on_the_k_selection_simulation():
    """benchmarks/simulation.py --ksel's setting (40 x 40, p = 1,000, q = 10, true K = 4, K in
    3..5): the default criterion picks K = 4 for free domains. With the published constant 2
    above 1,000 spots HBIC picked K = 3 here (seeds 1 and 2; one seed kept for the suite's time:
    the fourth domain gains 241-571 nats, the constant 2 charges about 365); anchored fits
    choose 0 novel domains."""
    seed = 1
    src, tgt = tb.simulate(seed, height=40, width=40, n_genes=1000, n_factors=10, n_domains=4)
    kw = dict(n_factors=10, seed=seed, transfer="eb", calibrate="none")  # K is the subject
    free = tb.fit_em(tgt, src, domains="free", n_domains=[3, 4, 5], **kw)
    assert free.n_domains == 4, [(r["K"], r["hbic"]) for r in free.k_table]
    assert ari(free.labels, tgt.obs["truth"]) >= 0.85
    anchored = tb.fit_em(tgt, src, **kw)
    assert anchored.n_domains == 4 and [r["n_novel"] for r in anchored.k_table if r["chosen"]] == [0]


@pytest.mark.slow
def test_large_shift_grows_tau_and_transfer_does_no_harm():
    taus, gap = {}, []
    for seed in (0, 1):
        for shift in ("none", "large"):
            src, tgt = tb.simulate(seed, height=30, width=30, shift=shift)
            res = tb.fit_em(tgt, src, n_domains=4, n_factors=10)
            taus.setdefault(shift, []).append(res.tau)
            if shift == "large":
                base = tb.fit_em(tgt, src, n_domains=4, n_factors=10, transfer="none")
                gap.append(ari(res.labels, tgt.obs["truth"]) - ari(base.labels, tgt.obs["truth"]))
    assert min(taus["large"]) > 3 * max(taus["none"])
    assert np.mean(gap) >= -0.02


def test_likelihood_weight_tempers_towards_the_spatial_prior():
    # noisy target: with the expression likelihood tempered, neighbouring labels agree more
    # and the responsibilities are less extreme
    src, tgt = tb.simulate(1, height=20, width=20, n_genes=200, n_factors=5, n_domains=3, error=6.0)
    # free domains: anchored ones keep their source-class priors at full strength while the
    # likelihood is tempered, which is a different question
    full = tb.fit_em(tgt, src, n_domains=3, domains="free", **FAST)
    soft = tb.fit_em(tgt, src, n_domains=3, weight=0.05, domains="free", **FAST)
    assert soft.settings["weight"] == 0.05
    assert soft.entropy.mean() > full.entropy.mean()
    from transst_bayes.graph import lattice_adjacency
    A = lattice_adjacency(20, 20).tocoo()
    same = lambda y: np.mean(y[A.row] == y[A.col])  # noqa: E731
    assert same(soft.labels) > same(full.labels)
    with pytest.raises(ValueError, match="weight"):
        tb.fit_em(tgt, src, n_domains=3, weight=0.0, **FAST)


@pytest.mark.slow
def test_noisy_small_target_transfer_beats_none():
    # a small, very noisy target (400 spots, 1,000 genes, psi_t up to 20 vs 1 in a 40 x 40
    # source): its own loadings are poorly determined, the source's help. Measured margin
    # (seeds 0-3): 0.868 vs 0.796 mean ARI; we ask for at least +0.03 on average.
    gain = []
    for seed in range(4):
        src, tgt = tb.simulate(seed, height=20, width=20, n_genes=1000, error=20.0, source_error=1.0,
                               source_height=40, source_width=40)
        a = tb.fit_em(tgt, src, n_domains=4, n_factors=10, n_restarts=2, transfer="eb", calibrate="none")
        b = tb.fit_em(tgt, src, n_domains=4, n_factors=10, n_restarts=2, transfer="none", calibrate="none")
        gain.append(ari(a.labels, tgt.obs["truth"]) - ari(b.labels, tgt.obs["truth"]))
    assert np.mean(gain) >= 0.03, gain


@pytest.mark.slow
def test_rare_genes_do_not_collapse_the_fit():
    """Issue 11's Heywood case: three genes detected in 0.5% of the spots (one value, zero
    elsewhere), a 3,600-spot source. Before the priors and the detection filter every restart
    ended non-finite (FloatingPointError); now the fit is finite, every psi_g far above the
    floor, and the domains are found."""
    from transst_bayes.factor import PSI_FLOOR

    src, tgt = tb.simulate(0, height=30, width=30, n_genes=200, n_factors=5, n_domains=4,
                           source_height=60, source_width=60)
    rng = np.random.default_rng(0)
    for a in (tgt, src):
        X = np.asarray(a.X).copy()
        for g in range(3):
            X[:, g] = 0.0
            X[rng.choice(X.shape[0], size=X.shape[0] // 200, replace=False), g] = 8.0
        a.X = X
    res = tb.fit_em(tgt, src, n_domains=4, n_factors=15, transfer="eb", calibrate="none")
    assert np.all(np.isfinite(res.trace))
    assert res.psi.min() > 100 * PSI_FLOOR
    assert ari(res.labels, tgt.obs["truth"]) >= 0.85


def test_the_target_is_centred_alike_when_prepared_on_the_device():
    """data.centred's JAX branch (prepare_on="device", here on the CPU): the labels and gene
    means of the host path (measured: every label equal, gene means within 3e-7)."""
    src, tgt = tb.simulate(0, height=20, width=20, n_genes=200, n_factors=5)
    tgt.X = tgt.X + 2.0 * np.random.default_rng(0).normal(size=tgt.n_vars)[None, :]
    kw = dict(n_domains=4, transfer="none", calibrate="none", n_restarts=1)
    host = tb.fit_em(tgt, src, "label", prepare_on="host", **kw)
    dev = tb.fit_em(tgt, src, "label", prepare_on="device", **kw)
    np.testing.assert_array_equal(host.labels, dev.labels)
    np.testing.assert_allclose(host.gene_mean, dev.gene_mean, atol=1e-5)
    assert np.abs(dev.mu).max() < 10.0


@pytest.mark.slow
def test_held_out_fits_show_progress_and_are_a_timed_stage(capsys):
    """The held-out fits of transfer="auto" and calibrate="auto" were silent and untimed (the
    CLI showed nothing for minutes and the stages covered 9% of a call): with progress_bar=True
    each has a bar, and the stages add up to the total within 5% on both paths."""
    src, tgt = tb.simulate(0, height=16, width=16, n_genes=100, n_factors=4, n_domains=3)
    src.obs["section"] = np.where(np.arange(src.n_obs) % 16 < 8, "a", "b")
    from transst_bayes import heldout

    for fit, kw in ((tb.fit_em, {}), (tb.fit_svi, dict(num_samples=10))):
        heldout._memo.clear()  # fit_svi would reuse fit_em's held-out fits (same source and settings)
        res = fit(tgt, src, n_domains=3, n_factors=4, progress_bar=True, **kw)
        err = capsys.readouterr().err
        assert "held-out fits, transfer=eb" in err and "held-out fits, transfer=none" in err
        if fit is tb.fit_svi:
            assert "SVI K=3" in err and "posterior draws K=3" in err
        t = dict(res.info["timings"])
        total = t.pop("total")
        assert t["held_out"] > 0 and 0.95 * total <= sum(t.values()) <= total * (1 + 1e-9)
