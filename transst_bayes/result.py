"""TransSTResult: what a fit returns, written into AnnData, saved and loaded without pickle."""

from __future__ import annotations

import json
import os
import zipfile
import dataclasses
from dataclasses import dataclass, field, fields
from collections.abc import Mapping
from typing import Any

import numpy as np

from . import keys
from . import validate as V
from .files import replacing

# tab20 colours (hex), so no plotting library is needed to write uns["<key>_colors"]
PALETTE = [
    "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f",
    "#bcbd22", "#17becf", "#aec7e8", "#ffbb78", "#98df8a", "#ff9896", "#c5b0d5", "#c49c94",
    "#f7b6d2", "#c7c7c7", "#dbdb8d", "#9edae5",
]

FILE_FORMAT = 1  # version of the .npz layout written by TransSTResult.save

_ARRAYS = ("labels", "proba", "factors", "W_t", "W_s", "psi", "mu", "Sigma", "trace",
           "psi_s", "mu_s", "Sigma_s", "gene_mean", "gene_scale")


def entropy(proba: np.ndarray) -> np.ndarray:
    p = np.clip(proba, 1e-300, 1.0)
    return -np.sum(np.where(proba > 0, proba * np.log(p), 0.0), axis=1)


@dataclass
class TransSTResult:
    """The result of `fit_em` and `fit_svi`: domains, probabilities, parameters, diagnostics.

    Arrays are NumPy; n is the number of spots fitted, p the number of genes fitted, q the
    number of factors, K the chosen number of domains, C the number of source classes and S the
    number of posterior draws (SVI). Each field has one name, listed below with what it holds on
    each path; every field is readable and settable, and `replace` returns a copy with some
    changed. Results are written into AnnData with `to_anndata`, saved with `save` and read with
    `load_result`.

    Parameters
    ----------
    labels : numpy.ndarray of int, shape (n,)
        The domain of each spot: ICM labels under the Potts prior, started at the most probable
        domains (EM: at the EM fit; SVI: at the guide's point estimate).
    proba : numpy.ndarray, shape (n, K)
        Domain probabilities (EM: the final mean-field responsibilities; SVI: averaged over the
        posterior draws), tempered by `info["temperature"]`.
    factors : numpy.ndarray, shape (n, q)
        Posterior mean factor scores (two-stage fits: the scores that were clustered).
    spot_loglik : numpy.ndarray or None, shape (S, n)
        SVI: the per-spot log-likelihood per posterior draw (WAIC / LOO); None for EM.
    W_t : numpy.ndarray, shape (p, q)
        The target's loadings. W_t, psi, mu, Sigma, tau, beta, kappa are EM's MAP /
        empirical-Bayes point, and SVI's posterior means (EM's values for the sites its model
        does not sample).
    psi : numpy.ndarray, shape (p,)
        The target's noise variances.
    mu : numpy.ndarray, shape (K, q)
        The domains' factor means.
    Sigma : numpy.ndarray, shape (K, q, q)
        The domains' factor covariances.
    tau : float
        The transfer scale of the loadings (inf without transfer).
    beta : float
        The Potts smoothness (SVI: nan when the model has no beta).
    kappa : float or None
        Anchored fits: the standard deviation of the domain means around their source classes;
        None for free domains.
    domain_names : list of str
        Source class names and "novel 1", ...; empty when the domains are "0", "1", ....
    posterior : dict or None
        SVI: draws of each global site, name -> (S, ...), in the sites' shapes
        (`models.sites.from_sites`); None for EM.
    W_s : numpy.ndarray or None, shape (p, q)
        The source's loadings (None without a source).
    psi_s : numpy.ndarray or None, shape (p,)
        The source's noise variances.
    mu_s : numpy.ndarray or None, shape (C, q)
        The source classes' factor means.
    Sigma_s : numpy.ndarray or None, shape (C, q, q)
        The source classes' factor covariances.
    source_classes : list of str
        The source's class names.
    genes : list of str
        The genes fitted (p).
    obs_names : list of str
        The spots fitted (n).
    gene_mean : numpy.ndarray or None, shape (p,)
        Per-gene mean removed by the standardisation.
    gene_scale : numpy.ndarray or None, shape (p,)
        Per-gene scale divided out by the standardisation.
    trace : numpy.ndarray
        EM: the objective per iteration of the chosen fit's final run (its beta, tau and kappa
        per iteration in `info["trace"]`); SVI: minus the mean loss per round.
    k_table : list of dict
        One row per K tried: log-likelihood, criteria, beta, kappa, iterations, convergence,
        chosen (SVI: also WAIC, PSIS-LOO, ELBO).
    settings : dict
        What was asked and used (JSON-able), with the package version.
    info : dict
        Calibration (temperature, how it was found), warnings, classes found, seconds per
        stage, iteration counts.

    Attributes
    ----------
    n_domains : int
        K, the number of domains (columns of `proba`).
    names : list of str
        The name of each domain.
    named_labels : numpy.ndarray of str, shape (n,)
        `labels` as domain names.
    maxprob : numpy.ndarray, shape (n,)
        The most probable domain's probability per spot.
    entropy : numpy.ndarray, shape (n,)
        The entropy of each spot's domain probabilities.

    See Also
    --------
    fit_em, fit_svi : The fits that return a result.
    load_result : Read a saved result.

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
    >>> res.proba.shape
    (400, 4)
    >>> res.W_t.shape
    (200, 10)
    >>> res.to_anndata(target)
    >>> path = res.save("fit.npz")
    >>> again = tb.load_result(path)
    """

    labels: np.ndarray
    proba: np.ndarray
    factors: np.ndarray
    W_t: np.ndarray
    psi: np.ndarray
    mu: np.ndarray
    Sigma: np.ndarray
    tau: float
    beta: float
    spot_loglik: np.ndarray | None = None
    kappa: float | None = None
    domain_names: list | tuple = ()
    posterior: dict | None = None
    W_s: np.ndarray | None = None
    psi_s: np.ndarray | None = None
    mu_s: np.ndarray | None = None
    Sigma_s: np.ndarray | None = None
    source_classes: list | tuple = ()
    genes: list = field(default_factory=list)
    obs_names: list = field(default_factory=list)
    gene_mean: np.ndarray | None = None
    gene_scale: np.ndarray | None = None
    trace: np.ndarray = field(default_factory=lambda: np.zeros(0))
    k_table: list = field(default_factory=list)
    settings: dict = field(default_factory=dict)
    info: dict = field(default_factory=dict)

    def replace(self, **changes) -> "TransSTResult":
        """A copy with the given fields changed.

        Parameters
        ----------
        **changes
            New values by field name (`labels`, `proba`, `W_t`, `info`, ...).

        Returns
        -------
        TransSTResult
            A new result; `self` is not changed.

        Raises
        ------
        TypeError
            An unknown field name.

        Examples
        --------
        >>> import transst_bayes as tb
        >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
        >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
        >>> noted = res.replace(info=dict(res.info, note='copy'))
        """
        unknown = sorted(set(changes) - {f.name for f in fields(self)})
        if unknown:
            raise TypeError(f"TransSTResult has no fields {unknown}")
        return dataclasses.replace(self, **changes)

    @property
    def n_domains(self) -> int:
        """K, the number of domains (columns of `proba`)."""
        return int(self.proba.shape[1])

    @property
    def names(self) -> list:
        """The name of each domain (column of `proba`): `domain_names`, else "0", "1", ...."""
        return list(self.domain_names) if self.domain_names else [str(k) for k in range(self.n_domains)]

    @property
    def named_labels(self) -> np.ndarray:
        """`labels` as domain names, shape (n,)."""
        return np.asarray(self.names, dtype=object)[self.labels]

    @property
    def maxprob(self) -> np.ndarray:
        """The most probable domain's probability per spot, shape (n,)."""
        return self.proba.max(axis=1)

    @property
    def entropy(self) -> np.ndarray:
        """The entropy (nats) of each spot's domain probabilities, shape (n,)."""
        return entropy(self.proba)

    def domain_sets(self, alpha: float = 0.1) -> np.ndarray:
        """Each spot's set of domains that should hold its true domain with probability 1 - alpha.

        Split conformal prediction on the held-out source fits of the calibration
        (`transst_bayes.conformal`); every set holds the spot's domain (`labels`) and its most
        probable one. The coverage holds when the held-out source spots and the target's are
        exchangeable; on real sections it is measured in `benchmarks/calibration.py`.

        Parameters
        ----------
        alpha : float, default 0.1
            Miscoverage, one of 0.01, 0.02, ..., 0.50.

        Returns
        -------
        numpy.ndarray
            Shape (n, K), boolean, columns in `names` order.

        Raises
        ------
        ValueError
            The fit made no held-out fits (calibrate="none" or a number, no labeled source, or a
            source without coordinates), or alpha is not one of the stored levels.

        Examples
        --------
        >>> import transst_bayes as tb
        >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200, source_sections=2)
        >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
        >>> sets = res.domain_sets(0.1)
        >>> sets.shape
        (400, 4)
        """
        from .conformal import domain_sets

        conf = (self.info or {}).get("conformal")
        if not conf:
            raise ValueError("this fit has no conformal thresholds: they come from the held-out source fits of "
                             "calibrate='auto' (the default) with a labeled source that has coordinates")
        return domain_sets(self.proba, conf, alpha, self.labels)

    def k_table_frame(self):
        """The K table as a pandas DataFrame.

        Returns
        -------
        pandas.DataFrame
            One row per K tried: K, log-likelihood, the criteria (sbic, bic, mbic, hbic, icl;
            SVI: also WAIC, PSIS-LOO and the ELBO), beta, kappa, iterations, convergence and
            `chosen`.

        Examples
        --------
        >>> import transst_bayes as tb
        >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
        >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
        >>> table = res.k_table_frame()
        >>> table.loc[table['chosen'], 'K'].tolist()
        [4]
        """
        import pandas as pd

        return pd.DataFrame(self.k_table)

    # ---------------------------------------------------------------- AnnData
    def to_anndata(self, adata, key_added: str = keys.DEFAULT, copy: bool = False):
        """Write the fit into `adata` (scanpy style), matched by `obs_names`.

        Parameters
        ----------
        adata : AnnData
            The AnnData that was fitted (the same spots in the same order).
        key_added : str, default "transst"
            Name of the fit: the prefix of every key written.
        copy : bool, default False
            Return a changed copy instead of writing into `adata`.

        Returns
        -------
        AnnData or None
            None, or the changed copy with `copy=True`. Written (`key` = `key_added`):

            - `obs[key]`: the domain of each spot (categorical, named after the domains);
            - `obs[f"{key}_maxprob"]`: the most probable domain's probability;
            - `obs[f"{key}_entropy"]`: the entropy of the spot's domain probabilities;
            - `obsm[f"{key}_proba"]`: (n, K) domain probabilities;
            - `obsm[f"X_{key}"]`: (n, q) latent factor scores;
            - `varm[f"{key}_loadings"]`: (genes, q) target loadings, NaN rows for genes the
              fit did not use;
            - `uns[key]`: settings (JSON), beta, tau, kappa (NaN for free domains),
              temperature, calibration, domain_names, n_domains, k_table (JSON), genes,
              version, seed, and the arrays (`fit`) and metadata (`meta`) that
              `from_anndata` rebuilds the result from;
            - `uns[f"{key}_colors"]`: one colour per domain.

        Raises
        ------
        ValueError
            The spots of `adata` differ from the fitted ones.
        TypeError
            `adata` is not an AnnData, `key_added` is not a non-empty str, or `copy` is not a
            bool.

        See Also
        --------
        from_anndata : Rebuild the result from what this writes.
        transst_bayes.tl.transst : Fit and write in one call.

        Examples
        --------
        >>> import transst_bayes as tb
        >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
        >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
        >>> res.to_anndata(target, key_added="transst")
        >>> target.obs["transst"].dtype.name
        'category'
        """
        import pandas as pd

        V.anndata("adata", adata)
        V.key("key_added", key_added)
        V.flag("copy", copy)
        if copy:
            adata = adata.copy()
        names = list(map(str, adata.obs_names))
        if len(names) != len(self.obs_names) or names != list(self.obs_names):
            raise ValueError(
                f"adata has {adata.n_obs} spots that do not match the {len(self.obs_names)} spots "
                "of the fit (obs_names differ); pass the AnnData that was fitted"
            )
        K = self.n_domains
        adata.obs[key_added] = pd.Categorical.from_codes(self.labels, categories=self.names)
        adata.obs[keys.maxprob(key_added)] = self.maxprob
        adata.obs[keys.entropy(key_added)] = self.entropy
        adata.obsm[keys.proba(key_added)] = self.proba
        adata.obsm[keys.factors(key_added)] = self.factors
        load = np.full((adata.n_vars, self.W_t.shape[1]), np.nan)
        pos = {g: i for i, g in enumerate(map(str, adata.var_names))}
        rows = [pos[g] for g in self.genes if g in pos]
        if len(rows) == len(self.genes):
            load[rows] = self.W_t
        adata.varm[keys.loadings(key_added)] = load
        arrays, meta = self._payload()
        adata.uns[key_added] = _uns_entry(arrays, meta, self.names)
        adata.uns[keys.colors(key_added)] = [PALETTE[k % len(PALETTE)] for k in range(K)]
        return adata if copy else None

    def _payload(self) -> tuple[dict, dict]:
        """(arrays, JSON-able metadata): everything a file or AnnData needs to rebuild the fit."""
        arrays = {k: np.asarray(getattr(self, k)) for k in _ARRAYS if getattr(self, k) is not None}
        if self.spot_loglik is not None:
            arrays["spot_loglik"] = np.asarray(self.spot_loglik)
        for k, v in (self.posterior or {}).items():
            arrays[f"posterior__{k}"] = np.asarray(v)
        meta = {
            "tau": float(self.tau), "beta": float(self.beta), "k_table": self.k_table,
            "settings": self.settings, "genes": list(self.genes),
            "obs_names": list(self.obs_names), "source_classes": list(self.source_classes),
            "info": self.info, "domain_names": list(self.domain_names), "kappa": self.kappa,
        }
        return arrays, meta

    @classmethod
    def _from_payload(cls, arrays: dict, meta: dict) -> "TransSTResult":
        kw: dict[str, Any] = {k: arrays.get(k) for k in _ARRAYS}
        kw["spot_loglik"] = arrays.get("spot_loglik")
        post = {k.split("__", 1)[1]: v for k, v in arrays.items() if k.startswith("posterior__")}
        kw["posterior"] = post or None
        kw.update(meta)
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in kw.items() if k in names})

    @classmethod
    def from_anndata(cls, adata, key: str = keys.DEFAULT) -> "TransSTResult":
        """Rebuild the result that `to_anndata(adata, key_added=key)` wrote.

        Per-spot arrays come from `obs` / `obsm`, the rest from `uns[key]`; this works on a
        re-read `.h5ad` file too.

        Parameters
        ----------
        adata : AnnData
            The AnnData the fit was written into (its spots unchanged).
        key : str, default "transst"
            Name of the fit (`key_added` of `to_anndata` or `tl.transst`).

        Returns
        -------
        TransSTResult
            The result as written.

        Raises
        ------
        ValueError
            `uns[key]` holds no TransST fit, or the spots were subset or reordered after the
            fit.

        See Also
        --------
        to_anndata

        Examples
        --------
        >>> import transst_bayes as tb
        >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
        >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
        >>> res.to_anndata(target)
        >>> again = tb.TransSTResult.from_anndata(target)
        """
        uns = adata.uns.get(key)
        if not isinstance(uns, Mapping) or "fit" not in uns or "meta" not in uns:
            raise ValueError(
                f"adata.uns[{key!r}] holds no TransST fit; run transst_bayes.tl.transst(adata, ...) "
                f"(or TransSTResult.to_anndata(adata, key_added={key!r})) first"
            )
        meta = _meta_from_uns(uns)
        names = list(map(str, adata.obs_names))
        if names != list(meta["obs_names"]):
            raise ValueError(
                f"adata's spots differ from the {len(meta['obs_names'])} spots fitted under "
                f"key {key!r} (subset or reordered after the fit); use the fitted AnnData"
            )
        arrays = {k: np.asarray(v) for k, v in uns["fit"].items()}
        arrays["proba"] = np.asarray(adata.obsm[keys.proba(key)])
        arrays["factors"] = np.asarray(adata.obsm[keys.factors(key)])
        col = adata.obs[key]
        names = meta.get("domain_names") or [str(k) for k in range(arrays["proba"].shape[1])]
        pos = {str(c): i for i, c in enumerate(names)}
        arrays["labels"] = np.asarray([pos[str(v)] for v in col], dtype=np.int64)
        return cls._from_payload(arrays, meta)

    # ---------------------------------------------------------------- files
    def save(self, path) -> str:
        """Save to a .npz file: the arrays and JSON metadata with a format version, no pickle.

        Parameters
        ----------
        path : str or os.PathLike
            File name; ".npz" is appended when missing, as `load_result` expects.

        Returns
        -------
        str
            The path written.

        Raises
        ------
        TypeError
            `path` is not a str or os.PathLike.

        See Also
        --------
        load_result, load

        Examples
        --------
        >>> import transst_bayes as tb
        >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
        >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
        >>> res.save("fit")
        'fit.npz'
        """
        path = _npz_path(path)
        arrays, meta = self._payload()
        meta["format"] = FILE_FORMAT
        # written beside `path` and renamed onto it when complete: a failed write (disk full)
        # leaves the previous file readable (files.py)
        with replacing(path) as tmp:
            np.savez_compressed(tmp, __meta__=np.asarray(json.dumps(meta, default=_jsonable)), **arrays)
        return path

    @classmethod
    def load(cls, path) -> "TransSTResult":
        """Read a file written by `save`; pickled content is never loaded.

        Parameters
        ----------
        path : str or os.PathLike
            The file (with or without ".npz").

        Returns
        -------
        TransSTResult
            The saved result.

        Raises
        ------
        FileNotFoundError
            There is no such file.
        ValueError
            The file is not a result of this package, is truncated, or has a newer format.
        TypeError
            `path` is not a str or os.PathLike.

        See Also
        --------
        save, load_result

        Examples
        --------
        >>> import transst_bayes as tb
        >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
        >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
        >>> path = res.save("fit.npz")
        >>> again = tb.TransSTResult.load(path)
        """
        path = _npz_path(path)
        if not os.path.exists(path):
            raise FileNotFoundError(f"no result file {path!r}")
        bad = f"{path!r} is not a TransST result file written by TransSTResult.save"
        try:
            with open(path, "rb") as fh, np.load(fh, allow_pickle=False) as f:
                if "__meta__" not in f.files:
                    raise ValueError(f"{bad} (it has no __meta__ entry)")
                meta = json.loads(str(f["__meta__"]))
                arrays = {k: f[k] for k in f.files if k != "__meta__"}
        except ValueError as e:
            if str(e).startswith(bad):
                raise
            raise ValueError(f"{bad} ({type(e).__name__}: {str(e)[:80]})") from None
        except (OSError, EOFError, zipfile.BadZipFile, KeyError) as e:
            raise ValueError(f"{bad}, or it is truncated ({type(e).__name__})") from None
        if not isinstance(meta, dict):
            raise ValueError(f"{bad} (its metadata is not a JSON object)")
        fmt = meta.pop("format", 1)
        if not isinstance(fmt, int) or fmt > FILE_FORMAT:
            raise ValueError(f"{path!r} has file format {fmt!r}, newer than this version of "
                             f"transst_bayes reads ({FILE_FORMAT}); upgrade transst_bayes")
        missing = [k for k in ("labels", "proba") if k not in arrays] + \
                  [k for k in ("tau", "beta", "settings", "genes", "obs_names") if k not in meta]
        if missing:
            raise ValueError(f"{bad} (missing {missing})")
        try:
            return cls._from_payload(arrays, meta)
        except TypeError as e:
            raise ValueError(f"{bad} ({e})") from None




