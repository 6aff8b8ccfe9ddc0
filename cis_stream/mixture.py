"""Exact integer mixtures: largest-remainder rounding and the max-repeat cap.

Shared by the weights file (expected repetition) and the dataset (per-epoch `choose` counts), so
the numbers a user inspects are the numbers the loader draws.
"""

from __future__ import annotations

import numpy as np


def largest_remainder(proportions: np.ndarray, total: int) -> np.ndarray:
    """Integer counts summing to `total`, proportional to `proportions`.

    Each leaf gets floor(total * p); the leftover goes one each to the largest remainders, ties
    broken by leaf id. Leaves with p == 0 never get a sample.
    """
    p = np.asarray(proportions, dtype=np.float64)
    if total < 0 or not np.all(np.isfinite(p)) or np.any(p < 0) or p.sum() <= 0:
        raise ValueError('proportions must be finite, non-negative and not all zero; total >= 0')
    quotas = p / p.sum() * total
    counts = np.floor(quotas).astype(np.int64)
    eligible = np.flatnonzero(p > 0)
    remainders = quotas[eligible] - counts[eligible]
    order = eligible[np.lexsort((eligible, -remainders))]
    leftover = total - int(counts.sum())
    for i in range(leftover):  # float error can leave more leftover than positive remainders: cycle
        counts[order[i % len(order)]] += 1
    return counts


def cap_proportions(proportions: np.ndarray, capacity: np.ndarray) -> np.ndarray:
    """Clip each proportion at `capacity` (same units) and hand the excess to uncapped leaves.

    The excess is spread over the still-uncapped leaves with non-zero weight in proportion to
    their weight (water-filling), so the mixture's shape is kept wherever the cap does not bind
    and zero-weight leaves stay at zero. Raises if the non-zero leaves cannot absorb it.
    """
    p = np.asarray(proportions, dtype=np.float64) / np.sum(proportions)
    cap = np.asarray(capacity, dtype=np.float64)
    positive = p > 0
    if cap[positive].sum() < 1 - 1e-6:
        raise ValueError(f'the cap is infeasible: leaves with weight can take only {cap[positive].sum():.3f} '
                         f'of the mixture; raise max_repeat, lower the token budget, or add smoothing')
    capped = np.zeros(len(p), dtype=bool)
    while True:
        over = positive & ~capped & (p > cap)
        if not over.any():
            return p
        capped |= over
        p[capped] = cap[capped]
        free = positive & ~capped
        if not free.any():
            return p
        excess = 1.0 - p.sum()
        p[free] += excess * p[free] / p[free].sum()


def capped_counts(proportions: np.ndarray, total: int, leaf_samples: np.ndarray,
                  max_repeat: float | None) -> np.ndarray:
    """Per-leaf draws for an epoch of `total` samples, at most max_repeat passes over any leaf."""
    if max_repeat is None:
        return largest_remainder(proportions, total)
    limit = np.floor(max_repeat * np.asarray(leaf_samples, np.float64))
    # A hair under the integer limit, so that rounding a quota up can never pass it.
    return largest_remainder(cap_proportions(proportions, np.maximum(limit - 1e-6, 0) / total), total)
