"""Exact integer mixtures: largest remainder, the cap and its redistribution."""

import numpy as np
import pytest

from cis_stream.mixture import cap_proportions, capped_counts, largest_remainder


def test_largest_remainder_sums_exactly_and_is_within_one_of_the_quota():
    rng = np.random.default_rng(0)
    for total in (1, 7, 1000, 123457):
        p = rng.dirichlet(np.ones(50))
        counts = largest_remainder(p, total)
        assert counts.sum() == total
        assert np.all(np.abs(counts - p * total) < 1)


def test_largest_remainder_never_gives_a_zero_weight_leaf_a_sample():
    p = np.array([0.0, 1 / 3, 0.0, 1 / 3, 1 / 3, 0.0])
    for total in range(1, 40):
        counts = largest_remainder(p, total)
        assert counts[[0, 2, 5]].sum() == 0
        assert counts.sum() == total


def test_largest_remainder_ties_go_to_the_lowest_leaf_id_deterministically():
    counts = largest_remainder(np.ones(4), 6)   # quotas 1.5 each: two leftovers
    assert counts.tolist() == [2, 2, 1, 1]


@pytest.mark.parametrize('bad', [[-0.1, 1.1], [np.nan, 1.0], [0.0, 0.0]])
def test_largest_remainder_refuses_bad_proportions(bad):
    with pytest.raises(ValueError, match='proportions'):
        largest_remainder(np.array(bad), 10)


def test_cap_moves_the_excess_to_uncapped_weighted_leaves_in_proportion():
    p = np.array([0.7, 0.2, 0.1, 0.0])
    capped = cap_proportions(p, np.array([0.4, 1.0, 1.0, 1.0]))
    assert capped[0] == pytest.approx(0.4)
    assert capped[3] == 0.0                             # zero weight stays zero
    assert capped[1] / capped[2] == pytest.approx(2.0)  # the shape of the rest is kept
    assert capped.sum() == pytest.approx(1.0)


def test_cap_cascades_when_redistribution_overflows_another_leaf():
    capped = cap_proportions(np.array([0.5, 0.3, 0.2]), np.array([0.2, 0.35, 1.0]))
    assert capped.tolist() == pytest.approx([0.2, 0.35, 0.45])


def test_infeasible_cap_is_a_clear_error():
    with pytest.raises(ValueError, match='infeasible'):
        cap_proportions(np.array([0.5, 0.5, 0.0]), np.array([0.2, 0.2, 1.0]))


def test_capped_counts_hold_the_repeat_limit_exactly():
    rng = np.random.default_rng(1)
    sizes = rng.integers(1, 200, size=64)
    p = rng.dirichlet(np.full(64, 0.3))
    total = int(sizes.sum())
    counts = capped_counts(p, total, sizes, max_repeat=2.0)
    assert counts.sum() == total
    assert np.all(counts <= np.floor(2.0 * sizes))
    assert np.all(counts[p == 0] == 0)
    uncapped = capped_counts(p, total, sizes, max_repeat=None)
    assert np.any(uncapped > 2.0 * sizes)  # the cap really binds in this case
