"""Which target domains a fit has: the source classes the target supports (anchored domains, named
after their class) and novel domains for tissue the source lacks, with the priors that tie them.

The classes are found from the data, never asked of the user: each target spot is classified by
the source's class distributions of the factors, z | c ~ N(m_c, S_c), under the transferred
target loadings; a class is present when it takes at least MIN_CLASS_SHARE of the spots (and
MIN_CLASS_SPOTS). With K domains requested, the K present classes that take the most spots are
anchored; K beyond the present classes adds novel domains.
"""

from __future__ import annotations

from typing import NamedTuple, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from scipy.optimize import linear_sum_assignment

from . import factor as F
from . import priors as P
from . import variants as VR

MIN_CLASS_SHARE = 0.005
MIN_CLASS_SPOTS = 3
MIN_FOUND_SHARE = 0.01  # after the fit, an anchored domain with fewer spots reports its class absent
NOVEL = "novel"
# kappa at or above the factors' prior sd (1): the domain means may sit anywhere the factors do,
# so the source classes barely inform the domains and their names may be wrong (measured: HER2ST
# between patients 1.2-2.9, with named-domain accuracy 0.07-0.75; seqFISH 0.32-0.40)
KAPPA_WEAK = 1.0


class DomainPlan(NamedTuple):
    K: int
    classes: tuple  # source class index of each anchored domain (domains 0 .. len - 1)
    names: tuple  # a name per domain: the class name, or "novel 1", ...; free domains "0", "1", ...

    @property
    def n_novel(self) -> int:
        return self.K - len(self.classes)


def class_loglik(X, W, psi, mu, Sigma):
    """(n, C) log N(x_j | W m_c, W S_c W^T + Psi): the target under the source's classes."""
    return F.components(F.precompute(X, W, psi), mu, Sigma, X.shape[1]).loglik


def class_counts(loglik: np.ndarray) -> np.ndarray:
    """Spots per source class in the classification of the target, (C,)."""
    return np.bincount(np.argmax(loglik, axis=1), minlength=loglik.shape[1])


def present_classes(counts: np.ndarray) -> np.ndarray:
    """Indices of the classes present in the target, most spots first."""
    n = int(counts.sum())
    keep = np.flatnonzero(counts >= max(MIN_CLASS_SPOTS, MIN_CLASS_SHARE * n))
    return keep[np.argsort(-counts[keep], kind="stable")]


def class_posterior(loglik) -> np.ndarray:
    """(n, C) each spot's probabilities over the source classes (equal class weights) from
    `class_loglik`."""
    ll = np.asarray(loglik, np.float64)
    ll = ll - ll.max(axis=1, keepdims=True)
    P = np.exp(ll)
    return P / P.sum(axis=1, keepdims=True)


def named_after_fit(plan: DomainPlan, proba, class_post, class_names: Sequence[str]) -> DomainPlan:
    """The plan with its anchored domains re-matched to source classes after the fit: the
    matching (Hungarian) of anchored domains to classes that maximises the expected overlap
    sum_j P(y_j = k) P(c | x_j) of each domain with the source model's classification of the
    spots. A domain keeps its class unless the fit moved it onto another class's spots: on
    HER2ST that happened on 2 of 8 sections (F1, H1), where the re-matched names raise the
    share of spots whose domain names their annotation from 0.07 to 0.41 and 0.24 to 0.63; on
    seqFISH no name changed. Novel and free domains keep their names (and every domain when
    `class_post` is None: no source)."""
    A = len(plan.classes)
    if A == 0 or class_post is None:
        return plan
    S = np.asarray(proba, np.float64)[:, :A].T @ np.asarray(class_post, np.float64)  # (A, C)
    rows, cols = linear_sum_assignment(-S)
    classes = list(plan.classes)
    for r, c in zip(rows, cols):
        classes[r] = int(c)
    names = tuple(class_names[c] for c in classes) + plan.names[A:]
    return DomainPlan(plan.K, tuple(classes), names)


def renamed(before: DomainPlan, after: DomainPlan) -> dict:
    """{old name: new name} of the domains whose name `named_after_fit` changed."""
    return {a: b for a, b in zip(before.names, after.names) if a != b}


def _ints(v, what: str) -> list[int]:
    items = [v] if isinstance(v, (int, np.integer)) or isinstance(v, bool) else v
    if isinstance(items, (str, bytes)) or not isinstance(items, Sequence) and not hasattr(items, "__iter__"):
        raise TypeError(f"{what} must be an int or a list of ints, got {v!r}")
    out = []
    for x in items:
        if isinstance(x, bool) or not isinstance(x, (int, np.integer)):
            raise TypeError(f"{what} must be an int or a list of ints, got {v!r}")
        out.append(int(x))
    if not out:
        raise ValueError(f"{what} is empty; give an int or a list of ints")
    twice = sorted({x for x in out if out.count(x) > 1})
    if twice:
        raise ValueError(f"{what} lists {twice} more than once ({v!r}); give each value once")
    return out


def resolve_k(n_domains, n_novel, n_present: int | None, anchored: bool, default_k: int) -> list[int]:
    """The numbers of domains to fit. n_domains None: with anchoring the present classes plus each
    number of novel domains in `n_novel`; free with a source the present classes; without a
    source `default_k`."""
    if n_domains is not None:
        return _ints(n_domains, "n_domains")
    if anchored:
        novel = _ints(n_novel, "n_novel")
        if min(novel) < 0:
            raise ValueError(f"n_novel must be >= 0, got {n_novel!r}")
        return sorted({n_present + m for m in novel})
    return [n_present if n_present is not None else default_k]


