"""Choosing the number of domains K: BIC, MBIC, HBIC (the published code's constants) and ICL."""

from __future__ import annotations

import numpy as np

CRITERIA = ("bic", "mbic", "hbic", "icl")


def n_params(K: int, q: int) -> int:
    """Parameter count of the published code: K domain means and covariances + beta."""
    return K * (q + q * (q + 1) // 2) + 1


def criteria(loglik: float, K: int, q: int, n: int, entropy: float) -> dict:
    """Information criteria (smaller is better).

    const = 0.5 below 1000 spots, else 2 (as in the published code);
    BIC  = -2 LL + const * df * log(n)
    MBIC = -2 LL + const * df * log(n) * log(log(q + n))
    HBIC = -2 LL + const * df * log(log(n) + df)
    ICL  = BIC + 2 * sum_j H(r_j)   (classification entropy of the responsibilities)
    """
    const = 0.5 if n < 1000 else 2.0
    df = n_params(K, q)
    bic = -2.0 * loglik + const * df * np.log(n)
    return {
        "n_params": df,
        "bic": bic,
        "mbic": -2.0 * loglik + const * df * np.log(n) * np.log(np.log(q + n)),
        "hbic": -2.0 * loglik + const * df * np.log(np.log(n) + df),
        "icl": bic + 2.0 * entropy,
    }
