"""The data boundary of the fits: AnnData in, arrays out.

The fits read AnnData only through this module (`prepare`); the scanpy-style layer (`tl`, `pp`,
`pl`, the CLI) and `TransSTResult.to_anndata` / `from_anndata` write and read the keys of
`keys.py`. `prepare` turns a target AnnData (and optionally a labeled source AnnData) into dense float arrays on a
shared, selected, standardised gene set plus the target's spatial graph, with every check on the
input done here so the numerical core never sees a bad value.
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from typing import NamedTuple, Sequence

import numpy as np
import scipy.sparse as sp

from . import devprep
from . import validate as V
from .validate import COUNTS_SAMPLE, counts_verdict, non_finite_error
from .graph import build_graph, pad_graph, validate_adjacency
from .mrf import Graph

RANKINGS = ("variance", "cv", "source")  # gene scores: variance / coefficient of variation on the
# target, how well a gene separates the source's classes
HVG = "highly_variable"  # scanpy's sc.pp.highly_variable_genes flag column in var
GENE_SELECTIONS = ("auto", HVG) + RANKINGS
PREPARE_ON = ("auto", "host", "device")
MIN_DETECTED_SHARE = 0.01  # a selected gene is non-zero in at least this share of the spots...
MIN_DETECTED_SPOTS = 10  # ... and in at least this many, in the target and in the source
MAX_Z = 10.0  # standardised values are clipped to +-MAX_Z (scanpy's pp.scale max_value, Seurat's ScaleData)
BLOCK = 16384  # rows per block of the passes over a dense matrix (temporaries stay small)
ALIGN = 64  # byte alignment of the prepared matrix: jax.device_put then shares it on the CPU


@dataclass(frozen=True)
class DataSettings:
    """How expression and space are read (the data options of `fit_em` / `fit_svi`)."""

    layer: str | None = None  # None: X
    source_layer: str | None = None  # None: same as `layer`
    counts: bool | None = None  # None: detect (non-negative integers = raw counts)
    target_sum: float = 1e4
    # "auto": the target's var["highly_variable"] when it has one, else "variance";
    # "highly_variable", "variance", "cv", "source" or an explicit tuple of names
    genes: str | tuple = "auto"
    n_genes: int = 2000
    standardize: str = "pooled"  # "pooled" | "separate" | "none"
    source_batch_key: str | None = None  # "separate": standardise each source batch on its own
    spatial_key: str = "spatial"
    graph: str = "knn"  # knn | visium | st | radius; an obsp graph is used when present
    graph_key: str = "spatial_connectivities"
    n_neighbors: int = 6
    radius: float | None = None
    library_key: str | None = None
    dtype: str = "float32"
    # where the target's expression is prepared: "host" (NumPy / SciPy), "device" (JAX on the
    # fit's device, float32: `devprep`), "auto" (the device when JAX's default backend is an
    # accelerator, the fit runs on one device, dtype is float32 and the matrix fits its memory)
    prepare_on: str = "auto"

    def __post_init__(self) -> None:
        if self.prepare_on not in PREPARE_ON:
            raise ValueError(f"prepare_on must be one of {PREPARE_ON}, got {self.prepare_on!r}")
        if self.prepare_on == "device" and self.dtype != "float32":
            raise ValueError(f"prepare_on='device' prepares in float32, but dtype={self.dtype!r}; pass "
                             "prepare_on='host' (or dtype='float32')")
        V.number("target_sum", self.target_sum, 0.0, strict=True)
        V.integer("n_genes", self.n_genes, 1)
        V.integer("n_neighbors", self.n_neighbors, 1)
        if isinstance(self.genes, str):
            if self.genes not in GENE_SELECTIONS:
                raise ValueError(f"genes must be one of {GENE_SELECTIONS} or a list of gene names, "
                                 f"got {self.genes!r}")
        elif not (hasattr(self.genes, "__iter__") and all(isinstance(g, str) for g in self.genes)):
            raise TypeError(f"genes must be one of {GENE_SELECTIONS} or a list of gene names (str), got "
                            f"{self.genes!r}")
        else:
            from collections import Counter

            twice = sorted(g for g, c in Counter(self.genes).items() if c > 1)
            if twice:
                raise ValueError(f"genes lists {len(twice)} names more than once (e.g. {twice[:3]}); give each "
                                 "gene once (e.g. list(dict.fromkeys(genes)))")
        V.number("radius", self.radius, 0.0, strict=True, none_ok=True)


class Prepared(NamedTuple):
    X: np.ndarray  # (n, p) target, standardised (a jax.Array when prepared on the device)
    X_source: np.ndarray | None  # (n_s, p)
    source_labels: np.ndarray | None  # (n_s,) int codes
    source_classes: list  # names of the source classes
    genes: list  # selected gene names (p,)
    gene_mean: np.ndarray  # (p,) on the log-normalised scale (target side)
    gene_scale: np.ndarray  # (p,)
    adjacency: sp.csr_matrix
    graph: Graph
    obs_names: list
    timings: dict  # seconds: "prepare" (read, normalise, select, standardise), "graph" (adjacency, padding, colouring)


def expression_matrix(adata, layer, what: str):
    """`adata.X` or `adata.layers[layer]` as CSR or a NumPy array (ValueError naming `what` and
    the layer when it is missing or empty)."""
    if layer is None:
        X = adata.X
    else:
        if layer not in adata.layers:
            raise ValueError(
                f"{what}: layer {layer!r} not found; available layers: {list(adata.layers.keys())}"
                " (pass layer=None to use X)"
            )
        X = adata.layers[layer]
    if X is None:
        raise ValueError(f"{what}: the expression matrix is empty (X is None); pass layer=...")
    if sp.issparse(X):
        return sp.csr_matrix(X)
    return np.asarray(X)


def _values(X) -> np.ndarray:
    return X.data if sp.issparse(X) else np.asarray(X).ravel()


def _blocks(X):
    """Row blocks of a dense matrix (views)."""
    for i in range(0, X.shape[0], BLOCK):
        yield X[i:i + BLOCK]


def check_finite(X, what: str) -> None:
    """ValueError naming `what` when X holds NaN or inf, or float64 values beyond float32's range
    (the fit computes in float32: they would become inf); one pass, a slice at a time."""
    v = _values(X)
    step = BLOCK * 256
    big = float(np.finfo(np.float32).max) if v.dtype == np.float64 else None
    bad = far = 0
    for i in range(0, v.size, step):
        part = v[i:i + step]
        ok = np.isfinite(part)
        if not ok.all():
            bad += int(np.size(ok) - np.count_nonzero(ok))
        elif big is not None:
            far += int(np.count_nonzero(np.abs(part) > big))
    if bad:
        raise non_finite_error(bad, what)
    if far:
        raise ValueError(f"{what} has {far} values beyond +-{big:.3g}, the float32 range the fit computes in; "
                         "those are no expression values: check the matrix (or log-transform it first)")


def is_counts(X, what: str, override: bool | None) -> bool:
    """Whether X holds raw counts (non-negative integers); `override` True / False forces the
    answer (True with negative values is a ValueError); integer data with a few negative
    values are a ValueError (a corrupted count matrix)."""
    v = _values(X)
    step = BLOCK * 256  # negatives counted a slice at a time (no boolean copy of the matrix)
    return counts_verdict(float(np.min(v)) if v.size else 0.0, v[:COUNTS_SAMPLE], v.size,
                          lambda: sum(int(np.count_nonzero(v[i:i + step] < 0)) for i in range(0, v.size, step)),
                          what, override)


def log_normalise(X, target_sum: float):
    """Library-size normalisation to `target_sum` then log1p (sparse stays sparse)."""
    lib = np.asarray(X.sum(axis=1, dtype=np.float64)).ravel()  # float16 counts overflow a float16 sum
    scale = np.where(lib > 0, target_sum / np.maximum(lib, 1e-12), 0.0)
    if sp.issparse(X):
        # one float32 copy, scaled and logged in place a block of rows at a time (the product
        # with a diagonal matrix made a float64 matrix and then a float32 copy of it)
        Y = sp.csr_matrix(X, dtype=np.float32, copy=True)
        Y.sum_duplicates()
        for i in range(0, Y.shape[0], BLOCK):
            lo, hi = Y.indptr[i], Y.indptr[min(i + BLOCK, Y.shape[0])]
            rows = np.repeat(scale[i:i + BLOCK], np.diff(Y.indptr[i:i + BLOCK + 1]))
            Y.data[lo:hi] = np.log1p((Y.data[lo:hi] * rows).astype(np.float32))
        return Y
    return np.log1p(np.asarray(X, np.float64) * scale[:, None]).astype(np.float32)


def _mean_var(X):
    if sp.issparse(X):
        m = np.asarray(X.mean(axis=0)).ravel()
        m2 = np.asarray(X.multiply(X).mean(axis=0)).ravel()
        return m, np.maximum(m2 - m * m, 0.0)
    m, sd = _moments([np.asarray(X)])
    return m, sd * sd


def _detected(X) -> np.ndarray:
    """Whether each gene is non-zero in enough spots (MIN_DETECTED_SHARE and MIN_DETECTED_SPOTS).
    A gene seen in a handful of spots is an outlier column after standardisation (a few values
    10-20 sd out): a mixture gives those spots a domain of their own and the factor model a
    Heywood case (psi_g -> 0)."""
    if sp.issparse(X):
        nz = np.asarray(X.getnnz(axis=0)).ravel()
    else:
        nz = sum(np.count_nonzero(b, axis=0) for b in _blocks(np.asarray(X)))
    return enough_spots(nz, X.shape[0])


def enough_spots(nz: np.ndarray, n: int) -> np.ndarray:
    """Whether a gene non-zero in `nz` of `n` spots is detected (`_detected`)."""
    return nz >= max(MIN_DETECTED_SPOTS, MIN_DETECTED_SHARE * n)


def _columns(X, cols):
    """X[:, cols] as a new matrix (np.take for dense input: 4-6x faster than fancy indexing on
    a row-major matrix)."""
    return X[:, cols] if sp.issparse(X) else np.take(np.asarray(X), cols, axis=1)


def _aligned(shape, dtype) -> np.ndarray:
    """An empty C-ordered array whose data start on an ALIGN-byte boundary."""
    dtype = np.dtype(dtype)
    size = int(np.prod(shape)) * dtype.itemsize
    buf = np.empty(size + ALIGN, np.uint8)
    start = (-buf.ctypes.data) % ALIGN
    return buf[start:start + size].view(dtype).reshape(shape)


def _dense(X, cols, dtype) -> np.ndarray:
    """X[:, cols] as a new dense `dtype` matrix, ALIGN-byte aligned, written block by block (a
    sparse matrix is densified one block of rows at a time; all columns: a plain copy)."""
    cols = np.asarray(cols)
    every = cols.size == X.shape[1] and np.array_equal(cols, np.arange(X.shape[1]))
    out = _aligned((X.shape[0], cols.size), dtype)
    if not sp.issparse(X):
        X = np.asarray(X)
    for i in range(0, X.shape[0], BLOCK):
        b = X[i:i + BLOCK]
        if sp.issparse(b):
            b = (b if every else b[:, cols]).toarray()
        elif not every:
            b = np.take(b, cols, axis=1)
        out[i:i + BLOCK] = b
    return out


def _raw_expression(adata, layer, what):
    X = expression_matrix(adata, layer, what)
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ValueError(f"{what} is empty ({X.shape[0]} spots x {X.shape[1]} genes)")
    return X


def _prepare_expression(adata, layer, counts, target_sum, what):
    X = _raw_expression(adata, layer, what)
    check_finite(X, what)
    if is_counts(X, what, counts):
        X = log_normalise(X, target_sum)  # summed in float64: float16 counts do not overflow
    return X


MISSING_LABELS = ("", "nan", "none", "na", "<na>", "null")  # strings that stand for a missing label
CONTINUOUS_VALUES = 20  # more distinct non-integer numbers than this: a measurement, not classes


def _label_strings(lab) -> np.ndarray:
    """Labels as strings, numbers by value: 1, 1.0 and np.int64(1) are one class, "1"."""
    from numbers import Number

    def one(v):
        if isinstance(v, Number) and not isinstance(v, bool) and float(v).is_integer():
            return str(int(v))
        return str(v)

    return np.asarray([one(v) for v in np.asarray(lab, dtype=object)])


def _check_label_values(lab, label_key: str) -> None:
    """Refuse label columns that cannot be classes: missing values (NaN, or strings such as
    "nan" left by `astype(str)`), numbers mixed with strings, a continuous measurement; warn
    when integers and floats mix (they are merged by value)."""
    from numbers import Number

    col = f"source.obs[{label_key!r}]"
    counts = lab.value_counts(dropna=True)  # one pass; the checks below read the distinct values
    missing = int(lab.isna().sum()) + int(sum(
        c for v, c in counts.items() if isinstance(v, str) and v.strip().lower() in MISSING_LABELS))
    if missing:
        raise ValueError(
            f"{col} has {missing} missing labels (NaN, or strings such as 'nan' or ''); drop those "
            f"spots (source[source.obs[{label_key!r}].notna()]) or fill the labels before fitting")
    types = set(map(type, lab.to_numpy())) if lab.dtype == object else {type(v) for v in counts.index}
    kinds = {"str" if issubclass(t, str) else "number" if issubclass(t, Number) and not issubclass(t, (bool, np.bool_))
             else t.__name__ for t in types}
    if len(kinds) > 1:
        raise ValueError(
            f"{col} mixes label types ({sorted(kinds)}); give one type, e.g. "
            f"source.obs[{label_key!r}] = source.obs[{label_key!r}].astype(str)")
    if kinds == {"number"}:
        nums = np.asarray(counts.index, dtype=np.float64)
        if np.count_nonzero(~np.isclose(nums, np.round(nums))) > CONTINUOUS_VALUES:
            raise ValueError(
                f"{col} looks continuous ({nums.size} distinct values, not whole numbers), "
                "not a column of classes; give the column that holds the annotation (label_key=...)")
        if len({issubclass(t, (int, np.integer)) for t in types}) > 1:
            warnings.warn(f"{col} mixes integer and float labels (e.g. 1 and 1.0); they are merged by "
                          "value into one class each", UserWarning, stacklevel=V.user_level())


def _labels(source, label_key: str):
    if label_key not in source.obs.columns:
        raise ValueError(
            f"label_key={label_key!r} is not a column of source.obs; columns are "
            f"{list(source.obs.columns)}"
        )
    lab = source.obs[label_key]
    _check_label_values(lab, label_key)
    classes, codes = np.unique(_label_strings(lab), return_inverse=True)
    if classes.size < 2:
        raise ValueError(
            f"source.obs[{label_key!r}] has a single class ({classes[0]!r}); the source needs at "
            "least two labelled classes (or pass source=None for no transfer)"
        )
    return codes.astype(np.int32), [str(c) for c in classes]


def class_f_statistic(X, labels: np.ndarray) -> np.ndarray:
    """Per gene, the one-way ANOVA F statistic of X's columns across the classes in `labels`
    (between-class over within-class mean square); 0 where a gene has no within-class variance."""
    n = X.shape[0]
    C = int(labels.max()) + 1
    G = sp.csr_matrix((np.ones(n), (np.arange(n), labels)), shape=(n, C))
    Xsq = X.multiply(X) if sp.issparse(X) else np.asarray(X, np.float64) ** 2
    dense = lambda A: np.asarray(A.toarray() if sp.issparse(A) else A, np.float64)  # noqa: E731
    s1 = dense(G.T @ X)
    s2 = dense(G.T @ Xsq)
    nc = np.asarray(G.sum(axis=0)).ravel()[:, None]
    mean = s1.sum(0) / n
    between = np.sum(nc * (s1 / np.maximum(nc, 1) - mean) ** 2, axis=0)
    within = np.sum(s2 - s1**2 / np.maximum(nc, 1), axis=0)
    df_b, df_w = max(C - 1, 1), max(n - C, 1)
    return np.where(within > 0, (between / df_b) / np.maximum(within / df_w, 1e-300), 0.0)


def select_genes(Xt, genes_t: np.ndarray, how, n_genes: int, Xs=None, labels=None) -> np.ndarray:
    """Indices (into the shared genes) chosen on the target ("variance", "cv") or on the labeled
    source ("source": how well a gene separates the source's classes), among genes that vary in
    the target and are detected in enough spots of the target and the source (`_detected`).
    An explicit list is taken as given."""
    stats = gene_stats(Xt) if isinstance(how, str) else None
    return rank_genes(stats, genes_t, how, n_genes, Xs, labels)


def gene_stats(X) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per gene: mean, variance and whether it is detected in enough spots (`_detected`)."""
    return (*_mean_var(X), _detected(X))


def rank_genes(stats, genes_t: np.ndarray, how, n_genes: int, Xs=None, labels=None,
               flagged: np.ndarray | None = None) -> np.ndarray:
    """`select_genes` from the target's `gene_stats` (computed on the host or on a device).
    how="highly_variable": every usable gene of the boolean mask `flagged` (n_genes does not
    apply: the flag already chose the number)."""
    if isinstance(how, str):
        if how not in RANKINGS + (HVG,):
            raise ValueError(f"genes must be one of {GENE_SELECTIONS} or a list of names, got {how!r}")
        m, v, detected = stats
        if how == HVG:
            ok = np.asarray(flagged, dtype=bool) & (v > 0) & detected
            if Xs is not None:
                ok &= _detected(Xs)
            return np.flatnonzero(ok)
        if how == "source":
            if Xs is None:
                raise ValueError("genes='source' ranks genes by the source's classes and needs a "
                                 "labeled source; pass source=... or genes='variance'")
            score = class_f_statistic(Xs, labels)
        elif how == "variance":
            score = v
        else:
            score = np.where(m > 0, np.sqrt(v) / np.maximum(m, 1e-12), -np.inf)
        ok = (v > 0) & detected
        if Xs is not None:
            ok &= _detected(Xs)
        keep = np.flatnonzero(ok)
        order = keep[np.argsort(-score[keep], kind="stable")]
        return np.sort(order[: min(n_genes, order.size)])
    wanted = [str(g) for g in how]
    pos = {g: i for i, g in enumerate(genes_t)}
    missing = [g for g in wanted if g not in pos]
    if missing:
        raise ValueError(
            f"genes: {len(missing)} requested genes are not shared by target and source, e.g. "
            f"{missing[:5]}; pass genes that both data sets measure"
        )
    return np.array(sorted(pos[g] for g in wanted), dtype=np.int64)


def _coords(adata, key: str):
    if key in adata.obsm:
        return V.coordinates(np.asarray(adata.obsm[key], dtype=np.float64), f"obsm[{key!r}]")
    return None


def _moments(blocks: list) -> tuple[np.ndarray, np.ndarray]:
    """Gene means and standard deviations over the rows of several blocks (float64 sums,
    one gene block at a time, no stacked copy)."""
    n = sum(b.shape[0] for b in blocks)
    s1 = sum(b.sum(0, dtype=np.float64) for b in blocks)
    m = s1 / n
    s2 = np.zeros_like(m)
    for b in blocks:
        for i in range(0, b.shape[0], 8192):
            d = b[i:i + 8192] - m.astype(b.dtype)
            s2 += np.einsum("ij,ij->j", d, d, dtype=np.float64)
    return m, np.sqrt(s2 / n)


def _scale(X: np.ndarray, m: np.ndarray, sd: np.ndarray, clip: bool = False) -> np.ndarray:
    """(X - m) / sd in place, block by block; `clip`: then to +-MAX_Z."""
    m, sd = m.astype(X.dtype), sd.astype(X.dtype)
    for b in _blocks(X):
        b -= m
        b /= sd
        if clip:
            np.clip(b, -MAX_Z, MAX_Z, out=b)
    return X


def _pooled(target: tuple, n_t: int, source: tuple, n_s: int) -> tuple[np.ndarray, np.ndarray]:
    """Means and standard deviations of two row blocks together, from each block's own."""
    (m_t, sd_t), (m_s, sd_s) = target, source
    m = (n_t * m_t + n_s * m_s) / (n_t + n_s)
    var = (n_t * (sd_t**2 + (m_t - m) ** 2) + n_s * (sd_s**2 + (m_s - m) ** 2)) / (n_t + n_s)
    return m, np.sqrt(var)


def _scale_target(X, m: np.ndarray, sd: np.ndarray):
    """The target standardised and clipped where it lives (host: in place; device: in JAX)."""
    if isinstance(X, np.ndarray):
        return _scale(X, m, sd, clip=True)
    return devprep.scale(X, m, sd, MAX_Z)


def centred(prep: Prepared) -> Prepared:
    """The target centred on its own gene means, with `gene_mean` moved by the same amount (the
    expression described is unchanged): what a fit without the source needs. Its factor model
    has no intercept, and pooled standardisation leaves the target's means off zero by its
    section's effect; left in, that offset sits in the domain means, which the free fit's
    whitening step (`factor.whiten`) then blows up. Host: in place; device: in JAX."""
    X = prep.X
    if isinstance(X, np.ndarray):
        m = X.mean(axis=0, dtype=np.float64)
        for b in _blocks(X):
            b -= m.astype(X.dtype)
    else:
        m = devprep.moments(X)[0]
        X = devprep.scale(X, m, np.ones_like(m), np.inf)
    return prep._replace(X=X, gene_mean=prep.gene_mean + prep.gene_scale * m)


def own_means_removed(prep: Prepared, s: DataSettings) -> bool:
    """Whether standardisation already centred the target on its own gene means ("separate", or
    "pooled" with no source to pool with), so that `centred` has nothing to do."""
    return s.standardize == "separate" or (s.standardize == "pooled" and prep.X_source is None)


def _empty_spots(X) -> int:
    """Number of spots with no expression at all (a block of rows at a time: no |X| copy)."""
    if sp.issparse(X):
        return sum(int(np.sum(np.asarray(abs(X[i:i + BLOCK]).sum(axis=1)).ravel() == 0))
                   for i in range(0, X.shape[0], BLOCK))
    return sum(int(np.sum(~np.any(b != 0, axis=1))) for b in _blocks(np.asarray(X)))


def _batches(adata, key: str | None) -> np.ndarray:
    if key is None:
        return np.zeros(adata.n_obs, dtype=np.int64)
    if key not in adata.obs:
        raise ValueError(f"source_batch_key={key!r} is not a column of source.obs")
    return np.unique(adata.obs[key].astype(str).to_numpy(), return_inverse=True)[1]


def _standardise_batches(X: np.ndarray, batch: np.ndarray) -> np.ndarray:
    out = np.empty_like(X)
    for b in np.unique(batch):
        rows = batch == b
        m, sd = _moments([X[rows]])
        out[rows] = _scale(X[rows], m, np.where(sd > 0, sd, 1.0))
    return out


def target_graph(adata, s: DataSettings):
    """Adjacency of the target spots: obsp graph if present, else built from space."""
    if s.graph_key in adata.obsp:
        return validate_adjacency(adata.obsp[s.graph_key], adata.n_obs)
    return spatial_graph(adata, s)


def spatial_graph(adata, s: DataSettings, what: str = "target"):
    """Adjacency built from the spots' positions (s.graph: knn / radius / visium / st); `what`
    names the AnnData in error messages."""
    obs = adata.obs
    coords = _coords(adata, s.spatial_key)
    row = obs["array_row"].to_numpy() if "array_row" in obs else None
    col = obs["array_col"].to_numpy() if "array_col" in obs else None
    if s.graph in ("knn", "radius") and coords is None:
        raise ValueError(
            f"{what}.obsm[{s.spatial_key!r}] is missing: spatial coordinates are needed for the "
            "neighbour graph; add them (or pass spatial_key=..., or a graph in "
            f"{what}.obsp[{s.graph_key!r}])"
        )
    libs = None
    if s.library_key is not None:
        if s.library_key not in obs:
            raise ValueError(f"library_key={s.library_key!r} is not a column of target.obs")
        if obs[s.library_key].isna().any():
            raise ValueError(f"target.obs[{s.library_key!r}] (library_key) has "
                             f"{int(obs[s.library_key].isna().sum())} missing values; every spot needs "
                             "its section: fill them or drop those spots")
        libs = obs[s.library_key].astype(str).to_numpy()
    return build_graph(coords=coords, kind=s.graph, k=s.n_neighbors, radius=s.radius,
                       array_row=row, array_col=col, libraries=libs)


def highly_variable(adata, idx: np.ndarray) -> np.ndarray | None:
    """The boolean `var["highly_variable"]` of `adata` at the gene indices `idx` (None when the
    column is absent); a column that is not boolean is a ValueError."""
    if HVG not in adata.var:
        return None
    col = adata.var[HVG]
    if col.dtype != bool and not (col.dtype == object and col.map(lambda x: isinstance(x, (bool, np.bool_))).all()):
        raise ValueError(f"target.var['{HVG}'] must be boolean (True for the genes to fit, as "
                         f"sc.pp.highly_variable_genes writes it), got dtype {col.dtype}; fix the "
                         "column or pass genes='variance' or a list of gene names")
    return np.asarray(col, dtype=bool)[idx]


def gene_choice(how, flagged: np.ndarray | None):
    """genes="auto" -> "highly_variable" when the target flags its genes, else "variance"."""
    if how == "auto":
        return HVG if flagged is not None else "variance"
    if how == HVG and flagged is None:
        raise ValueError(f"genes='{HVG}' needs a boolean target.var['{HVG}'] column (run "
                         "sc.pp.highly_variable_genes first), or pass genes='variance'")
    return how


def warn_if_scaled(stats, how) -> None:
    """Warn when the target looks standardised per gene already (sc.pp.scale): every gene's
    mean ~0 and variance ~1, so no variance ranking can choose genes (the fit standardises
    on its own)."""
    if not isinstance(how, str) or how == HVG or stats is None:
        return
    m, v = np.asarray(stats[0], dtype=float), np.asarray(stats[1], dtype=float)
    live = v > 0
    if live.sum() < 2:
        return
    scaled = (np.abs(m[live]) < 0.05) & (v[live] > 0.8) & (v[live] < 1.2)
    if scaled.mean() > 0.9:
        warnings.warn("the target's expression looks standardised per gene already (every gene's "
                      "mean ~0 and variance ~1, as after sc.pp.scale), so genes cannot be ranked "
                      f"by {how}; pass log-normalised expression (layer=... holding it, or the "
                      "raw counts) and let the fit standardise, or choose the genes with genes=[...]",
                      UserWarning, stacklevel=V.user_level())


def prepare(target, source=None, label_key: str = "label", settings: DataSettings = DataSettings(),
            min_genes: int = 2, on_device: bool = False) -> Prepared:
    """Read, check, normalise, select and standardise; build the target graph. `on_device`:
    the target's expression is prepared in JAX on the default device and stays there
    (`devprep`; `Prepared.X` is then a jax.Array)."""
    t0 = time.perf_counter()
    s = settings
    if on_device:  # (DataSettings: float32 only)
        Xt = _raw_expression(target, s.layer, "target")
        if _values(Xt).dtype == np.float64:  # float32 on the device: values beyond it become inf
            check_finite(Xt, "target")
        Xt, zero = devprep.load(Xt, "target", s.counts, s.target_sum)
    else:
        Xt = _prepare_expression(target, s.layer, s.counts, s.target_sum, "target")
        zero = _empty_spots(Xt)
    if zero:
        warnings.warn(f"{zero} target spots have no expression at all (every gene 0); they are "
                      "assigned by their neighbours alone: consider removing them", UserWarning, stacklevel=V.user_level())
    genes_t = np.asarray(target.var_names.astype(str))
    V.unique_names(genes_t, "target.var_names")
    Xs = labels = None
    classes: list = []
    if source is not None:
        Xs = _prepare_expression(source, s.source_layer if s.source_layer is not None else s.layer,
                                 s.counts, s.target_sum, "source")
        labels, classes = _labels(source, label_key)
        genes_s = np.asarray(source.var_names.astype(str))
        V.unique_names(genes_s, "source.var_names")
        shared = np.intersect1d(genes_t, genes_s)
        if shared.size < min_genes:
            why = ("lower n_factors below the number of shared genes" if shared.size >= 0.5 * genes_t.size else
                   "check that var_names use the same gene identifiers (symbols vs Ensembl ids)")
            raise ValueError(
                f"target and source share {shared.size} genes, need at least {min_genes} "
                f"(n_factors + 1); {why}"
            )
        if shared.size < 0.5 * genes_t.size:
            warnings.warn(f"only {shared.size} of the target's {genes_t.size} genes are measured in the "
                          "source; the fit uses those shared genes only (check that both use the same "
                          "gene identifiers)", UserWarning, stacklevel=V.user_level())
        shared_set = set(shared.tolist())
        idx_t = np.array([i for i, g in enumerate(genes_t) if g in shared_set], dtype=np.int64)
        genes_sh = genes_t[idx_t]
        pos_s = {g: i for i, g in enumerate(genes_s)}
        idx_s = np.array([pos_s[g] for g in genes_sh], dtype=np.int64)
    else:
        idx_t = np.arange(genes_t.size)
        genes_sh = genes_t
        idx_s = None
    flagged = highly_variable(target, idx_t) if s.genes in ("auto", HVG) else None
    how = gene_choice(s.genes, flagged) if isinstance(s.genes, str) else list(s.genes)
    Xs_sh = None if Xs is None else _columns(Xs, idx_s)  # the source in the target's gene order
    if on_device:
        stats = None
        if isinstance(how, str):
            m, v, nz = devprep.gene_stats(Xt, idx_t)
            stats = (m, v, enough_spots(nz, Xt.shape[0]))
    else:
        same = idx_t.size == Xt.shape[1] and np.array_equal(idx_t, np.arange(Xt.shape[1]))
        Xt = Xt if same else _columns(Xt, idx_t)  # no copy when every target gene is shared
        stats = gene_stats(Xt) if isinstance(how, str) else None
    warn_if_scaled(stats, how)
    sel = rank_genes(stats, genes_sh, how, s.n_genes, Xs_sh, labels, flagged)
    if sel.size < min_genes:
        raise ValueError(
            f"only {sel.size} usable genes after selection (need at least {min_genes} = "
            "n_factors + 1; genes must vary in the target and be non-zero in at least "
            f"{MIN_DETECTED_SHARE:.0%} and {MIN_DETECTED_SPOTS} of the spots of target and source); "
            "lower n_factors, keep more genes, or pass genes=[...] to take a list as given"
        )
    dtype = np.dtype(s.dtype)
    Xt_d = devprep.dense(Xt, idx_t[sel]) if on_device else _dense(Xt, sel, dtype)
    Xs_d = _dense(Xs, idx_s[sel], dtype) if Xs is not None else None
    if s.standardize == "pooled" and Xs_d is not None:
        if on_device:  # the target's moments on the device, pooled with the source's
            m, sd = _pooled(devprep.moments(Xt_d), Xt_d.shape[0], _moments([Xs_d]), Xs_d.shape[0])
        else:
            m, sd = _moments([Xt_d, Xs_d])
        sd = np.where(sd > 0, sd, 1.0)
        Xt_d, Xs_d = _scale_target(Xt_d, m, sd), _scale(Xs_d, m, sd, clip=True)
        gene_mean, gene_scale = m, sd
    elif s.standardize in ("pooled", "separate"):
        mean_t, sd_t = devprep.moments(Xt_d) if on_device else _moments([Xt_d])
        sd_t1 = np.where(sd_t > 0, sd_t, 1.0)
        Xt_d = _scale_target(Xt_d, mean_t, sd_t1)
        if Xs_d is not None:
            Xs_d = _standardise_batches(Xs_d, _batches(source, s.source_batch_key))
            np.clip(Xs_d, -MAX_Z, MAX_Z, out=Xs_d)
        gene_mean, gene_scale = mean_t, sd_t1
    elif s.standardize == "none":
        gene_mean, gene_scale = np.zeros(sel.size), np.ones(sel.size)
    else:
        raise ValueError(f"standardize must be 'pooled', 'separate' or 'none', got {s.standardize!r}")
    t1 = time.perf_counter()
    adj = target_graph(target, s)
    with warnings.catch_warnings():
        warnings.simplefilter("always")
        graph = pad_graph(adj)
    timings = {"prepare": t1 - t0, "graph": time.perf_counter() - t1}
    return Prepared(
        X=Xt_d,
        X_source=Xs_d,
        source_labels=labels,
        source_classes=classes,
        genes=[str(g) for g in genes_sh[sel]],
        gene_mean=gene_mean.astype(np.float64),
        gene_scale=gene_scale.astype(np.float64),
        adjacency=adj,
        graph=graph,
        obs_names=list(map(str, target.obs_names)),
        timings=timings,
    )


def as_anndata(X, spatial=None, genes: Sequence[str] | None = None, obs: dict | None = None):
    """Wrap arrays (numpy or scipy.sparse) as AnnData for the functions that take AnnData."""
    import anndata as ad
    import pandas as pd

    if not (sp.issparse(X) or isinstance(X, np.ndarray)):
        raise TypeError(f"expected an AnnData, numpy array or scipy.sparse matrix, got {type(X).__name__}")
    if X.ndim != 2:
        raise ValueError(f"expression must be 2-D (spots x genes), got shape {X.shape}")
    n, p = X.shape
    var = pd.DataFrame(index=[str(g) for g in genes] if genes is not None else [f"g{i}" for i in range(p)])
    a = ad.AnnData(X=X, obs=pd.DataFrame(obs or {}, index=[f"s{i}" for i in range(n)]), var=var)
    if spatial is not None:
        spatial = np.asarray(spatial, dtype=np.float64)
        if spatial.shape[0] != n:
            raise ValueError(f"spatial must have one row per spot ({n}), got {spatial.shape[0]}")
        a.obsm["spatial"] = spatial
    return a