# uns[key] holds every value once: the readable entries at its top level (settings without seed
# and version, which have their own entries; temperature and calibration out of info), the
# arrays under "fit", and under "meta" (JSON) only what has no entry of its own.
_TOP = ("beta", "tau", "kappa", "k_table", "genes", "domain_names", "settings")
_OWN_SETTINGS = ("seed", "version")
_OWN_INFO = ("temperature", "calibration")


def _uns_entry(arrays: dict, meta: dict, names: list) -> dict:
    """The `uns[key]` mapping of a fit from its payload (`TransSTResult._payload`)."""
    meta = dict(meta)
    top = {k: meta.pop(k) for k in _TOP}
    settings = dict(top["settings"])
    own = {k: settings.pop(k, d) for k, d in zip(_OWN_SETTINGS, (0, ""))}
    info = dict(meta.pop("info") or {})
    T, how = info.pop("temperature", 1.0), info.pop("calibration", "")
    meta["info"] = info
    return {
        "settings": json.dumps(settings, default=_jsonable),
        "beta": float(top["beta"]),
        "tau": float(top["tau"]),
        "kappa": float("nan") if top["kappa"] is None else float(top["kappa"]),
        "temperature": float(T),  # of proba (calibration)
        "calibration": str(how),
        "domain_names": np.asarray(names, dtype=str),
        "n_domains": len(names),
        "k_table": json.dumps(top["k_table"], default=_jsonable),
        "genes": np.asarray(top["genes"], dtype=str),
        "version": str(own["version"]),
        "seed": int(own["seed"]),
        "fit": {k: v for k, v in arrays.items() if k not in ("labels", "proba", "factors")},
        "meta": json.dumps(meta, default=_jsonable),
    }


