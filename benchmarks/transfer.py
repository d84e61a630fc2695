"""Transfer benchmark on real tissue: anchored domains (the default) beside free clustering, no
transfer and label transfer, on HER2ST and the seqFISH mouse embryo (protocols in
../shared/data/README.md), every method on the same preprocessed matrix in the same run.

Columns per section: ARI and NMI against the annotation; ECE of the per-spot maximum probability
against whether the spot's label is right (named domains are their source class; free or novel
domains are matched to the remaining labels by Hungarian matching); kappa (anchored); seconds.
Methods:
* anchored (default): `fit_em(target, source, label_key, n_domains=K)` with every other setting
  at its default (domains="anchored", the two-stage variant: the factor scores under the
  transfer step's loadings clustered; q = 15, genes by variance, pooled standardisation);
* anchored joint: the same with variant="joint" (target loadings re-fitted with the domains,
  z integrated out; the default before 2026-11-26);
* free: the same with domains="free" (the paper's model with this package's priors);
* no transfer: transfer="none";
* LR: multinomial logistic regression trained on the source's standardised expression;
  LR + smooth: its labels after one majority vote over each spot and its 6 nearest spots;
* PCA + GMM: a Gaussian mixture on 15 principal components of the target.

With ``--preprocessing`` the fitted columns are instead the default anchored fit under each
gene selection / standardisation (variance + pooled: the default; genes="source";
standardize="separate"; both), to choose those defaults by evidence.

    python benchmarks/transfer.py --data her2st|seqfish [--sections ...] [--preprocessing] [--json out.json]
"""

from __future__ import annotations

import argparse
import time
import warnings

import numpy as np

from _common import (label_transfer, markdown_table, pca_gmm,
                     release_compiled_programs, smooth_majority, standardised_pair, write_json)
from datasets import her2st_sections, seqfish_sections, transfer_protocol

import transst_bayes as tb
from transst_bayes.metrics import named_predictions
from svi import ece

FITS = {"anchored": dict(), "anchored joint": dict(variant="joint"), "free": dict(domains="free"),
        "no transfer": dict(transfer="none")}
PREPROCESSING = {"anchored": dict(), "genes=source": dict(genes="source"),
                 "separate": dict(standardize="separate"),
                 "source + separate": dict(genes="source", standardize="separate")}


def _score(row, name, pred, truth, conf=None, seconds=None):
    row[f"{name} ARI"] = tb.adjusted_rand_index(pred, truth)
    row[f"{name} NMI"] = tb.normalized_mutual_info(pred, truth)
    if conf is not None:
        row[f"{name} ECE"] = ece(conf, np.asarray(pred) == truth)
    if seconds is not None:
        row[f"{name} s"] = seconds


def run(data: str, sections, q=15, seed=0, fits=FITS):
    rows = []
    for sec in sections:
        release_compiled_programs()
        target, source, K, label, opts = transfer_protocol(data, sec)
        truth = target.obs[label].astype(str).to_numpy()
        row = {"section": sec, "K": K, "n": target.n_obs}
        for name, kw in fits.items():
            t0 = time.perf_counter()
            res = tb.fit_em(target, source, label, n_domains=K, n_factors=q, seed=seed, **opts, **kw)
            dt = time.perf_counter() - t0
            pred, conf = named_predictions(res.names, res.proba, truth)
            _score(row, name, pred, truth, conf, dt)
            if name == "anchored":
                row["kappa"] = res.kappa
        prep = standardised_pair(target, source, label, **opts)
        t0 = time.perf_counter()
        names, P = label_transfer(prep, seed)
        pred, conf = named_predictions(names, P, truth)
        _score(row, "LR", pred, truth, conf, time.perf_counter() - t0)
        sm = smooth_majority(names[np.argmax(P, axis=1)], target.obsm["spatial"])
        _score(row, "LR + smooth", sm, truth)
        _score(row, "PCA + GMM", pca_gmm(prep.X, q, K, seed), truth)
        rows.append(row)
        print(f"{sec}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items()
                                     if isinstance(v, float) and k.endswith("ARI")), flush=True)
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--data", choices=("her2st", "seqfish"), required=True)
    ap.add_argument("--sections", nargs="*", default=None)
    ap.add_argument("--q", type=int, default=15)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--preprocessing", action="store_true")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    sections = args.sections or (her2st_sections() if args.data == "her2st" else seqfish_sections())
    t0 = time.perf_counter()
    fits = PREPROCESSING if args.preprocessing else FITS
    rows = run(args.data, sections, args.q, args.seed, fits)
    mean = {"section": "mean", "K": "", "n": ""}
    for c in rows[0]:
        if isinstance(rows[0][c], float):
            mean[c] = float(np.nanmean([np.nan if r[c] is None else r[c] for r in rows]))
    methods = list(fits) + ["LR", "LR + smooth", "PCA + GMM"]
    for metric in ("ARI", "NMI"):
        print(f"\n{metric}")
        print(markdown_table(rows + [mean], ["section", "K", "n"] + [f"{m} {metric}" for m in methods]))
    print("\nECE of the per-spot maximum probability, kappa, seconds per fit")
    cols = ["section"] + [f"{m} ECE" for m in list(fits) + ["LR"]] + ["kappa"] + [f"{m} s" for m in fits]
    print(markdown_table(rows + [mean], cols, {f"{m} s": "{:.1f}" for m in fits}))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"rows": rows, "mean": mean})


if __name__ == "__main__":
    main()
