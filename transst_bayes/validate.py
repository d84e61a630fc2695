"""Argument checks shared by every entry point: each names the argument, the value and the fix,
and runs in plain Python / NumPy before any data reach the device."""

from __future__ import annotations

import math
import os
import sys
import warnings
from contextlib import contextmanager
from numbers import Integral, Real

import numpy as np


_PACKAGE = os.path.dirname(os.path.abspath(__file__))


def user_level() -> int:
    """The `stacklevel` that points a warning at the first frame outside this package: the
    user's call, however deep in the package the warning is raised (pass it to warnings.warn
    from the function that warns)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and os.path.abspath(frame.f_code.co_filename).startswith(_PACKAGE + os.sep):
        frame, level = frame.f_back, level + 1
    return level


def _typed(name: str, value, kind: type, what: str, none_ok: bool) -> bool:
    """True when `value` is an instance of `kind` (bools never are); False for an allowed None;
    else a TypeError naming the argument."""
    if value is None and none_ok:
        return False
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, kind):
        raise TypeError(f"{name} must be {what}{' or None' if none_ok else ''}, got {value!r} "
                        f"({type(value).__name__})")
    return True


def integer(name: str, value, minimum: int | None = None, maximum: int | None = None,
            none_ok: bool = False):
    """`value` as an int: Python or NumPy integers only (not bool, not 3.0, not "3")."""
    if not _typed(name, value, Integral, "an int", none_ok):
        return None
    v = int(value)
    if minimum is not None and v < minimum:
        raise ValueError(f"{name} must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise ValueError(f"{name} must be <= {maximum}, got {v}")
    return v


def number(name: str, value, minimum: float | None = None, strict: bool = False,
           none_ok: bool = False):
    """`value` as a finite float: a real number (not bool, not a string), not NaN or inf, and
    >= `minimum` (> with `strict`)."""
    if not _typed(name, value, Real, "a number", none_ok):
        return None
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be finite, got {v}")
    if minimum is not None and (v <= minimum if strict else v < minimum):
        raise ValueError(f"{name} must be {'>' if strict else '>='} {minimum}, got {v}")
    return v


def fraction(name: str, value) -> float:
    """A number strictly between 0 and 1 (a credible level, a quantile)."""
    v = number(name, value)
    if not 0 < v < 1:
        raise ValueError(f"{name} must be in (0, 1), got {v}")
    return v


def flag(name: str, value) -> bool:
    """A bool (Python or NumPy): `copy=1` or `copy="yes"` are refused rather than guessed."""
    if not isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name} must be True or False, got {value!r} ({type(value).__name__})")
    return bool(value)


def key(name: str, value, none_ok: bool = False):
    """A non-empty str used as an AnnData key (obs/obsm/uns/var column names)."""
    if value is None and none_ok:
        return None
    if not isinstance(value, str) or not value:
        raise TypeError(f"{name} must be a non-empty str{' or None' if none_ok else ''}, got "
                        f"{value!r} ({type(value).__name__})")
    return value


def anndata(name: str, value):
    """An AnnData (duck-typed: obs, var_names and X), else a TypeError saying what to pass."""
    if not all(hasattr(value, a) for a in ("obs", "var_names", "X")):
        raise TypeError(f"{name} must be an AnnData, got {type(value).__name__}; wrap arrays with "
                        "anndata.AnnData(X, obsm={'spatial': coords}) or use transst_bayes.fit_em")
    return value


MIN_SPOTS = 3


def spots(n: int, what: str = "target") -> None:
    """A fit needs a few spots: with fewer than MIN_SPOTS no gene varies and no graph exists."""
    if n < MIN_SPOTS:
        raise ValueError(f"{what} has {n} spot{'s' if n != 1 else ''}{' (it is empty)' if n == 0 else ''}; a domain fit needs at least "
                         f"{MIN_SPOTS} (with more spots than domains); pass the whole section")


def unique_names(names, what: str) -> None:
    """Gene names must be unique: duplicates would pair loadings with the wrong gene."""
    names = np.asarray(names).astype(str)
    u, counts = np.unique(names, return_counts=True)
    if (counts > 1).any():
        dup = u[counts > 1]
        raise ValueError(f"{what} has {int((counts - 1).sum())} duplicated gene names (e.g. "
                         f"{[str(d) for d in dup[:3]]}); make them unique first, e.g. adata.var_names_make_unique()")


def coordinates(coords: np.ndarray, what: str) -> np.ndarray:
    """Spatial coordinates must be (n, 2): a third column (z) would be dropped silently and spots
    far apart in z would become neighbours."""
    c = np.asarray(coords)
    if c.ndim != 2 or c.shape[1] != 2:
        raise ValueError(f"{what} must be 2-D coordinates of shape (n_spots, 2), got shape {c.shape}; "
                         "pass x and y only (fit each z-plane as its own section, with library_key)")
    return c


@contextmanager
def recorded_warnings(sink: list):
    """Collect the UserWarnings raised inside (their messages go to `sink`, for
    `res.info["warnings"]`) and pass every warning on to the caller's filters."""
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        yield
    for w in caught:
        if issubclass(w.category, UserWarning) and str(w.message) not in sink:
            sink.append(str(w.message))
        warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)


