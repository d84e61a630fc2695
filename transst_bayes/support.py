"""Whether the source can inform the target at all: the share of the target's variance that lies
in the span of the source's loadings, over the share a random q-dimensional subspace of the p
genes would hold (q / p).

Measured on the shared data (q = 15, the source's leading principal directions): related
sections 3.9 (seqFISH, 351 genes) to 7.7 (DLPFC); the same targets with each gene's values
shuffled over the spots (no structure left) 0.9; a target of another tissue (seqFISH mouse
embryo <-> HER2ST breast cancer, on the genes they share) 1.2-1.3. Below `SUPPORT_MIN` the
source's factors capture no more of the target than noise would, and domains named after its
classes mean nothing: the fit warns.
"""

from __future__ import annotations

import warnings

import jax.numpy as jnp
import numpy as np

from .validate import user_level

SUPPORT_MIN = 2.0


def source_support(X, W_s):
    """(variance of the centred target X (n, p) in the span of W_s (p, q)) / (total variance),
    divided by q / p: 1 for structureless data, several times that for related tissue. Pure
    (the driver jits it); centred without a centred copy of X: ||(X - 1 m') Q||^2 =
    ||X Q - 1 (m' Q)||^2."""
    X = jnp.asarray(X).astype(jnp.float32)
    n = X.shape[0]
    Q, _ = jnp.linalg.qr(jnp.asarray(W_s).astype(jnp.float32))
    m = X.mean(axis=0)
    captured = jnp.sum((X @ Q - m @ Q) ** 2)
    total = jnp.sum(X**2) - n * jnp.sum(m**2)
    p, q = Q.shape
    return captured / jnp.maximum(total, 1e-30) / (q / p)


def warn_unsupported(ratio: float) -> None:
    """Warn when the source's factors capture no more of the target than random directions."""
    if np.isfinite(ratio) and ratio < SUPPORT_MIN:
        warnings.warn(
            f"the source cannot inform this target: its factors capture {ratio:.1f}x the share of the "
            f"target's variance that random directions would (related sections: 4-8x; structureless "
            f"data: 1x), so domains named after its classes are not supported by the target; check "
            "that target and source are the same tissue with the same gene identifiers and that the "
            "target holds expression, or fit without the source (source=None)",
            UserWarning, stacklevel=user_level())
