"""Mouse-embryo seqFISH transfer benchmark (protocol in ../shared/data/README.md).

For each section (all six by default): target = that section; source = every cell of the two
other embryos with its cell type (``celltype``); K = number of cell types present in the target
(19 or 21). All 351 genes, library-size normalisation and log1p, pooled standardisation (the
package defaults), q = 15 (``--q``), kNN graph with k = 6 on ``obsm["spatial"]``.

Methods, scored by ARI and NMI against ``celltype``, with wall time per fit:

* TransST (EM): ``fit_em`` with ``transfer="eb"``, ``variant="joint"`` (the defaults);
* TransST (SVI): ``fit_svi`` with ``guide="normal"`` (AutoNormal), global transfer prior,
  warm-started from the EM fit it runs itself (its seconds include that EM fit, the guide's
  set-up and compilation, which fit_svi redoes on every call); full-batch, fit_svi's own
  defaults: ``lr = 0.01``, ``--svi-steps`` steps per round (200), at most ``--svi-rounds``
  rounds (30), stopping when the mean loss of a round changes by less than rtol = 1e-4,
  ``--svi-samples`` posterior draws (100);
* no transfer (EM): ``fit_em(transfer="none")``;
* PCA + k-means and PCA + GMM on the same preprocessed (standardised) matrix as the model.

The first fits of the process include JAX compilation (K differs between sections, so some
later sections compile again).

    python benchmarks/seqfish_embryo.py [--sections embryo1_z2 ...] [--q 15] [--no-svi]
        [--json out.json]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import (markdown_table, pca_gmm, pca_kmeans, peak_rss_gb, release_compiled_programs,
                     write_json)
from real_data import seqfish_protocol, seqfish_sections

import transst_bayes as tb
from transst_bayes.data import DataSettings, prepare

LABEL = "celltype"
N_NEIGHBORS = 6


def scores(row, name, labels, truth, seconds=None):
    row[f"{name} ARI"] = tb.adjusted_rand_index(labels, truth)
    row[f"{name} NMI"] = tb.normalized_mutual_info(labels, truth)
    if seconds is not None:
        row[f"{name} s"] = seconds


def run(sections, q=15, seed=0, svi=True, svi_steps=200, svi_rounds=30, svi_samples=100):
    rows = []
    for sec in sections:
        release_compiled_programs()
        target, source, K = seqfish_protocol(sec)
        truth = target.obs[LABEL].to_numpy()
        p = target.n_vars
        data = dict(n_genes=p, n_neighbors=N_NEIGHBORS)
        row = {"section": sec, "K": K, "n": target.n_obs, "n source": source.n_obs}
        prep = prepare(target, source, LABEL, DataSettings(n_genes=p, n_neighbors=N_NEIGHBORS))
        row["p"] = prep.X.shape[1]
        t0 = time.perf_counter()
        scores(row, "PCA + k-means", pca_kmeans(prep.X, q, K, seed), truth, time.perf_counter() - t0)
        t0 = time.perf_counter()
        scores(row, "PCA + GMM", pca_gmm(prep.X, q, K, seed), truth, time.perf_counter() - t0)
        t0 = time.perf_counter()
        res = tb.fit_em(target, source, LABEL, n_domains=K, n_factors=q, seed=seed,
                        transfer="eb", variant="joint", **data)
        scores(row, "TransST (EM)", res.labels, truth, time.perf_counter() - t0)
        row["beta"], row["tau"] = float(res.beta), float(res.tau)
        t0 = time.perf_counter()
        res = tb.fit_em(target, source, LABEL, n_domains=K, n_factors=q, seed=seed,
                        transfer="none", **data)
        scores(row, "no transfer (EM)", res.labels, truth, time.perf_counter() - t0)
        if svi:
            t0 = time.perf_counter()
            res = tb.fit_svi(target, source, LABEL, n_domains=K, n_factors=q, seed=seed,
                             guide="normal", steps_per_round=svi_steps, max_rounds=svi_rounds,
                             num_samples=svi_samples, **data)
            scores(row, "TransST (SVI)", res.labels, truth, time.perf_counter() - t0)
            row["SVI rounds"] = int(res.info.get("svi_rounds", -1))
            row["SVI converged"] = bool(res.k_table[0].get("converged"))
        rows.append(row)
        print(f"{sec}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)),
              flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sections", nargs="*", default=seqfish_sections())
    ap.add_argument("--q", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-svi", action="store_true")
    ap.add_argument("--svi-steps", type=int, default=200)
    ap.add_argument("--svi-rounds", type=int, default=30)
    ap.add_argument("--svi-samples", type=int, default=100)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    t_all = time.perf_counter()
    rows = run(args.sections, q=args.q, seed=args.seed, svi=not args.no_svi,
               svi_steps=args.svi_steps, svi_rounds=args.svi_rounds, svi_samples=args.svi_samples)
    methods = ["TransST (EM)"] + ([] if args.no_svi else ["TransST (SVI)"]) + \
        ["no transfer (EM)", "PCA + k-means", "PCA + GMM"]
    mean = {"section": "mean", "K": "", "n": ""}
    for c in rows[0]:
        if c.endswith((" ARI", " NMI", " s")):
            mean[c] = float(np.mean([r[c] for r in rows]))
    fmt = {f"{m} s": "{:.1f}" for m in methods}
    for metric in ("ARI", "NMI"):
        print(f"\n{metric} against celltype")
        cols = ["section", "K", "n"] + [f"{m} {metric}" for m in methods]
        print(markdown_table(rows + [mean], cols))
    print("\nwall time per fit (s)")
    cols = ["section", "K", "n"] + [f"{m} s" for m in methods] + \
        ([] if args.no_svi else ["SVI rounds", "SVI converged"])
    print(markdown_table(rows + [mean], cols, fmt))
    total = time.perf_counter() - t_all
    print(f"\ntotal {total:.0f} s, peak memory {peak_rss_gb():.2f} GB")
    write_json(args.json, {"rows": rows, "mean": mean, "total_s": total, "q": args.q,
                           "n_neighbors": N_NEIGHBORS, "svi_steps": args.svi_steps,
                           "svi_rounds": args.svi_rounds, "svi_samples": args.svi_samples})


if __name__ == "__main__":
    main()
