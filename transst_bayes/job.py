"""What both fits share: before fitting, the inputs turned into AnnData at the boundary, every
check before any expensive work, the data prepared, the K request and the transfer mode
(`setup` -> `FitJob`), the precision context; after it, the parts of the result that do not
depend on the path (`source_fields`, `data_fields`, `settings_record`, `k_table_row`, `mark_chosen`)."""

from __future__ import annotations

import contextlib
import warnings
from dataclasses import asdict, fields
from typing import TYPE_CHECKING, NamedTuple, Sequence

import jax
import numpy as np

from . import cache
from . import compiler
from . import calibration as C
from . import classifier as CL
from . import devprep
from . import plan as D
from . import validate as V
from ._version import __version__
from .data import DataSettings, Prepared, as_anndata, centred, expression_matrix, own_means_removed, prepare

if TYPE_CHECKING:
    from .settings import EMSettings



def precision(dtype: str):
    """Context in which JAX computes in `dtype` (float64 needs x64 switched on locally)."""
    if dtype == "float64":
        enable = getattr(jax, "enable_x64", None)
        if enable is None:  # pragma: no cover - older JAX
            from jax.experimental import enable_x64 as enable
        return enable(True)
    return contextlib.nullcontext()


def check_k(Ks: Sequence[int], n: int) -> list[int]:
    out = []
    for K in Ks:
        if isinstance(K, bool) or not isinstance(K, (int, np.integer)):
            raise TypeError(f"n_domains must be an int or a list of ints, got {K!r}")
        K = int(K)
        if K < 2:
            raise ValueError(f"n_domains must be >= 2, got {K}")
        if 2 * K > n:
            raise ValueError(
                f"n_domains={K} is too large for {n} target spots (need at least 2 spots per "
                f"domain, so K <= {n // 2}); lower n_domains"
            )
        out.append(K)
    if not out:
        raise ValueError("n_domains is empty; give K or a list of K")
    return out


def k_request(n_domains, n_novel) -> tuple:
    """(n_domains, n_novel) checked for type now, resolved once the source classes are known."""
    if n_domains is not None:
        D._ints(n_domains, "n_domains")
    D._ints(n_novel, "n_novel")
    return n_domains, n_novel


def data_settings(kw: dict) -> DataSettings:
    names = DataSettings.__dataclass_fields__.keys()
    bad = [k for k in kw if k not in names]
    if bad:
        raise TypeError(f"unexpected keyword argument(s) {bad}; data options are {sorted(names)}")
    if "genes" in kw and not isinstance(kw["genes"], str) and hasattr(kw["genes"], "__iter__"):
        kw = dict(kw, genes=tuple(kw["genes"]))  # else DataSettings names the bad value
    return DataSettings(**kw)


def inputs(target, source, source_labels, spatial):
    """Arrays become AnnData here, at the boundary."""
    if not hasattr(target, "obs"):
        target = as_anndata(target, spatial=spatial)
    if source is not None and not hasattr(source, "obs"):
        if source_labels is None:
            raise ValueError("source given as an array needs source_labels=... (one per row)")
        labels = np.asarray(source_labels)
        if labels.shape[0] != source.shape[0]:
            raise ValueError(f"source_labels has {labels.shape[0]} entries for {source.shape[0]} rows")
        if source.shape[1] != target.n_vars:
            raise ValueError(f"source has {source.shape[1]} columns and target {target.n_vars}: arrays "
                             "without gene names are matched by position, so they need the same genes "
                             "in the same order; pass AnnData objects (genes matched by name) instead")
        source = as_anndata(source, genes=list(map(str, target.var_names)), obs={"label": labels})
    return target, source


class FitJob(NamedTuple):
    """What `setup` hands to a fit: the inputs as AnnData, the prepared matrices, the data
    settings, the K request (n_domains, n_novel), the transfer mode used (transfer="auto": "eb"
    until `heldout.choose_transfer` decides) and the warnings so far."""
    target: object
    source: object
    prep: Prepared
    ds: DataSettings
    request: tuple
    mode: str
    notes: list
    choice: dict  # transfer="auto": what `heldout.choose_transfer` chose and why (else empty)
    progress: bool = False  # progress bars over the long stages (the fit's progress_bar)
    seconds: dict | None = None  # stages timed before the fit (the held-out fits of transfer="auto")