def _meta_from_uns(uns) -> dict:
    """The payload metadata that `_uns_entry` spread over `uns[key]`, gathered again."""
    meta = json.loads(str(uns["meta"]))
    settings = json.loads(str(uns["settings"]))
    settings.update({k: (int(uns[k]) if k == "seed" else str(uns[k])) for k in _OWN_SETTINGS if k in uns})
    kappa = float(uns["kappa"])
    meta.update(settings=settings, beta=float(uns["beta"]), tau=float(uns["tau"]),
                kappa=None if np.isnan(kappa) else kappa, k_table=json.loads(str(uns["k_table"])),
                genes=[str(g) for g in np.asarray(uns["genes"])],
                domain_names=[str(g) for g in np.asarray(uns["domain_names"])])
    meta["info"] = dict(meta.get("info") or {}, temperature=float(uns["temperature"]),
                        calibration=str(uns["calibration"]))
    return meta


def _jsonable(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    return str(o)


def _npz_path(path) -> str:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or os.PathLike (a file name), got {path!r} "
                        f"({type(path).__name__})")
    path = os.fspath(path)
    return path if path.endswith(".npz") else path + ".npz"


def load_result(path) -> TransSTResult:
    """Read a result saved by `TransSTResult.save` (the same as `TransSTResult.load`).

    Parameters
    ----------
    path : str or os.PathLike
        The file (with or without ".npz").

    Returns
    -------
    TransSTResult
        The saved result.

    Raises
    ------
    FileNotFoundError
        There is no such file.
    ValueError
        The file is not a TransST result file, is truncated, or has a newer format.
    TypeError
        `path` is not a str or os.PathLike.

    See Also
    --------
    TransSTResult.save

    Examples
    --------
    >>> import transst_bayes as tb
    >>> source, target = tb.simulate(seed=0, height=20, width=20, n_genes=200)
    >>> res = tb.fit_em(target, source, n_domains=4, n_factors=10)
    >>> path = res.save("fit.npz")
    >>> res = tb.load_result(path)
    """
    return TransSTResult.load(path)