def plan_domains(K: int, present: np.ndarray, class_names: Sequence[str], anchored: bool) -> DomainPlan:
    if not anchored:
        return DomainPlan(K, (), tuple(str(k) for k in range(K)))
    cls = tuple(int(c) for c in present[:K])
    novel = tuple(f"{NOVEL} {i + 1}" for i in range(K - len(cls)))
    return DomainPlan(K, cls, tuple(class_names[c] for c in cls) + novel)


def class_anchors(src, tr, variant: str):
    """The centres of the anchored domains' priors, (mean, covariance) per source class, in the
    space the clustering works in; (None, None) without a source. The joint variant clusters
    the factors themselves: the source's class moments (m_c, S_c). The two-stage variant
    clusters posterior-mean scores under the transfer step's loadings, which contract the
    factors by B = I - M^-1 (`factor.score_class_moments`): the classes contracted alike,
    (B m_c, B S_c B'). The scores' sampling noise (M^-1 - M^-2) is left to the data: with it the
    prior fits the target's class covariances far better (seqFISH embryo2_z5: KL 2-4 against
    38-93) yet seqFISH ARI fell from 0.72 to 0.67 (the source's tight directions separate its
    classes); without the contraction, low-depth count sections collapsed to one domain."""
    if src is None:
        return None, None
    if VR.get(variant).on_scores:
        return F.score_class_moments(tr.W, tr.psi, src.mu, src.Sigma, noise=False)
    return src.mu, src.Sigma


def domain_prior(plan: DomainPlan, src_mu, src_Sigma, q: int, dtype) -> P.DomainPrior:
    """Prior centres: source class (m_c, S_c) for anchored domains, the free prior for the rest."""
    free = P.free_prior(plan.K, q, dtype)
    if not plan.classes:
        return free
    # the anchored rows set on the host and the prior moved once: op by op in JAX (gather,
    # scatter) this was ~0.1 s of dispatch per fit, 15 fits per default call on HER2ST
    idx = np.asarray(plan.classes)
    A = len(plan.classes)
    mean, cov = np.array(free.mean), np.array(free.cov)
    mean[:A] = np.asarray(src_mu, mean.dtype)[idx]
    cov[:A] = np.asarray(src_Sigma, cov.dtype)[idx]
    return P.DomainPrior(jnp.asarray(mean), jnp.asarray(cov), jnp.asarray(np.arange(plan.K) < A))


def _best_split(Z: np.ndarray) -> tuple[float, np.ndarray]:
    """Split spots in two along their first principal axis at the cut that leaves the least
    squared error (exact 1-D 2-means by a scan of the sorted projections). Returns the share of
    that axis's variance the split explains (2/pi ~ 0.64 for a Gaussian, -> 1 for two separated
    groups) and the side of each spot."""
    Y = Z - Z.mean(0)
    _, _, vt = np.linalg.svd(Y, full_matrices=False)
    t = Y @ vt[0]
    o = np.argsort(t)
    ts = t[o]
    n = ts.size
    c1, c2 = np.cumsum(ts), np.cumsum(ts * ts)
    k = np.arange(1, n)
    left = c2[:-1] - c1[:-1] ** 2 / k
    right = (c2[-1] - c2[:-1]) - (c1[-1] - c1[:-1]) ** 2 / (n - k)
    j = int(np.argmin(left + right))
    side = np.zeros(n, bool)
    side[o[j + 1:]] = True
    total = float(c2[-1] - c1[-1] ** 2 / n)
    return (1.0 - float(left[j] + right[j]) / total if total > 0 else 0.0), side


def initial_labels(key, Z, loglik, plan: DomainPlan, n_restarts: int, kmeans_fn, prior: P.DomainPrior):
    """(n_restarts, n) starting labels of an anchored fit, each from the classification of the
    spots by the anchored classes (starts far from it, e.g. k-means clusters matched to the
    classes, won on the objective on real data and lost up to 0.4 ARI there).

    No novel domain: one start, each spot to its best class. With novel domains, restart 0 sends
    the spots the classes explain worst (a share n_novel / K) to the novel domains, split by
    k-means on the factor scores; restart r >= 1 splits n_novel classes in two along their first
    principal axis (`_best_split`; the side farther from the class mean becomes novel), taking
    the classes in order of how bimodal their spots are, from the r-th: this finds one source
    class that is two target domains (the source's own class is then bimodal too, so only the
    target's spots can show it)."""
    A = len(plan.classes)
    ll = np.asarray(loglik, np.float64)[:, list(plan.classes)]
    lab = np.argmax(ll, axis=1)
    if plan.n_novel == 0:
        return jnp.asarray(lab[None].astype(np.int32))
    keys = jax.random.split(key, n_restarts)
    best = np.max(ll, axis=1)
    worst = best <= np.quantile(best, plan.n_novel / plan.K)
    starts = [np.where(worst, A + np.asarray(kmeans_fn(keys[0], Z, plan.n_novel)), lab)]
    Zn = np.asarray(Z, np.float64)
    mean = np.asarray(prior.mean, np.float64)
    splits = {a: _best_split(Zn[lab == a]) for a in range(A) if np.sum(lab == a) >= 2 * MIN_CLASS_SPOTS}
    order = sorted(splits, key=lambda a: -splits[a][0])
    for r in range(1, n_restarts):
        start = lab.copy()
        for i in range(min(plan.n_novel, len(order))):
            a = order[(r - 1 + i) % len(order)]
            idx = np.flatnonzero(lab == a)
            side = splits[a][1]
            far = [np.sum((Zn[idx[side == h]].mean(0) - mean[a]) ** 2) for h in (False, True)]
            start[idx[side == bool(np.argmax(far))]] = A + i
        starts.append(start)
    return jnp.asarray(np.stack(starts).astype(np.int32))
