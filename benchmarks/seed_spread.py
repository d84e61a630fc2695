"""How much of a real-data ARI is the seed: the anchored fit (transfer="eb"; or any fit_em setting) on
each section of HER2ST or seqFISH under several seeds, with its objective, to tell seed noise
from a method's difference, and to see whether the best objective picks the best partition.

Per section: ARI (named domains read as their class, others matched by Hungarian matching) of
each seed, min / max / mean, and the ARI of the seed whose fit has the largest objective (what
more restarts would choose). `calibrate="none"`: tempering changes no label.

    python benchmarks/seed_spread.py --data her2st|seqfish [--seeds 5] [--sections A1 ...]
        [--domains anchored|free] [--no-transfer] [--factors Q] [--genes N] [--json out.json]

`--default`: the default call instead (`transfer="auto"`, anchored domains; `calibrate="none"`,
which changes no label), on HER2ST, seqFISH or the DLPFC pair, with the agreement of the seeds'
answers (the least ARI between two seeds' most probable domains) and the transfer mode each
seed's call chose:

    python benchmarks/seed_spread.py --data her2st|seqfish|dlpfc --default --seeds 2
"""

from __future__ import annotations

import argparse
import warnings

import numpy as np

from _common import markdown_table, publish, table_spec, write_json
from real_data import _DLPFC_SECTIONS, _HER2ST_SECTIONS, _SEQFISH_SECTIONS, transfer_protocol

import transst_bayes as tb
from transst_bayes.metrics import named_predictions


def run(data: str, sections, seeds, kw: dict, n_genes=None) -> list[dict]:
    rows = []
    for sec in sections:
        target, source, K, label, opts = transfer_protocol(data, sec)
        if n_genes is not None:
            opts = dict(opts, n_genes=n_genes)
        truth = target.obs[label].astype(str).to_numpy()
        scored = target.obs[label].notna().to_numpy()  # DLPFC: annotated spots only
        ari, obj, preds, chosen = [], [], [], []
        for seed in seeds:
            res = tb.fit_em(target, source, label, n_domains=K, seed=seed, calibrate="none", **opts, **kw)
            pred, _ = named_predictions(res.names, res.proba[scored], truth[scored])
            preds.append(pred)
            ari.append(tb.adjusted_rand_index(pred, truth[scored]))
            obj.append(float(res.trace[-1]))
            chosen.append(res.info.get("transfer_choice", {}).get("chosen", kw.get("transfer")))
            print(f"{sec} seed {seed}: ARI {ari[-1]:.3f}, objective {obj[-1]:.1f}, {chosen[-1]}", flush=True)
        agree = min((tb.adjusted_rand_index(a, b) for i, a in enumerate(preds) for b in preds[i + 1:]),
                    default=float("nan"))
        rows.append({"section": sec, "K": K, "n": target.n_obs, "ARI per seed": " ".join(f"{a:.3f}" for a in ari),
                     "min": min(ari), "max": max(ari), "mean": float(np.mean(ari)),
                     "best objective's ARI": ari[int(np.argmax(obj))], "seeds agree": agree,
                     "chosen": " ".join(str(c) for c in chosen)})
    rows.append({"section": "mean", "K": "", "n": "", "ARI per seed": "", "chosen": "",
                 **{k: float(np.mean([r[k] for r in rows]))
                    for k in ("min", "max", "mean", "best objective's ARI", "seeds agree")}})
    return rows


DEFAULT_PROTOCOL = (
    "The default call `fit_em(target, source, label_key, n_domains=K, seed=s)` (transfer=\"auto\", "
    "anchored domains; `calibrate=\"none\"`, which changes no label; same protocols as the transfer "
    "tables) for seeds 0-{seeds} on each section. \"seeds agree\": the least ARI between two seeds' "
    "most probable domains; \"chosen\": the transfer mode each seed's call chose. The seed draws "
    "the k-means++ starts of free and novel domains; anchored domains without novel ones start from the source's "
    "classification and the factor models from a fixed PCA sketch, so their fits do not depend on it.")

PROTOCOL = (
    "`fit_em` with {kw} and `calibrate=\"none\"` (same protocol as the transfer tables) over seeds "
    "0-{seeds} on each section; the seed changes the k-means starts of the restarts. \"best "
    "objective's ARI\": the ARI of the seed whose fit has the largest objective (what more restarts "
    "would choose).")


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--data", choices=("her2st", "seqfish", "dlpfc"), required=True)
    ap.add_argument("--default", action="store_true", help="the default call (transfer='auto')")
    ap.add_argument("--seeds", type=int, default=5)
    ap.add_argument("--sections", nargs="*", default=None)
    ap.add_argument("--domains", choices=("anchored", "free"), default="anchored")
    ap.add_argument("--no-transfer", action="store_true")
    ap.add_argument("--factors", type=int, default=None, help="n_factors (default: fit_em's)")
    ap.add_argument("--genes", type=int, default=None, help="n_genes (default: the protocol's)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args()
    warnings.filterwarnings("ignore")
    sections = args.sections or {"her2st": _HER2ST_SECTIONS, "seqfish": _SEQFISH_SECTIONS,
                                 "dlpfc": _DLPFC_SECTIONS}[args.data]
    if args.data == "dlpfc" and not args.default:
        ap.error("--data dlpfc is measured with --default")
    kw = {} if args.default else dict(domains=args.domains, transfer="none" if args.no_transfer else "eb")
    if args.factors is not None:
        kw["n_factors"] = args.factors
    rows = run(args.data, sections, range(args.seeds), kw, args.genes)
    cols = ["section", "K", "n", "ARI per seed", "min", "max", "mean", "best objective's ARI"]
    if args.default:
        cols += ["seeds agree", "chosen"]
    fmt = {c: "{:.3f}" for c in cols[4:9]}
    print(markdown_table(rows, cols, fmt))
    write_json(args.json, rows)
    if args.sections is None:
        title = f"Seed spread of the default call: {args.data}" if args.default else f"Seed spread: {args.data}"
        text = DEFAULT_PROTOCOL if args.default else PROTOCOL
        publish(title, text.format(seeds=args.seeds - 1, kw=kw),
                [table_spec(rows, cols, fmt)])


if __name__ == "__main__":
    main()
