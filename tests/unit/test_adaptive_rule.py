"""The adaptive phase's rule: each cluster's mass times exp(step × (its loss − the mass-weighted
mean)); leaves keep their shares inside a cluster; zeros stay zero; unmeasured clusters keep 1."""

import numpy as np
import pytest

from cis_stream.adaptive import AdaptRule, reweigh


def test_clusters_with_higher_validation_loss_gain_mass_by_the_exponential_rule():
    leaves = np.array([0.2, 0.2, 0.3, 0.0, 0.3])   # clusters 0, 0, 1, 1, 2
    clusters = np.array([0, 0, 1, 1, 2])
    new, record = reweigh(leaves, clusters, {0: 5.0, 1: 4.0}, step=1.0)
    mean = (0.4 * 5.0 + 0.3 * 4.0) / 0.7           # cluster 2 has no validation text
    factor = np.array([np.exp(5.0 - mean), np.exp(4.0 - mean), 1.0])
    expected = leaves * factor[clusters] / (leaves * factor[clusters]).sum()
    assert new == pytest.approx(expected) and new.sum() == pytest.approx(1.0)
    assert new[0] == new[1] and new[3] == 0.0        # shares inside a cluster kept; a zero stays zero
    assert record['0']['mass_after'] > record['0']['mass_before'] and record['1']['loss'] == 4.0
    assert 'loss' not in record['2']
    same, _ = reweigh(leaves, clusters, {0: 4.5, 1: 4.5}, step=3.0)  # equal losses: nothing moves
    assert same == pytest.approx(leaves)


@pytest.mark.parametrize('spec, message', [
    ({'step': 1.0}, 'must name the specialist validation file'),
    ({'validation': ['v.jsonl'], 'step': 0}, r'step must be a number in \(0, 100\]'),
    ({'validation': ['v.jsonl'], 'level': -1}, 'must be a tree level'),
    ({'validation': ['v.jsonl'], 'stepp': 1}, "unknown key 'stepp'"),
])
def test_a_bad_rule_is_named(spec, message):
    with pytest.raises(ValueError, match=message):
        AdaptRule.parse(spec, 'schedule phase 2')
