"""Simulation benchmark: the paper's setting over several seeds.

50 x 50 lattice, p = 1,000, q = 10, K = 4, beta = 1 (and optionally a noisy target). For each seed:
TransST (EM, default: anchored domains with the two-stage variant, tau by empirical Bayes,
beta learned) and its ablations (no transfer, joint variant, beta fixed at the published
code's 2), each choosing K in 2..6 by the default criterion (HBIC), plus
PCA + k-means and PCA + GMM with the true K (and PCA + GMM's own BIC for K). Reports mean ARI
(at the chosen K and at the true K) and mean |K_hat - K|.

    python benchmarks/simulation.py [--seeds 10] [--error 1.0] [--json out.json]

K selection: 40 x 40 lattice, q = 10, true K = 4, p = 1,000 and 2,000, target noise error 1 and
3; free domains choose K in 3..5 by the default criterion (HBIC), anchored domains (the default
with a labeled source, n_domains=None) choose the number of novel domains in 0..2, and anchored
domains with n_domains=[3, 4, 5, 6] choose K among them (K = 3 drops a present class). Reports
mean |K_hat - K| and ARI per setting:

    python benchmarks/simulation.py --ksel [--seeds 10] [--criterion hbic|sbic|...] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import markdown_table, pca_gmm, pca_kmeans, pca_scores, publish, table_spec, write_json

import transst_bayes as tb
from transst_bayes.data import DataSettings, prepare

VARIANTS = {
    "TransST (EM)": dict(),
    "no transfer": dict(transfer="none"),
    "joint": dict(variant="joint"),
    "beta fixed = 2": dict(beta=2.0),
}
K_RANGE = [2, 3, 4, 5, 6]


def gmm_bic_k(X, q, ks, seed=0):
    from sklearn.mixture import GaussianMixture

    Z = pca_scores(X, q)
    bics = [GaussianMixture(k, covariance_type="full", random_state=seed, reg_covar=1e-4).fit(Z).bic(Z)
            for k in ks]
    return ks[int(np.argmin(bics))]


def run(seeds, error=1.0, q=10, K=4):
    per = {name: {"ari": [], "ari_trueK": [], "dk": [], "s": []} for name in VARIANTS}
    per.update({"PCA + k-means": {"ari_trueK": []}, "PCA + GMM": {"ari_trueK": [], "dk": []}})
    for seed in seeds:
        src, tgt = tb.simulate(seed, error=error)
        truth = tgt.obs["truth"].to_numpy()
        for name, kw in VARIANTS.items():
            t0 = time.perf_counter()
            res = tb.fit_em(tgt, src, n_domains=K_RANGE, n_factors=q, seed=seed, **kw)
            per[name]["s"].append(time.perf_counter() - t0)
            per[name]["ari"].append(tb.adjusted_rand_index(res.labels, truth))
            per[name]["dk"].append(abs(res.n_domains - K))
            fixed = tb.fit_em(tgt, src, n_domains=K, n_factors=q, seed=seed, **kw)
            per[name]["ari_trueK"].append(tb.adjusted_rand_index(fixed.labels, truth))
        X = prepare(tgt, src, "label", DataSettings()).X
        per["PCA + k-means"]["ari_trueK"].append(tb.adjusted_rand_index(pca_kmeans(X, q, K, seed), truth))
        per["PCA + GMM"]["ari_trueK"].append(tb.adjusted_rand_index(pca_gmm(X, q, K, seed), truth))
        per["PCA + GMM"]["dk"].append(abs(gmm_bic_k(X, q, K_RANGE, seed) - K))
        print(f"seed {seed}: " + ", ".join(f"{m}={v['ari_trueK'][-1]:.3f}" for m, v in per.items()),
              flush=True)
    rows = []
    for name, v in per.items():
        row = {"method": name}
        for key, col in (("ari", "ARI (K by the default criterion (HBIC))"), ("ari_trueK", "ARI (true K)"),
                         ("dk", "mean |K_hat - K|"), ("s", "s per fit (K = 2..6)")):
            if v.get(key):
                row[col] = float(np.mean(v[key]))
                if key.startswith("ari"):
                    row[col + " sd"] = float(np.std(v[key]))
        rows.append(row)
    return rows


def k_selection(seeds, genes=(1000, 2000), errors=(1.0, 3.0), q=10, K=4, size=40, criterion="hbic"):
    rows = []
    for p in genes:
        for error in errors:
            routes = {"free": dict(domains="free", n_domains=[K - 1, K, K + 1]), "anchored": dict(),
                      "anchored, K listed": dict(n_domains=[K - 1, K, K + 1, K + 2])}
            dk = {name: [] for name in routes}
            ari = {name: [] for name in routes}
            secs = {name: [] for name in routes}
            for seed in seeds:
                src, tgt = tb.simulate(seed, height=size, width=size, n_genes=p, n_factors=q, n_domains=K,
                                       error=error)
                truth = tgt.obs["truth"].to_numpy()
                for name, kw in routes.items():
                    t0 = time.perf_counter()
                    res = tb.fit_em(tgt, src, n_factors=q, seed=seed, criterion=criterion, **kw)
                    secs[name].append(time.perf_counter() - t0)
                    dk[name].append(abs(res.n_domains - K))
                    ari[name].append(tb.adjusted_rand_index(res.labels, truth))
                print(f"p {p} error {error} seed {seed}: |K_hat - K| "
                      + ", ".join(f"{m} {dk[m][-1]} (ARI {ari[m][-1]:.3f})" for m in routes), flush=True)
            for name in dk:
                rows.append({"p": p, "error": error, "domains": name, "mean |K_hat - K|": float(np.mean(dk[name])),
                             "ARI": float(np.mean(ari[name])), "s per fit": float(np.mean(secs[name]))})
    return rows


PROTOCOL = (
    "50 x 50 lattice, p = 1,000, q = 10, K = 4, beta = 1, target noise error = {error:g}; mean over "
    "seeds 0-{seeds}. K chosen in 2..6 by the default criterion (HBIC; PCA + GMM by its own BIC); "
    "\"s per fit\" is a fit over the whole K range. \"TransST (EM)\" is the default call with the "
    "source (anchored domains), \"joint\" the same with `variant=\"joint\"`, \"no transfer\" "
    "`transfer=\"none\"` (free domains); \"beta fixed = 2\": the published code's smoothness.")
KSEL_PROTOCOL = (
    "40 x 40 lattice, q = 10, true K = 4, seeds 0-{seeds}; free domains choose K in 3..5, anchored "
    "domains (`n_domains=None`, two-stage variant) the number of novel domains in 0..2, \"anchored, K "
    "listed\" K in `n_domains=[3, 4, 5, 6]` (K = 3 drops a present class), all by {criterion}.")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seeds", type=int, default=10)
    ap.add_argument("--error", type=float, default=1.0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--ksel", action="store_true", help="the K-selection benchmark instead")
    ap.add_argument("--criterion", default="hbic", help="K criterion of --ksel (default hbic, the package default)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    if args.ksel:
        rows = k_selection(range(args.seeds), criterion=args.criterion)
        print(f"\n{args.seeds} seeds, 40 x 40 lattice, q = 10, true K = 4")
        cols = ["p", "error", "domains", "mean |K_hat - K|", "ARI", "s per fit"]
        fmt = {"mean |K_hat - K|": "{:.2f}", "s per fit": "{:.1f}", "error": "{:.0f}"}
        print(markdown_table(rows, cols, fmt))
        write_json(args.json, rows)
        publish(f"K selection on simulated data ({args.criterion})", KSEL_PROTOCOL.format(
            seeds=args.seeds, criterion=args.criterion.upper()), [table_spec(rows, cols, fmt)])
        return
    rows = run(range(args.seeds), error=args.error)
    cols = ["method", "ARI (true K)", "ARI (true K) sd", "ARI (K by the default criterion (HBIC))", "mean |K_hat - K|",
            "s per fit (K = 2..6)"]
    print(f"\n{args.seeds} seeds, target error {args.error}")
    fmt = {"s per fit (K = 2..6)": "{:.1f}", "mean |K_hat - K|": "{:.2f}"}
    print(markdown_table(rows, cols, fmt))
    write_json(args.json, rows)
    publish("Simulation (the paper's setting)", PROTOCOL.format(seeds=args.seeds, error=args.error),
            [table_spec(rows, cols, fmt)])


if __name__ == "__main__":
    main()
