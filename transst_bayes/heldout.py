"""The source's held-out fits, for both paths: each section of the labeled source (or each
fold of spatial tiles of it, fitted in place) fitted as a target from the others by EM (`held_out`); on them the
transfer mode of transfer="auto" is chosen (`choose_transfer`) and the temperature of the
per-spot probabilities is found (`temperature`).

The held-out fits read only the source and the settings, never the target, so a process keeps
those of its last MEMO_SIZE (source, settings) pairs: a second call with the same labeled source
(several targets fitted from one reference, `fit_em` then `fit_svi`) reuses them instead of
fitting the same parts again; `res.info` says so."""

from __future__ import annotations

import hashlib
import time
import warnings
from collections import OrderedDict
from dataclasses import asdict, replace
from typing import Callable

import numpy as np
import scipy.sparse as sp

from . import calibration as C
from . import conformal as CF
from . import validate as V
from .data import DataSettings, expression_matrix
from .job import FitJob, in_mode
from .metrics import adjusted_rand_index
from .settings import EMSettings

# transfer="auto" sets the source aside only when the held-out parts' mean ARI without it is
# ahead by more than this: a near tie keeps the source, whose classes name the domains (on
# simulations whose classes carry over, a free fit of the source's own section was ahead of the
# transfer within it by 0.009-0.017; on HER2ST "none" was ahead by 0.031-0.099 where chosen)
NONE_MARGIN = 0.02
MEMO_SIZE = 4  # (source, settings) pairs whose held-out fits a process keeps
REUSED = "reused from an earlier call with the same source and settings"
_memo: OrderedDict = OrderedDict()  # fingerprint -> (held-out fits, scheme in words)


def choose_transfer(job: FitJob, label_key: str, em: EMSettings, fit: Callable) -> tuple:
    """transfer="auto": the mode ("eb" or "none") whose fits of the held-out source sections
    (`held_out`) recover their annotation better (mean ARI; "none" only when ahead by more than
    NONE_MARGIN), as (job, em, held
    fits of that mode for `finish` to calibrate on, or None). The choice is in the returned
    job's `choice` and, when it sets the source aside, a warning in its `notes`."""
    if em.transfer != "auto":
        return job, em, None
    em = replace(em, transfer="eb")
    if job.mode == "none":  # no labeled source: nothing to choose
        return job, em, None
    t0 = time.perf_counter()
    held = {}
    for mode in ("eb", "none"):
        held[mode], how = held_out(job.source, label_key, replace(em, transfer=mode), job.ds, fit,
                                   f"held-out fits, transfer={mode}" if job.progress else None)
        if held[mode] is None:  # no coordinates, or every fit of this mode collapsed
            job = job._replace(seconds={"held_out": time.perf_counter() - t0})
            return job._replace(choice=dict(chosen="eb", why=f"transfer='auto' kept 'eb': {how}")), em, held["eb"]
    ari = {m: float(np.mean([0.0 if names is None else  # a collapsed fit found nothing
                             adjusted_rand_index(np.asarray(names)[np.argmax(P, axis=1)], truth)
                             for names, P, truth in held[m]])) for m in held}
    failed = {m: sum(names is None for names, _, _ in held[m]) for m in held}
    # the target alone only where it did clearly better and never collapsed on a held-out section
    chosen = "none" if ari["none"] > ari["eb"] + NONE_MARGIN and not failed["none"] else "eb"
    choice = dict(chosen=chosen, held_out_ari=ari, n_sections=len(held["eb"]), collapsed=failed, held_out=how)
    if chosen == "none":
        with V.recorded_warnings(job.notes):
            warnings.warn(
                f"the source's classes did not carry over to its own held-out parts ({how}; mean ARI "
                f"{ari['eb']:.3f} with the source, {ari['none']:.3f} without it), so the target's domains "
                "were found without the source (transfer='none'; domains are not named after source "
                "classes); pass transfer='eb' to use the source anyway", UserWarning, stacklevel=V.user_level())
    job = in_mode(job, chosen)._replace(choice=choice, seconds={"held_out": time.perf_counter() - t0})
    return job, replace(em, transfer=chosen), held[chosen]