def weak_anchoring(kappa, threshold: float) -> None:
    """Warn when an anchored fit's kappa says the source classes barely inform the domains."""
    if kappa is not None and kappa >= threshold:
        warnings.warn(f"weak anchoring: kappa = {kappa:.2f} >= {threshold:g}: the target's domains sit as far from their "
                      "source classes as the factors spread, so the source's classes barely inform them and "
                      "the domain names may be wrong (the classes do not carry over, e.g. tumours of different "
                      "patients); compare with domains='free' and with transfer='none'",
                      UserWarning, stacklevel=user_level())


def empty_domains(labels, names) -> None:
    """Warn when some domains hold no spot in the final labels (K larger than the data support)."""
    counts = np.bincount(np.asarray(labels), minlength=len(names))
    empty = [str(names[k]) for k in np.flatnonzero(counts == 0)]
    if empty:
        warnings.warn(f"{len(empty)} of {len(names)} domains hold no spot ({empty[:5]}); the data support "
                      "fewer domains: lower n_domains or let K be chosen from a list", UserWarning, stacklevel=user_level())


def unconverged(what: str, K: int, n_iter: int, fix: str) -> None:
    """Warn when the chosen fit stopped at its iteration limit before its stopping rule held."""
    warnings.warn(f"the {what} at K={K} stopped after {n_iter} iterations without converging: its "
                  f"objective was still changing by {fix}", UserWarning, stacklevel=user_level())


def unmixed_chains(rhat: dict, threshold: float) -> None:
    """Warn, naming the sites, when the chains of an MCMC fit disagree (split R-hat above
    `threshold` for some element of a site)."""
    bad = sorted(k for k, r in rhat.items() if r > threshold)
    if bad:
        worst = ", ".join(f"{k} {rhat[k]:.3f}" for k in bad)
        warnings.warn(f"the MCMC chains have not mixed: largest split R-hat above {threshold} for {worst}; "
                      "raise num_warmup and num_samples (or target_accept when there are divergences)",
                      UserWarning, stacklevel=user_level())


COUNTS_SAMPLE = 200_000  # values looked at to tell raw counts from normalised data


def non_finite_error(bad: int, what: str) -> ValueError:
    return ValueError(f"{what} contains {bad} NaN or inf values; remove or impute them before fitting")


def counts_verdict(minimum: float, sample: np.ndarray, size: int, n_negative, what: str,
                   override: bool | None) -> bool:
    """`is_counts` from the smallest value, the first COUNTS_SAMPLE values, the number of values
    and a function counting the negative ones (called only when needed): shared by the host
    and the device preparation."""
    neg = size and minimum < 0
    if override is True:
        if neg:
            raise ValueError(
                f"{what} has negative values but counts=True; raw counts must be >= 0 "
                "(pass counts=False if the data are already log-normalised)"
            )
        return True
    if override is False:
        return False
    sample = np.asarray(sample)
    integer = np.abs(sample - np.round(sample)) < 1e-6
    if neg:
        if not integer.all():
            return False
        n_neg = n_negative()
        if n_neg <= max(1, 1e-3 * size):
            raise ValueError(
                f"{what} looks like raw counts (all integers) but has {n_neg} negative value(s); "
                "counts cannot be negative: fix those entries, or pass counts=False if the data "
                "are already normalised"
            )
        return False
    return bool(np.all(integer))
