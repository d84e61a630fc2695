"""MCMC beside EM and SVI: the same model and data, three inference paths.

Simulation (default): for each seed, `fit_em`, `fit_svi` with each guide ("normal",
"lowrank") and `fit_mcmc` (NUTS, its defaults: 4 chains of 500 warm-up + 500 draws) on the same
simulated pair with the true K, for the default model of a labeled source (loadings fixed at
the transfer step's) and for the full model (`model=models.transst_model`, loadings in the
posterior; EM: the joint variant). Per path: ARI against the truth; coverage90, the share of the
true domain expression values (W_true m_k per gene and domain, m_k the mean of the true factors
in domain k) inside the path's 90% credible intervals (EM: draws of the domain means from their
conditional posterior given the fit's covariances, loadings and labels); width90, the intervals'
mean width; "mean - MCMC (MCMC sd)", the mean distance of the path's posterior means of the
domain expression from the same model's MCMC's, in MCMC posterior standard deviations; "TV to
MCMC", the mean total-variation distance between the path's per-spot domain probabilities and
MCMC's; seconds
(each path's own call, EM warm start and compilation included).

    python benchmarks/mcmc.py [--seeds 5] [--size 20] [--genes 200] [--q 5] [--K 4]

Real data: the default `fit_mcmc` on HER2ST sections (leave one section out, as in
transfer.py), beside the default `fit_em` and `fit_svi` in the same run: ARI, seconds, and
MCMC's convergence per site (largest split R-hat, smallest bulk ESS over the site's elements),
divergent transitions and the mean tree size.

    python benchmarks/mcmc.py --data her2st --sections H1
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import markdown_table, peak_rss_gb, publish, table_spec, write_json

import transst_bayes as tb

PATHS = ("EM", "SVI normal", "SVI lowrank", "MCMC")
# the default model of a labeled source (scores_model: the factor scores clustered under the
# transfer step's loadings, which stay fixed) and the full model (transst_model: loadings, tau
# and noise in the posterior; EM: the joint variant, its MAP)
MODELS = ("default", "full")


def _fit(path: str, model: str, tgt, src, K: int, q: int, seed: int):
    kw = dict(n_domains=K, n_factors=q, seed=seed)
    full = dict(model=tb.models.transst_model) if model == "full" else {}
    if path == "EM":
        return tb.fit_em(tgt, src, variant="joint" if full else None, **kw)
    if path.startswith("SVI"):
        return tb.fit_svi(tgt, src, guide=path.split()[1], **full, **kw)
    return tb.fit_mcmc(tgt, src, **full, **kw)


def simulation_seed(seed: int, size: int, genes: int, q: int, K: int) -> list[dict]:
    src, tgt = tb.simulate(seed, height=size, width=size, n_genes=genes, n_factors=q, n_domains=K)
    truth = tgt.obs["truth_code"].to_numpy()
    z = np.asarray(tgt.obsm["z_true"], np.float64)
    m = np.stack([z[truth == k].mean(0) for k in range(K)])
    true_e = np.asarray(tgt.varm["W_true"], np.float64) @ m.T  # (p, K)
    rows = []
    for model in MODELS:
        fits, secs = {}, {}
        for path in PATHS:
            t0 = time.perf_counter()
            res = _fit(path, model, tgt, src, K, q, seed)
            secs[path] = time.perf_counter() - t0
            fits[path] = tb.align_result(res, truth)
        draws = {p: tb.domain_expression(r) for p, r in fits.items()}  # (S, p, K)
        ref_mean, ref_sd = draws["MCMC"].mean(0), draws["MCMC"].std(0)
        for path, r in fits.items():
            e = draws[path]
            lo, hi = np.quantile(e, 0.05, axis=0), np.quantile(e, 0.95, axis=0)
            row = {"seed": seed, "model": model, "path": path, "ARI": tb.adjusted_rand_index(r.labels, truth),
                   "coverage90": float(np.mean((true_e >= lo) & (true_e <= hi))),
                   "width90": float(np.mean(hi - lo)), "kappa": r.kappa,
                   "mean - MCMC (MCMC sd)": float(np.mean(np.abs(e.mean(0) - ref_mean) / ref_sd)),
                   "TV to MCMC": float(0.5 * np.abs(r.proba - fits["MCMC"].proba).sum(1).mean()),
                   "s": secs[path]}
            if path == "MCMC":
                mc = r.info["mcmc"]
                row.update({"R-hat max": mc["rhat_max"], "ESS min": mc["ess_min"],
                            "divergences": mc["divergences"]})
            rows.append(row)
            print({k: round(v, 3) if isinstance(v, float) else v for k, v in row.items()}, flush=True)
    return rows


SIM_COLS = ["model", "path", "ARI", "coverage90", "width90", "mean - MCMC (MCMC sd)", "TV to MCMC", "s",
            "R-hat max", "ESS min", "divergences"]
SIM_FMT = {"s": "{:.1f}", "ESS min": "{:.0f}", "divergences": "{:.1f}", "width90": "{:.3f}"}

SIM_PROTOCOL = (
    "Simulated pairs (`tb.simulate`, {size} x {size} lattice, source of the same size, p = {p}, "
    "q = {q}, K = {K}, seeds 0-{last}), true K, every path's defaults otherwise (`fit_mcmc`: NUTS, 4 "
    "chains of 500 warm-up and 500 draws, started from the EM fit), for two models: \"default\", "
    "the default with a labeled source (anchored domains, `models.scores_model`: the factor scores "
    "clustered under the transfer step's loadings, which stay fixed), and \"full\" "
    "(`model=models.transst_model`: loadings, tau and noise in the posterior; EM: "
    "`variant=\"joint\"`, the same model's MAP). "
    "Means over the seeds. coverage90: share of the true domain expression values (W_true m_k per "
    "gene and domain) inside the 90% credible intervals (EM: draws of the domain means given the "
    "fit's covariances, loadings and labels); width90: their mean width; mean - MCMC: distance of "
    "the posterior means from MCMC's in MCMC posterior sd; TV to MCMC: mean total-variation "
    "distance of the per-spot domain probabilities from MCMC's (the same model's MCMC); s: seconds per call (EM warm "
    "start and compilation included); R-hat max / ESS min: over every element of every sampled "
    "site (default: mu, Sigma, beta; full: also W, psi, tau, kappa).")


def simulation(args) -> None:
    rows = []
    for s in range(args.seeds):
        rows += simulation_seed(s, args.size, args.genes, args.q, args.K)
    means = []
    for model, path in ((m, p) for m in MODELS for p in PATHS):
        sub = [r for r in rows if r["path"] == path and r["model"] == model]
        mean = {"model": model, "path": path}
        for c in SIM_COLS[2:]:
            vals = [r[c] for r in sub if c in r]
            if vals:
                mean[c] = float(np.mean(vals)) if c != "R-hat max" else float(np.max(vals))
        means.append(mean)
    print()
    print(markdown_table(means, SIM_COLS, SIM_FMT))
    print(f"\npeak memory {peak_rss_gb():.2f} GB")
    write_json(args.json, {"settings": dict(vars(args)), "rows": rows})
    per_seed = []
    for seed, model in ((s, m) for s in range(args.seeds) for m in MODELS):
        row = {"seed": seed, "model": model}
        for r in rows:
            if r["seed"] == seed and r["model"] == model:
                row[f"{r['path']} cover"] = r["coverage90"]
                if r["path"] == "MCMC":
                    row.update({"MCMC width": r["width90"], "MCMC kappa": r["kappa"], "MCMC s": r["s"]})
        per_seed.append(row)
    seed_cols = ["seed", "model"] + [f"{p} cover" for p in PATHS] + ["MCMC width", "MCMC kappa", "MCMC s"]
    seed_fmt = {"MCMC s": "{:.0f}", "MCMC kappa": "{:.3g}"}
    print(markdown_table(per_seed, seed_cols, seed_fmt))
    publish("MCMC beside EM and SVI on simulated data", SIM_PROTOCOL.format(
        size=args.size, p=args.genes, q=args.q, K=args.K, last=args.seeds - 1),
        [table_spec(means, SIM_COLS, SIM_FMT, caption="Means over the seeds (R-hat max: the largest):"),
         table_spec(per_seed, seed_cols, seed_fmt,
                    caption="Per seed: each path's coverage90, and MCMC's interval width, kappa (the anchoring "
                            "scale: the domain means' spread about their source classes; the default model "
                            "fixes it at the EM fit's empirical-Bayes value, the full model samples it) and "
                            "seconds:")])


REAL_COLS = ["section", "n", "K", "chosen", "EM ARI", "SVI ARI", "MCMC ARI", "EM s", "SVI s", "MCMC s",
             "NUTS s", "R-hat max", "ESS min", "divergences", "tree size"]
REAL_FMT = {c: "{:.0f}" for c in ("EM s", "SVI s", "MCMC s", "NUTS s", "ESS min", "tree size")}

REAL_PROTOCOL = (
    "HER2ST, leave one section out (source: the other seven sections, K = the target's annotated "
    "classes), every path's defaults (`transfer=\"auto\"`, `calibrate=\"auto\"`; `fit_mcmc`: 4 "
    "chains of 500 warm-up and 500 draws), on the same data in the same run. ARI against the "
    "pathologist's labels; seconds per call (held-out fits, EM warm start and compilation "
    "included; NUTS s: the sampling alone); R-hat max / ESS min over every element of the "
    "sampled sites, which the second table lists per site."
    " Sampled sites: with the source set aside (`transfer=\"auto\"` chose \"none\") the model is `models.fixed_loadings_model`: mu, Sigma and beta are sampled; the loadings and noise stay at the EM fit's (without a source they are identified only up to a rotation of the factors, and are not sampled). `fit_mcmc` starts from its own EM fit in float64 (`fit_em`'s default is float32), which can settle in another of the section's modes (see the seed spread).")


def real(args) -> None:
    from real_data import transfer_protocol

    rows, per_site = [], []
    for sec in args.sections:
        target, source, K, label, opts = transfer_protocol(args.data, sec)
        truth = target.obs[label].astype(str).to_numpy()
        scored = target.obs[label].notna().to_numpy()
        row = {"section": sec, "n": target.n_obs, "K": K}
        for name, fit in (("EM", tb.fit_em), ("SVI", tb.fit_svi), ("MCMC", tb.fit_mcmc)):
            t0 = time.perf_counter()
            res = fit(target, source, label, n_domains=K, seed=args.seed, **opts)
            row[f"{name} s"] = time.perf_counter() - t0
            row[f"{name} ARI"] = tb.adjusted_rand_index(res.labels[scored], truth[scored])
            row["chosen"] = res.info.get("transfer_choice", {}).get("chosen", "eb")
        mc = res.info["mcmc"]
        row.update({"NUTS s": mc["seconds"], "R-hat max": mc["rhat_max"], "ESS min": mc["ess_min"],
                    "divergences": mc["divergences"], "tree size": mc["mean_tree_size"]})
        rows.append(row)
        for site in sorted(mc["rhat"]):
            per_site.append({"section": sec, "site": site, "shape": "x".join(map(str, res.posterior[site].shape[1:])),
                             "R-hat max": mc["rhat"][site], "ESS min": mc["ess_bulk"][site]})
        print(row, flush=True)
    print(markdown_table(rows, REAL_COLS, REAL_FMT))
    site_cols = ["section", "site", "shape", "R-hat max", "ESS min"]
    print(markdown_table(per_site, site_cols, {"ESS min": "{:.0f}"}))
    write_json(args.json, {"settings": dict(vars(args)), "rows": rows, "sites": per_site})
    publish(f"MCMC on real tissue: {args.data}", REAL_PROTOCOL,
            [table_spec(rows, REAL_COLS, REAL_FMT),
             table_spec(per_site, site_cols, {"ESS min": "{:.0f}"}, caption="Convergence per sampled site:")])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--size", type=int, default=20)
    ap.add_argument("--genes", type=int, default=200)
    ap.add_argument("--q", type=int, default=5)
    ap.add_argument("--K", type=int, default=4)
    ap.add_argument("--data", choices=("her2st",), default=None)
    ap.add_argument("--sections", nargs="*", default=["H1"])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    real(args) if args.data else simulation(args)


if __name__ == "__main__":
    main()
