"""How far the annotation can be read from the expression at all: a classifier trained on the
*target's own* labels, cross-validated, on the protocols of benchmarks/transfer.py.

This is not a method a user could run on an unlabeled section (it needs the target's
annotation); it is a reference for the accuracy targets of the transfer tables: an
unsupervised or transferred fit that comes close to it has read from the expression about as
much of the annotation as a supervised model of the same features does. Features: the same 15
principal components of the same standardised matrix as the table's "PCA + ..." baselines
(`_common.pca_scores` of `prepare(...).X`). Model: multinomial logistic regression
(scikit-learn, C = 1). Two cross-validations with 5 folds each: random folds (optimistic: a
held-out spot's neighbours are in the training folds, and neighbouring spots are alike) and
spatial blocks (5 stripes of equal spot count along the first coordinate: each fold is a region
the classifier has not seen, closer to a new section); each also after one majority vote over
each spot and its 6 nearest spots (`_common.smooth_majority`, as in transfer.py's
"LR + smooth"). Scores: ARI against the annotation.

    python benchmarks/supervised_ceiling.py --data her2st|seqfish [--sections ...] [--json out.json]
"""

from __future__ import annotations

import time
import warnings

import numpy as np

from _common import (chosen_sections, markdown_table, mean_row, pca_scores, publish, section_parser,
                     smooth_majority, standardised_pair, table_spec, write_json)
from real_data import transfer_protocol

import transst_bayes as tb


def stripes(coords: np.ndarray, n_folds: int = 5) -> np.ndarray:
    """Fold of each spot: n_folds stripes of (nearly) equal spot count along the first coordinate."""
    rank = np.argsort(np.argsort(coords[:, 0], kind="stable"), kind="stable")
    return rank * n_folds // len(rank)


def run(data: str, sections, q=15, seed=0):
    from sklearn.linear_model import LogisticRegression
    from sklearn.model_selection import GroupKFold, KFold, cross_val_predict

    rows = []
    for sec in sections:
        target, source, K, label, opts = transfer_protocol(data, sec)
        truth = target.obs[label].astype(str).to_numpy()
        xy = np.asarray(target.obsm["spatial"], float)
        Z = pca_scores(np.asarray(standardised_pair(target, source, label, **opts).X, np.float64), q)
        lr = LogisticRegression(max_iter=3000, C=1.0)
        row = {"section": sec, "K": K, "n": target.n_obs}
        for name, cv, groups in (("random folds", KFold(5, shuffle=True, random_state=seed), None),
                                 ("spatial blocks", GroupKFold(5), stripes(xy))):
            pred = cross_val_predict(lr, Z, truth, cv=cv, groups=groups)
            row[f"{name} ARI"] = tb.adjusted_rand_index(pred, truth)
            row[f"{name} + smooth ARI"] = tb.adjusted_rand_index(smooth_majority(pred, xy), truth)
            row[f"{name} accuracy"] = float(np.mean(pred == truth))
        rows.append(row)
        print(", ".join(f"{k}={v:.3f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              flush=True)
    return rows


PROTOCOL = (
    "A multinomial logistic regression trained on the *target's own* annotation, on the same 15 "
    "principal components of the same standardised matrix as the PCA baselines, 5-fold "
    "cross-validated: random folds (optimistic: a held-out spot's neighbours are in the training "
    "folds) and spatial blocks (5 stripes of equal spot count along x: each fold a region the "
    "classifier has not seen); each also after the majority vote of \"LR + smooth\". Not a method "
    "for an unlabeled section: a reference for how much of the annotation a model of these "
    "features can read with the target's own labels.")


def main():
    args = section_parser(__doc__).parse_args()
    warnings.simplefilter("ignore")
    t0 = time.perf_counter()
    rows = run(args.data, chosen_sections(args), seed=args.seed)
    mean = mean_row(rows)
    print(markdown_table(rows + [mean], list(rows[0])))
    print(f"\ntotal {time.perf_counter() - t0:.0f} s")
    write_json(args.json, {"rows": rows, "mean": mean})
    if args.sections is None:
        publish(f"Supervised reference: {args.data}", PROTOCOL, [table_spec(rows + [mean], list(rows[0]))])


if __name__ == "__main__":
    main()