class EMRun(NamedTuple):
    """What the EM path's run (`em.driver.fit_arrays`) hands to the result's assembly, and to the
    SVI path as its warm start: the source fit, the transfer step (its factor scores of the real
    spots), one clustering fit, domain plan, classifier agreement and data term per K tried, the
    generative log-likelihood that K is chosen on, the source's classes present in the target
    and their posterior, the seconds per stage."""
    timings: dict
    source: object  # em.source.SourceFit or None (no source)
    transfer: object  # em.loadings.TransferFit
    n_devices: int
    fits: dict  # K -> the clustering fit (real spots only)
    plans: dict  # K -> plan.DomainPlan
    Ks: list
    variant: str
    anchors: tuple
    agreement: dict  # K -> the classifier's agreement with the generative fit, or None
    data_terms: dict  # K -> (power on the expression likelihood, the classifier's term or None)
    generative_loglik: dict  # K -> the generative fit's log-likelihood
    source_support: float
    class_post: object  # (n, C) posterior of the source classes, or None
    present: list  # the source's classes present in the target


def setup(target, source, label_key: str, n_domains, n_novel, calibrate, em: EMSettings, source_labels,
          spatial, data_options: dict, mesh=None, progress: bool = False) -> FitJob:
    """The set-up both fits share, every check before any expensive work: data settings, the K
    request, arrays turned into AnnData, `calibrate`, the target's size; then the data prepared
    (its warnings recorded) and q checked against the genes and spots kept. JAX's persistent
    compilation cache is switched on here unless the process has decided otherwise (`cache`),
    and XLA's quicker CPU compilation where JAX has not started yet (`compiler`)."""
    ds = data_settings(dict(data_options, dtype=em.dtype))
    request = k_request(n_domains, n_novel)
    target, source = inputs(target, source, source_labels, spatial)
    check_calibrate(calibrate, source, ds)
    V.spots(target.n_obs)
    cache.ensure_default()  # before anything compiles
    compiler.ensure_default()
    notes: list = []
    with V.recorded_warnings(notes):
        check_neighbours(ds, target.n_obs)
        prep = prepare(target, source, label_key, ds, min_genes=em.n_factors + 1,
                       on_device=on_device(ds, target, mesh))
    n, p = prep.X.shape
    for what, size in (("genes", p), ("spots", n)):
        if em.n_factors >= size:
            raise ValueError(f"n_factors={em.n_factors} must be smaller than the number of {what} ({size})")
    mode = ("eb" if em.transfer == "auto" else em.transfer) if prep.X_source is not None else "none"
    return in_mode(FitJob(target, source, prep, ds, request, "eb", notes, {}, bool(progress)), mode)


WIDE_GRAPH = 0.1  # a "knn" graph whose spots each neighbour more than this share of the section


def check_neighbours(ds: DataSettings, n: int) -> None:
    """n_neighbors against the number of target spots, before the graph is built: as many as
    the spots is an error; a large share of them links far-apart spots and the Potts prior then
    pulls every spot into one domain (a warning)."""
    if ds.graph != "knn":
        return
    k = ds.n_neighbors
    if k >= n:
        raise ValueError(f"n_neighbors={k} must be smaller than the number of target spots ({n}); use a "
                         "local neighbourhood: 6 for Visium / ST lattices, 10-15 for imaging data")
    if k > max(30, WIDE_GRAPH * n):
        warnings.warn(f"n_neighbors={k} links each spot to {k / n:.0%} of the {n} target spots: the Potts "
                      "prior then smooths across the whole section and merges the domains; use a local "
                      "neighbourhood (6 for Visium / ST lattices, 10-15 for imaging data)",
                      UserWarning, stacklevel=V.user_level())


def in_mode(job: FitJob, mode: str) -> FitJob:
    """The job fitted in transfer `mode`; without the source ("none") the target is centred on its
    own gene means (`data.centred`: nothing but the source ties it to the pooled ones), unless
    its standardisation did so already (no pass over the matrix then)."""
    todo = mode == "none" and job.mode != "none" and not own_means_removed(job.prep, job.ds)
    prep = centred(job.prep) if todo else job.prep
    return job._replace(prep=prep, mode=mode)


def on_device(ds: DataSettings, target, mesh) -> bool:
    """Whether the target is prepared on the device (`DataSettings.prepare_on`)."""
    if ds.prepare_on != "auto":
        return ds.prepare_on == "device"
    if mesh is not None or jax.default_backend() == "cpu" or ds.dtype != "float32":
        return False
    return devprep.fits(expression_matrix(target, ds.layer, "target"), ds.n_genes)


