"""HER2ST leave-one-section-out benchmark (protocol in ../shared/data/README.md).

For each of the 8 sections: target = that section, source = the other seven with pathologist
labels; K = number of labels left in the target; 2,000 genes by variance on the target; q = 15.
Prints ARI per section and the mean for TransST (EM, default settings), its ablations and the
baselines (PCA + k-means, PCA + GMM) computed on the same preprocessed matrix, plus wall time.

    python benchmarks/her2st.py [--sections A1 B1] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import markdown_table, pca_gmm, pca_kmeans, write_json
from datasets import her2st_protocol, her2st_sections

import transst_bayes as tb
from transst_bayes.data import DataSettings, prepare

METHODS = {
    "TransST (EM)": dict(),
    "two-stage": dict(variant="two_stage"),
    "no transfer": dict(transfer="none"),
    "paper-style (cv, two-stage, k=5)": dict(transfer="cv", variant="two_stage", n_neighbors=5),
}


def run(sections, q=15, seed=0, methods=METHODS):
    rows = []
    for sec in sections:
        target, source, K = her2st_protocol(sec)
        truth = target.obs["label"].to_numpy()
        row = {"section": sec, "K": K, "n": target.n_obs}
        prep = prepare(target, source, "label", DataSettings())
        row["PCA + k-means"] = tb.adjusted_rand_index(pca_kmeans(prep.X, q, K, seed), truth)
        row["PCA + GMM"] = tb.adjusted_rand_index(pca_gmm(prep.X, q, K, seed), truth)
        for name, kw in methods.items():
            t0 = time.perf_counter()
            res = tb.fit_em(target, source, "label", n_domains=K, n_factors=q, seed=seed, **kw)
            dt = time.perf_counter() - t0
            row[name] = tb.adjusted_rand_index(res.labels, truth)
            row[f"{name} s"] = dt
            if name == "TransST (EM)":
                row["beta"], row["tau"] = res.beta, res.tau
                t0 = time.perf_counter()
                tb.fit_em(target, source, "label", n_domains=K, n_factors=q, seed=seed, **kw)
                row["warm s"] = time.perf_counter() - t0
        rows.append(row)
        print(f"{sec}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items() if isinstance(v, float)),
              flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--sections", nargs="*", default=her2st_sections())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    rows = run(args.sections, seed=args.seed)
    names = list(METHODS) + ["PCA + k-means", "PCA + GMM"]
    mean = {"section": "mean", "K": "", "n": ""}
    for c in names + ["warm s"]:
        mean[c] = float(np.mean([r[c] for r in rows]))
    cols = ["section", "K", "n"] + names + ["beta", "tau", "TransST (EM) s", "warm s"]
    print()
    print(markdown_table(rows + [mean], cols, {"TransST (EM) s": "{:.1f}", "warm s": "{:.2f}"}))
    write_json(args.json, {"rows": rows, "mean": mean})


if __name__ == "__main__":
    main()
