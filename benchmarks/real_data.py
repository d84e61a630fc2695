"""Loaders for the real data sets used by the benchmarks (plain Python, no JAX).

The data live outside the repository (see ``shared/data/README.md``). Their folder is taken from
the environment variable ``TRANSST_DATA`` and otherwise from ``<repo root>/../shared/data``.
Nothing is cached on disk; every call reads the files again.

Data sets:

* HER2ST (Andersson et al. 2021): eight Spatial Transcriptomics sections with pathologist labels,
  see :func:`load_her2st_section` and :func:`her2st_protocol`.
* Mouse-embryo seqFISH (Lohoff et al. 2022, subsample from iSC.MEB), see :func:`load_seqfish` and
  :func:`seqfish_protocol`.
* Wu et al. 2021 breast-cancer scRNA-seq, tumour CID4465, see :func:`load_wu2021`.
* DLPFC Visium (Maynard et al. 2021), two adjacent sections of one donor, see
  :func:`dlpfc_protocol`.
"""

from __future__ import annotations

import gzip
import os
import warnings
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import scipy.sparse as sp

ENV_VAR = "TRANSST_DATA"

_HER2ST_SECTIONS = ["A1", "B1", "C1", "D1", "E1", "F1", "G2", "H1"]
_SEQFISH_SECTIONS = [
    "embryo1_z2",
    "embryo1_z5",
    "embryo2_z2",
    "embryo2_z5",
    "embryo3_z2",
    "embryo3_z5",
]
_SEQFISH_FILE = Path("seqfish_embryo") / "seqfish_embryo_6sections.h5ad"
_WU2021_FILE = Path("wu2021_scrna") / "wu2021_CID4465.h5ad"


def data_dir() -> Path:
    """Return the folder holding the real data sets.

    Uses ``$TRANSST_DATA`` when set, else ``<repo root>/../shared/data`` where the repo root is the
    parent of the ``benchmarks`` folder. Raises FileNotFoundError when the folder does not exist.
    """
    env = os.environ.get(ENV_VAR)
    if env:
        path = Path(env).expanduser()
    else:
        path = Path(__file__).resolve().parent.parent.parent / "shared" / "data"
    if not path.is_dir():
        raise FileNotFoundError(
            f"Real-data folder not found: {path}. Set the environment variable {ENV_VAR} "
            "to the folder holding her2st/, seqfish_embryo/ and wu2021_scrna/."
        )
    return path


# --------------------------------------------------------------------------------------------
# HER2ST
# --------------------------------------------------------------------------------------------


def her2st_sections() -> list[str]:
    """The eight annotated HER2ST sections, one per patient A-H."""
    return list(_HER2ST_SECTIONS)


def _read_counts(path: Path) -> tuple[list[str], list[str], sp.csr_matrix]:
    """Read a spots x genes count table; return (spot ids, gene symbols, float32 CSR matrix)."""
    with gzip.open(path, "rt") as fh:
        header = fh.readline().rstrip("\n").split("\t")
    genes = header[1:]  # first header cell is empty (the spot-id column)
    df = pd.read_csv(path, sep="\t", header=None, skiprows=1, index_col=0)
    if df.shape[1] != len(genes):
        raise ValueError(f"{path}: {df.shape[1]} count columns but {len(genes)} gene names")
    X = sp.csr_matrix(df.to_numpy(dtype=np.float32))
    return [str(s) for s in df.index], genes, X


