"""Scores without extra dependencies: ARI, NMI, Hungarian alignment, calibration error, and
named domains read as labels."""

from __future__ import annotations

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.special import comb


def contingency(a, b) -> np.ndarray:
    _, ia = np.unique(np.asarray(a), return_inverse=True)
    _, ib = np.unique(np.asarray(b), return_inverse=True)
    M = np.zeros((ia.max() + 1, ib.max() + 1), dtype=np.int64)
    np.add.at(M, (ia, ib), 1)
    return M


def adjusted_rand_index(a, b) -> float:
    M = contingency(a, b)
    n = M.sum()
    sum_ij = comb(M, 2).sum()
    sa, sb = comb(M.sum(1), 2).sum(), comb(M.sum(0), 2).sum()
    expected = sa * sb / comb(n, 2)
    top = 0.5 * (sa + sb)
    if top == expected:
        return 1.0
    return float((sum_ij - expected) / (top - expected))


def normalized_mutual_info(a, b) -> float:
    """NMI with arithmetic-mean normalisation (scikit-learn's default)."""
    M = contingency(a, b).astype(np.float64)
    n = M.sum()
    pij = M / n
    pi, pj = pij.sum(1), pij.sum(0)
    nz = pij > 0
    mi = np.sum(pij[nz] * np.log(pij[nz] / np.outer(pi, pj)[nz]))
    h = lambda x: -np.sum(x[x > 0] * np.log(x[x > 0]))  # noqa: E731
    denom = 0.5 * (h(pi) + h(pj))
    return float(mi / denom) if denom > 0 else 1.0


def align_labels(labels, reference, K: int | None = None) -> np.ndarray:
    """Permutation `perm` (perm[k] = reference label) maximising agreement (Hungarian)."""
    labels, reference = np.asarray(labels), np.asarray(reference)
    K = K or int(max(labels.max(), reference.max()) + 1)
    M = np.zeros((K, K))
    np.add.at(M, (labels, reference), 1)
    r, c = linear_sum_assignment(-M)
    perm = np.arange(K)
    perm[r] = c
    return perm


def expected_calibration_error(confidence, correct, bins: int = 10) -> float:
    """ECE: sum over equal-width confidence bins of (share of spots) x |mean confidence - accuracy|."""
    confidence, correct = np.asarray(confidence, float), np.asarray(correct, float)
    idx = np.clip(np.digitize(confidence, np.linspace(0, 1, bins + 1)) - 1, 0, bins - 1)
    out = 0.0
    for b in range(bins):
        m = idx == b
        if m.any():
            out += m.mean() * abs(confidence[m].mean() - correct[m].mean())
    return float(out)


def domain_labels(names, proba, truth) -> list[str]:
    """Each domain's label: its own name when that is a label of the truth, else (novel or free
    domains) the label it overlaps most by Hungarian matching among the labels left, else
    "unmatched <name>"."""
    names = [str(n) for n in names]
    truth = np.asarray(truth).astype(str)
    labels = list(np.unique(truth))
    lab = np.argmax(np.asarray(proba), axis=1)
    mapped = {k: n for k, n in enumerate(names) if n in labels}
    free = [k for k in range(len(names)) if k not in mapped]
    left = [lb for lb in labels if lb not in mapped.values()]
    if free and left:
        M = np.array([[np.sum((lab == k) & (truth == lb)) for lb in left] for k in free])
        r, c = linear_sum_assignment(-M)
        mapped.update({free[i]: left[j] for i, j in zip(r, c)})
    return [mapped.get(k, f"unmatched {names[k]}") for k in range(len(names))]


def named_predictions(names, proba, truth):
    """The predicted label per spot (its most probable domain's, read by `domain_labels`) and
    that domain's probability."""
    proba = np.asarray(proba)
    lab = np.argmax(proba, axis=1)
    pred = np.array(domain_labels(names, proba, truth), dtype=object)[lab]
    return pred, proba[np.arange(lab.size), lab]


def calibration_summary(names, proba, truth, bins: int = 10) -> dict:
    """How well per-spot domain probabilities match an annotation, domains read as labels by
    `domain_labels`: accuracy of the most probable domain, its mean probability, ECE (equal-width
    bins), the multi-class Brier score (mean over spots of sum over labels of (P(label) -
    [label is the truth])^2, a domain's probability counted for its label), and the reliability
    bins (lower edge, spots, mean confidence, accuracy; NaN for empty bins)."""
    truth = np.asarray(truth).astype(str)
    proba = np.asarray(proba, np.float64)
    dl = np.array(domain_labels(names, proba, truth), dtype=object)
    pred, conf = named_predictions(names, proba, truth)
    ok = (pred == truth).astype(float)
    cols = sorted(set(dl) | set(truth))
    P = np.zeros((truth.size, len(cols)))
    for k, lb in enumerate(dl):
        P[:, cols.index(lb)] += proba[:, k]
    Y = (np.asarray(cols, dtype=object)[None, :] == truth[:, None]).astype(float)
    idx = np.clip(np.digitize(conf, np.linspace(0, 1, bins + 1)) - 1, 0, bins - 1)
    n_b = np.bincount(idx, minlength=bins)
    with np.errstate(invalid="ignore"):
        conf_b = np.bincount(idx, conf, minlength=bins) / n_b
        acc_b = np.bincount(idx, ok, minlength=bins) / n_b
    return {"accuracy": float(ok.mean()), "mean_confidence": float(conf.mean()),
            "ece": expected_calibration_error(conf, ok, bins),
            "brier": float(np.mean(np.sum((P - Y) ** 2, axis=1))),
            "bins": {"lower": np.linspace(0, 1, bins + 1)[:-1], "n": n_b, "confidence": conf_b,
                     "accuracy": acc_b}}
