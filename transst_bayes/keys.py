"""The AnnData keys of a fit, spelled once: what `TransSTResult.to_anndata` writes and `tl`, `pl`
and the CLI read. `key` is the fit's name (`key_added` of `tl.transst` / `to_anndata`)."""

from __future__ import annotations

DEFAULT = "transst"


def maxprob(key: str) -> str:
    """obs: the most probable domain's probability per spot."""
    return f"{key}_maxprob"


def entropy(key: str) -> str:
    """obs: the entropy of each spot's domain probabilities."""
    return f"{key}_entropy"


def proba(key: str) -> str:
    """obsm: (n, K) domain probabilities."""
    return f"{key}_proba"


def factors(key: str) -> str:
    """obsm: (n, q) latent factor scores (scanpy's X_ prefix for embeddings)."""
    return f"X_{key}"


def loadings(key: str) -> str:
    """varm: (genes, q) target loadings (NaN rows for genes the fit did not use)."""
    return f"{key}_loadings"


def colors(key: str) -> str:
    """uns: one colour per domain (scanpy's convention)."""
    return f"{key}_colors"


def markers(key: str) -> str:
    """uns: the marker-gene table of `tl.markers`."""
    return f"{key}_markers"


def transfer_breaking(key: str) -> str:
    """uns (table) and var (score): genes whose loadings break from the source."""
    return f"{key}_transfer_breaking"