def temperature(calibrate, source, label_key: str, em: EMSettings, ds: DataSettings, fit: Callable,
                held=None, progress: bool = False) -> tuple:
    """The temperature of the per-spot probabilities, how it was found, the held-out fits'
    pooled ECE at T = 1 and at the chosen T (None when no held-out fits were made), the
    held-out scheme (`C.held_out_groups`; None without held-out fits) and the conformal
    thresholds of the domain sets (`conformal.thresholds`, from the same fits at that T; None
    without them). `held`: the held-out fits already made (by `choose_transfer`), else they are
    made here."""
    if not isinstance(calibrate, str):
        return float(calibrate), "fixed temperature", None, None, None
    if calibrate == "none":
        return 1.0, "none (calibrate='none')", None, None, None
    if source is None:
        return 1.0, "none: no labeled source to calibrate on", None, None, None
    holdout = C.held_out_groups(source, C.section_key(source, ds.source_batch_key), ds.spatial_key)
    if holdout.groups is None:
        return 1.0, f"none: {holdout.how}", None, None, None
    reused = ""
    if held is None:
        held, why = held_out(source, label_key, em, ds, fit, "held-out fits, calibration" if progress else None)
        if held is None:
            return 1.0, f"none: {why}", None, None, None
        reused = f"; {REUSED}" if why.endswith(REUSED) else ""
    T, e = C.choose_temperature(held)
    n_fits = sum(names is not None for names, _, _ in held)
    key = C.section_key(source, ds.source_batch_key)
    what = f"spatial folds ({n_fits} fits" if holdout.in_context else f"source sections ({key}: {n_fits} fits"
    return T, (f"held-out {what}; their ECE {e[0]:.3f} at T = 1, {float(e.min()):.3f} at T = {T:.2f}{reused})"), \
        [float(e[0]), float(e.min())], holdout.how, CF.thresholds(held, C.temper, T)


def held_out(source, label_key: str, em: EMSettings, ds: DataSettings, fit_one: Callable,
             progress: str | None = None) -> tuple:
    """Each section of the source (or, when its sections are not named, each fold of spatial
    tiles of its spots, in place: `C.held_out_groups`) fitted as a target from the others, with the fit's settings
    (`calibrate="none"`): ([(names, proba, labels)], the scheme in words), or (None, why not)
    when the source has no coordinates or no group could be fitted on its own. `fit_one`:
    `fit.held_out_fit` (passed in: this module sits below it), called with the settings `em`
    and the parts' sizes padded to common ones, so that the parts' fits share their compiled
    programs."""
    holdout = C.held_out_groups(source, C.section_key(source, ds.source_batch_key), ds.spatial_key)
    if holdout.groups is None:
        return None, holdout.how
    key = fingerprint(source, label_key, holdout.groups, em, ds)
    if key in _memo:
        _memo.move_to_end(key)
        held, how = _memo[key]
        return held, f"{how}; {REUSED}"
    inner = replace(ds, layer=ds.source_layer or ds.layer, library_key=None,
                    graph_key=DataSettings.graph_key)
    opts = {k: v for k, v in asdict(inner).items() if k != "dtype"}

    # every part's target padded to the largest part's spots, every part's source to the largest
    # source of a part and every part's domains to the most classes of a part: the parts' fits
    # share their compiled programs
    groups = np.asarray(holdout.groups)
    parts = np.unique(groups)
    labels = source.obs[label_key].astype(str).to_numpy()
    sizes = [int(np.sum(groups == g)) for g in parts]
    rows = dict(source_rows=source.n_obs - min(sizes))
    if not holdout.in_context:  # in place, each part's target and K are the whole source's
        rows.update(spot_rows=max(sizes), domain_rows=max(np.unique(labels[groups == g]).size for g in parts))

    def fit(tgt, src, lk, K):
        with warnings.catch_warnings():  # a held-out source section's warnings are not the target's
            warnings.simplefilter("ignore", UserWarning)
            return fit_one(replace(em, **rows), tgt, src, lk, K, opts)

    held = C.held_out_fits(source, label_key, holdout, ds.spatial_key, fit, progress,
                           alone=em.transfer == "none")
    if not any(names is not None for names, _, _ in held):
        return None, f"no group of the {holdout.how} could be fitted"
    for _, proba, truth in held:  # shared by every later call that reuses them
        for a in (proba, truth):
            if isinstance(a, np.ndarray):
                a.setflags(write=False)
    _memo[key] = (held, holdout.how)
    while len(_memo) > MEMO_SIZE:
        _memo.popitem(last=False)
    return held, holdout.how


def fingerprint(source, label_key: str, groups, em: EMSettings, ds: DataSettings) -> str:
    """A digest of everything the held-out fits read: the source's expression (the layer they
    use), genes, labels, coordinates and held-out groups, and the settings."""
    h = hashlib.blake2b(digest_size=20)
    X = expression_matrix(source, ds.source_layer or ds.layer, "source")
    parts = [X.data, X.indices, X.indptr] if sp.issparse(X) else [X]
    h.update(repr((X.shape, str(X.dtype), sp.issparse(X))).encode())
    for a in parts:
        h.update(np.ascontiguousarray(a))  # read in place, not copied
    for column in (source.var_names, source.obs[label_key].astype(str), groups):
        h.update("\x1f".join(map(str, column)).encode())
    h.update(np.ascontiguousarray(np.asarray(source.obsm[ds.spatial_key], np.float64)).tobytes())
    h.update(repr((label_key, sorted(asdict(em).items()), sorted(asdict(ds).items()))).encode())
    return h.hexdigest()