def check_calibrate(calibrate, source=None, ds: DataSettings | None = None) -> None:
    """`calibrate`, and the source's section column when one is named, before any fitting."""
    if isinstance(calibrate, str):
        if calibrate not in ("auto", "none"):
            raise ValueError(f"calibrate must be 'auto', 'none' or a temperature > 0, got {calibrate!r}")
    else:
        V.number("calibrate ('auto', 'none' or a temperature)", calibrate, 0.0, strict=True)
    if calibrate == "auto" and source is not None and ds is not None:
        C.section_key(source, ds.source_batch_key)


def settings_from(cls, arguments: dict):
    """The settings dataclass `cls` from a fit's arguments (its `locals()`): each field is
    typed once, in the dataclass; arguments that are not fields are ignored."""
    return cls(**{f.name: arguments[f.name] for f in fields(cls) if f.name in arguments})


def source_fields(prep: Prepared, src) -> dict:
    """The result's source fields (`TransSTResult`'s W_s, psi_s, mu_s, Sigma_s, source_classes)
    from the source fit `src` (None without a source: only the class names)."""
    if src is None:
        return {"source_classes": list(prep.source_classes)}
    return {"W_s": np.asarray(src.W), "psi_s": np.asarray(src.psi), "mu_s": np.asarray(src.mu),
            "Sigma_s": np.asarray(src.Sigma), "source_classes": list(prep.source_classes)}


def data_fields(prep: Prepared) -> dict:
    """The result's data fields: the genes and spots fitted and the genes' standardisation."""
    return {"genes": prep.genes, "obs_names": prep.obs_names, "gene_mean": prep.gene_mean,
            "gene_scale": prep.gene_scale}


def settings_record(fit_settings: dict, ds: DataSettings, mode: str, variant: str, Ks, **extra) -> dict:
    """A result's `settings`: the fit's settings, the data settings (prefixed "data_"), what was
    used (transfer mode, variant, the K tried), the version; tuples as lists (JSON)."""
    out = dict(fit_settings, **{f"data_{k}": v for k, v in asdict(ds).items()})
    out.update(transfer_used=mode, variant_used=variant, n_domains_tried=list(Ks), version=__version__,
               **extra)
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in out.items()}


def k_table_row(row: dict) -> dict:
    """One row of the K table with NumPy floats as Python floats."""
    return {k: (float(v) if isinstance(v, (np.floating, float)) else v) for k, v in row.items()}


def mark_chosen(table: list, chosen: int) -> int:
    """Mark the row of K = `chosen` (and no other) as chosen; returns `chosen`."""
    for r in table:
        r["chosen"] = r["K"] == chosen
    return chosen


def _classes_found(prep: Prepared, plan: D.DomainPlan, labels: np.ndarray, has_source: bool) -> dict:
    """The source classes the fit found in the target (an anchored domain holding a spot) and
    those it did not; empty lists without a source."""
    if not has_source:
        return {"classes_found": [], "classes_absent": []}
    counts = np.bincount(labels, minlength=len(plan.names))
    names = [plan.names[k] for k in range(len(plan.classes)) if counts[k] > 0]
    return {"classes_found": names, "classes_absent": [c for c in prep.source_classes if c not in names]}


# info keys one path has and the other has not: EM's per-iteration parameter trace; SVI's rounds
PATH_INFO = {"em": ("trace",), "svi": ("svi_rounds", "svi_converged")}


def shared_info(prep: Prepared, out: EMRun, K: int, em: EMSettings, plan: D.DomainPlan,
                labels: np.ndarray) -> dict:
    """The `res.info` keys both paths give, from the EM fits they share (`fit_arrays`) and the
    chosen K's named plan and labels."""
    src, tr = out.source, out.transfer
    return {"classifier": classifier_info(out, K, em), "source_support": out.source_support,
            "cv_lambda": float(tr.cv_lambda), "source_n_iter": None if src is None else int(src.n_iter),
            "transfer_n_iter": int(tr.n_iter), "n_colors": int(prep.graph.n_colors),
            "n_devices": out.n_devices, "domains_renamed": D.renamed(out.plans[K], plan),
            "classes_present": list(out.present),
            "timings": dict(prep.timings, **out.timings),
            **_classes_found(prep, plan, np.asarray(labels), src is not None)}


def classifier_info(out: EMRun, K: int, em: EMSettings) -> dict:
    """What `res.info["classifier"]` says of the chosen fit's data term: whether the source
    classifier's term was used, the agreement that decided it (None: not computed: no anchored
    two-stage fit or classifier=0), and the power on the expression likelihood."""
    weight, term = out.data_terms[K]
    gamma = out.agreement[K]
    return {"used": term is not None, "agreement": gamma, "agreement_min": CL.AGREEMENT_MIN,
            "weight": float(weight), "classifier_weight": float(em.classifier)}
