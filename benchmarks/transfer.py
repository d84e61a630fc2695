"""Transfer benchmark on real tissue: anchored domains (the default) beside free clustering, no
transfer and label transfer, on HER2ST and the seqFISH mouse embryo (protocols in
../shared/data/README.md), every method on the same preprocessed matrix in the same run.

Columns per section: ARI and NMI against the annotation; calibration of the per-spot
probabilities against it (`metrics.calibration_summary`: named domains are their source class;
free or novel domains are matched to the remaining labels by Hungarian matching): ECE of the
maximum probability against whether the spot's label is right, Brier score, mean maximum
probability and accuracy; kappa (anchored); seconds. The default column runs with its default
calibration (`calibrate="auto"`: a temperature from held-out source sections; its seconds
include those fits); the ablations with calibrate="none" (their own probabilities: tempering
changes no label, and calibrating each would multiply the run time by the number of source
sections).
Methods:
* default: `fit_em(target, source, label_key, n_domains=K)` with every other setting at its
  default: transfer="auto" (the source's held-out sections fitted with and without it choose
  whether the target uses it), domains="anchored", the two-stage variant (the factor scores
  under the transfer step's loadings clustered), q = 15, genes by variance, pooled
  standardisation, probabilities calibrated on the held-out sections;
* anchored: the same with transfer="eb" (the source always used);
* anchored generative: anchored with classifier=0 (the Gaussian domains alone, without the
  source classifier's term);
* anchored joint: anchored with variant="joint" (target loadings re-fitted with the domains,
  z integrated out);
* free: anchored with domains="free" (the paper's model with this package's priors);
* no transfer: transfer="none";
* LR: multinomial logistic regression trained on the source's standardised expression;
  LR + smooth: its labels after one majority vote over each spot and its 6 nearest spots;
  LR + Potts: its probabilities smoothed by ICM under a Potts prior of fixed smoothness 2 on
  the target's spot graph (`_common.label_transfer_potts`);
* PCA + GMM: a Gaussian mixture on 15 principal components of the target;
* PCA + tied GMM + Potts: a BayesSpace-like baseline without MCMC: a Gaussian mixture whose
  clusters share one covariance (BayesSpace's shared precision) on the same 15 components, then
  the package's ICM under a Potts prior with fixed smoothness 2 on the target's spot graph.

With ``--preprocessing`` the fitted columns are instead the default anchored fit under each
gene selection / standardisation (variance + pooled: the default; genes="source";
standardize="separate": target and source standardised each on its own; "separate by section":
the same with every source section standardised on its own, source_batch_key="section"), to
choose those defaults by evidence.

    python benchmarks/transfer.py --data her2st|seqfish [--sections ...] [--preprocessing] [--json out.json]
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from _common import (chosen_sections, label_transfer, label_transfer_potts, markdown_table, mean_row, pca_gmm,
                     pca_tied_gmm_potts, publish, release_compiled_programs, section_parser, smooth_majority, standardised_pair,
                     table_spec, write_json)
from real_data import transfer_protocol

import transst_bayes as tb
from transst_bayes.metrics import calibration_summary, named_predictions

RAW = dict(calibrate="none")  # the ablations' own probabilities (their ARI is the same either way)
FITS = {"default": dict(), "anchored": dict(transfer="eb", **RAW),
        "anchored generative": dict(transfer="eb", classifier=0.0, **RAW),
        "anchored joint": dict(transfer="eb", variant="joint", **RAW),
        "free": dict(transfer="eb", domains="free", **RAW), "no transfer": dict(transfer="none", **RAW)}
PREPROCESSING = {m: dict(transfer="eb", **RAW, **kw) for m, kw in (
    ("anchored", {}), ("genes=source", dict(genes="source")), ("separate", dict(standardize="separate")),
    ("separate by section", dict(standardize="separate", source_batch_key="section")))}


def _score(row, name, pred, truth, names=None, proba=None, seconds=None):
    row[f"{name} ARI"] = tb.adjusted_rand_index(pred, truth)
    row[f"{name} NMI"] = tb.normalized_mutual_info(pred, truth)
    if proba is not None:
        cal = calibration_summary(names, proba, truth)
        row[f"{name} ECE"], row[f"{name} Brier"] = cal["ece"], cal["brier"]
        row[f"{name} max p"], row[f"{name} accuracy"] = cal["mean_confidence"], cal["accuracy"]
    if seconds is not None:
        row[f"{name} s"] = seconds


def run(data: str, sections, q=15, seed=0, fits=FITS):
    rows = []
    for sec in sections:
        release_compiled_programs()
        target, source, K, label, opts = transfer_protocol(data, sec)
        scored = target.obs[label].notna().to_numpy()  # unannotated spots are fitted, not scored
        truth = target.obs[label].astype(str).to_numpy()[scored]
        row = {"section": sec, "K": K, "n": target.n_obs}
        for name, kw in fits.items():
            t0 = time.perf_counter()
            res = tb.fit_em(target, source, label, n_domains=K, n_factors=q, seed=seed, **opts, **kw)
            dt = time.perf_counter() - t0
            pred, _ = named_predictions(res.names, res.proba[scored], truth)
            _score(row, name, pred, truth, res.names, res.proba[scored], dt)
            if name == "anchored":
                row["kappa"] = res.kappa
                row["agreement"] = res.info["classifier"]["agreement"]
            if name == "default":
                row["classifier used"] = str(res.info["classifier"]["used"])
            if name == "default" and "transfer_choice" in res.info:
                choice = res.info["transfer_choice"]
                row["chosen"] = choice["chosen"]
                for m, a in choice.get("held_out_ari", {}).items():
                    row[f"held-out ARI {m}"] = a
        prep = standardised_pair(target, source, label, **opts)
        t0 = time.perf_counter()
        names, P = label_transfer(prep, seed)
        pred, _ = named_predictions(names, P[scored], truth)
        _score(row, "LR", pred, truth, names, P[scored], time.perf_counter() - t0)
        sm = smooth_majority(names[np.argmax(P, axis=1)], target.obsm["spatial"])
        _score(row, "LR + smooth", sm[scored], truth)
        _score(row, "LR + Potts", names[label_transfer_potts(P, prep.graph)][scored], truth)
        _score(row, "PCA + GMM", pca_gmm(prep.X, q, K, seed)[scored], truth)
        _score(row, "PCA + tied GMM + Potts", pca_tied_gmm_potts(prep.X, q, K, prep.graph, seed)[scored], truth)
        rows.append(row)
        print(f"{sec}: " + ", ".join(f"{k}={v:.3f}" for k, v in row.items()
                                     if isinstance(v, float) and k.endswith("ARI")), flush=True)
    return rows


BASELINES = ["LR", "LR + smooth", "LR + Potts", "PCA + GMM", "PCA + tied GMM + Potts"]
TITLES = {"her2st": "HER2ST, leave one section out", "seqfish": "seqFISH mouse embryo, between embryos",
          "dlpfc": "DLPFC Visium pair"}
PROTOCOLS = {
    "her2st": "Eight sections of eight patients; target = one section, source = the other seven with "
              "their pathologist labels, K = labels in the target, 2,000 genes by variance, q = 15.",
    "seqfish": "Target = one section, source = the other embryos' cells with their cell types, K = "
               "cell types in the target, all 351 genes, q = 15.",
    "dlpfc": "Two adjacent sections of one donor; target = one section, source = the other with its "
             "layers, K = 7; the ~1% unannotated target spots are fitted but not scored.",
}


def tables(rows: list[dict], fits) -> list[dict]:
    """The printed and published tables: ARI, NMI, calibration, the default's choice and seconds."""
    mean = mean_row(rows)
    methods = list(fits) + BASELINES
    out = [table_spec(rows + [mean], ["section", "K", "n"] + [f"{m} {metric}" for m in methods],
                      caption=f"{metric} against the annotation:") for metric in ("ARI", "NMI")]
    scored = list(fits) + ["LR"]
    first = scored[0]
    out.append(table_spec(rows + [mean], ["section"] + [f"{m} ECE" for m in scored] + [f"{m} Brier" for m in scored]
                          + [f"{first} max p", f"{first} accuracy"],
                          caption="Calibration of the per-spot probabilities: ECE and Brier score per "
                                  f"method; the {first} fit's mean maximum probability beside its accuracy:"))
    if "held-out ARI eb" in rows[0] or "chosen" in rows[0]:
        out.append(table_spec(rows + [mean], ["section", "chosen", "held-out ARI eb", "held-out ARI none",
                                              "classifier used", "agreement", "kappa"]
                              + [f"{m} s" for m in fits], {f"{m} s": "{:.1f}" for m in fits},
                              caption="The default's transfer choice (mean ARI of the held-out source "
                                      "sections fitted with and without the source) and whether its fit "
                                      "used the source classifier's term; the anchored fit's agreement "
                                      "between the classifier and its generative domains (the term is "
                                      "used at >= 0.8) and kappa; seconds per fit:"))
    return out


def main():
    ap = section_parser(__doc__)
    ap.add_argument("--q", type=int, default=15)
    ap.add_argument("--preprocessing", action="store_true")
    ap.add_argument("--from-json", default=None, help="publish the tables of a saved run (its --json)")
    args = ap.parse_args()
    warnings.simplefilter("ignore")
    sections = chosen_sections(args)
    t0 = time.perf_counter()
    fits = PREPROCESSING if args.preprocessing else FITS
    record = None
    if args.from_json:
        import json

        saved = json.loads(open(args.from_json).read())
        rows, record = saved["rows"], saved.get("record")
    else:
        rows = run(args.data, sections, args.q, args.seed, fits)
    made = tables(rows, fits)
    for t in made:
        print(f"\n{t['caption']}")
        print(markdown_table(t["rows"], t["columns"], t["fmt"]))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    if not args.from_json:
        write_json(args.json, {"rows": rows, "mean": mean_row(rows)})
    if args.sections is None:
        what = " under each preprocessing" if args.preprocessing else ""
        publish(f"Transfer{what}: {TITLES[args.data]}", PROTOCOLS[args.data], made, record)


if __name__ == "__main__":
    main()