def load_her2st_section(section: str) -> ad.AnnData:
    """Load one HER2ST section with its pathologist labels.

    Only spots with a label row (and non-NA coordinates) are kept. Returns an AnnData with raw
    counts (float32 CSR) in ``X``; obs ``label`` (categorical), ``section``, ``array_col`` (x of
    the spot id), ``array_row`` (y); ``obsm["spatial"]`` = (x, y) from the coordinates file;
    obs_names ``"<section>_<x>x<y>"``; var_names = gene symbols made unique.
    """
    if section not in _HER2ST_SECTIONS:
        raise ValueError(f"unknown HER2ST section {section!r}; expected one of {_HER2ST_SECTIONS}")
    folder = data_dir() / "her2st"
    spots, genes, X = _read_counts(folder / f"{section}_counts.tsv.gz")

    coords = pd.read_csv(folder / f"{section}_labeled_coordinates.tsv", sep="\t")
    coords = coords[coords["x"].notna() & coords["y"].notna()].reset_index(drop=True)
    keys = [f"{round(x)}x{round(y)}" for x, y in zip(coords["x"], coords["y"])]
    coords["spot"] = keys
    if coords["spot"].duplicated().any():
        n_dup = int(coords["spot"].duplicated().sum())
        warnings.warn(f"HER2ST {section}: {n_dup} labeled rows map to an already used spot; "
                      "keeping the first", stacklevel=2)
        coords = coords[~coords["spot"].duplicated()].reset_index(drop=True)

    spot_pos = pd.Series(np.arange(len(spots)), index=pd.Index(spots))
    matched = coords["spot"].isin(spot_pos.index).to_numpy()
    if matched.mean() < 0.9:
        warnings.warn(f"HER2ST {section}: only {matched.sum()} of {len(coords)} labeled rows "
                      "match a spot in the counts", stacklevel=2)
    coords = coords[matched].reset_index(drop=True)
    rows = spot_pos.loc[coords["spot"]].to_numpy()

    array_xy = coords["spot"].str.split("x", expand=True).astype(int)
    obs = pd.DataFrame(
        {
            "label": pd.Categorical(coords["label"].astype(str)),
            "section": section,
            "array_col": array_xy[0].to_numpy(),
            "array_row": array_xy[1].to_numpy(),
        },
        index=pd.Index([f"{section}_{s}" for s in coords["spot"]]),
    )
    adata = ad.AnnData(
        X=X[rows],
        obs=obs,
        var=pd.DataFrame(index=pd.Index(genes)),
        obsm={"spatial": coords[["x", "y"]].to_numpy(dtype=np.float64)},
    )
    if not adata.var_names.is_unique:
        adata.var_names_make_unique()
    return adata


def her2st_protocol(
    target: str, drop_undetermined: bool = True
) -> tuple[ad.AnnData, ad.AnnData, int]:
    """Leave-one-section-out HER2ST protocol of the TransST paper.

    target = the given section; source = the other seven sections concatenated (obs ``section``
    kept). Genes = intersection over all eight sections, in the same order in both. ``undetermined``
    spots are dropped from both (when ``drop_undetermined``), and ``immune infiltrate`` from the
    target when it is A1 or C1. Returns (target, source, K) with K = number of distinct labels
    remaining in the target. Gene selection and normalisation are left to the caller.
    """
    sections = {s: load_her2st_section(s) for s in _HER2ST_SECTIONS}
    common = set.intersection(*(set(a.var_names) for a in sections.values()))
    genes = [g for g in sections[target].var_names if g in common]

    def _clean(a: ad.AnnData, drop: list[str]) -> ad.AnnData:
        a = a[~a.obs["label"].isin(drop).to_numpy(), genes].copy()
        a.obs["label"] = a.obs["label"].astype(str).astype("category")
        return a

    drop = ["undetermined"] if drop_undetermined else []
    target_drop = drop + (["immune infiltrate"] if target in ("A1", "C1") else [])
    tgt = _clean(sections[target], target_drop)
    src = ad.concat(
        [sections[s][:, genes] for s in _HER2ST_SECTIONS if s != target], join="inner",
        merge="same",
    )
    src = _clean(src, drop)
    K = int(tgt.obs["label"].nunique())
    return tgt, src, K


# --------------------------------------------------------------------------------------------
# seqFISH mouse embryo
# --------------------------------------------------------------------------------------------


def seqfish_sections() -> list[str]:
    """The six seqFISH sections, ``embryo{1,2,3}_z{2,5}``."""
    return list(_SEQFISH_SECTIONS)


def load_seqfish(path: str | os.PathLike | None = None) -> ad.AnnData:
    """Load the seqFISH mouse-embryo subsample (raw counts in X; obs celltype/embryo/section)."""
    return ad.read_h5ad(Path(path) if path is not None else data_dir() / _SEQFISH_FILE)


def seqfish_protocol(target_section: str) -> tuple[ad.AnnData, ad.AnnData, int]:
    """seqFISH transfer protocol: target = one section, source = all cells of the other embryos.

    Returns (target, source, K) with K = number of distinct cell types in the target.
    """
    adata = load_seqfish()
    in_target = (adata.obs["section"] == target_section).to_numpy()
    if not in_target.any():
        raise ValueError(f"unknown seqFISH section {target_section!r}; expected one of "
                         f"{sorted(adata.obs['section'].unique())}")
    embryo = adata.obs["embryo"][in_target].iloc[0]
    in_source = (adata.obs["embryo"] != embryo).to_numpy()
    tgt = adata[in_target].copy()
    src = adata[in_source].copy()
    for a in (tgt, src):
        a.obs["celltype"] = a.obs["celltype"].astype(str).astype("category")
    K = int(tgt.obs["celltype"].nunique())
    return tgt, src, K


# --------------------------------------------------------------------------------------------
# Wu et al. 2021 single-cell reference
# --------------------------------------------------------------------------------------------


def load_wu2021() -> ad.AnnData:
    """Load the Wu et al. 2021 scRNA-seq tumour CID4465 (raw counts; obs celltype_major etc.)."""
    return ad.read_h5ad(data_dir() / _WU2021_FILE)


# --------------------------------------------------------------------------------------------
# DLPFC Visium
# --------------------------------------------------------------------------------------------

_DLPFC_SECTIONS = ["151675", "151676"]


def dlpfc_sections() -> list[str]:
    """The two DLPFC sections (donor 3), each the target of one transfer from the other."""
    return list(_DLPFC_SECTIONS)


def dlpfc_protocol(target_section: str) -> tuple[ad.AnnData, ad.AnnData, int]:
    """DLPFC transfer: target = one section, source = the other with its layers (obs ``layer``;
    its unannotated spots dropped), genes = the shared genes in the target's order, K = 7.
    The target keeps its unannotated spots (NaN ``layer``): score only the annotated ones."""
    if target_section not in _DLPFC_SECTIONS:
        raise ValueError(f"unknown DLPFC section {target_section!r}; expected one of {_DLPFC_SECTIONS}")
    folder = data_dir() / "dlpfc_visium"
    other = next(s for s in _DLPFC_SECTIONS if s != target_section)
    tgt = ad.read_h5ad(folder / f"dlpfc_{target_section}.h5ad")
    src = ad.read_h5ad(folder / f"dlpfc_{other}.h5ad")
    genes = [g for g in tgt.var_names if g in set(src.var_names)]
    tgt = tgt[:, genes].copy()
    src = src[src.obs["layer"].notna().to_numpy(), genes].copy()
    src.obs["layer"] = src.obs["layer"].astype(str).astype("category")
    return tgt, src, 7


def transfer_protocol(data: str, section: str) -> tuple:
    """(target, source, K, label_key, data options) of the real-data transfer protocols:
    HER2ST leave one section out, seqFISH one section against the other embryos (all genes), or
    DLPFC one section from the other."""
    if data == "her2st":
        target, source, K = her2st_protocol(section)
        return target, source, K, "label", {}
    if data == "dlpfc":
        target, source, K = dlpfc_protocol(section)
        return target, source, K, "layer", {}
    target, source, K = seqfish_protocol(section)
    return target, source, K, "celltype", dict(n_genes=target.n_vars)
