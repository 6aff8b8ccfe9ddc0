"""Weights over a tree whose numbers are known: spreading a level's mixture to its leaves by their
generalist sample counts, and the rule that picks the level. No index is built: a manifest and a tree
written by hand.

Weights of a real index (determinism, multi-task, smoothing, the cap, bad files): e2e/test_weights.py."""

import numpy as np
import pytest

from cis_stream.format.reader import CISIndex
from cis_stream.tree import Tree
from cis_stream.weights import choose_level, spread_to_leaves


@pytest.fixture
def known_tree_index(tmp_path):
    """Two top clusters with two leaves each; leaf samples 10, 30 | 20, 20."""
    tree = Tree([np.eye(2, dtype=np.float32), np.eye(4, 2, dtype=np.float32)],
                [np.array([-1, -1]), np.array([0, 0, 1, 1])])
    tree.save(str(tmp_path / 'tree.npz'))
    samples = [10, 30, 20, 20]
    manifest = {'fingerprint': 'f' * 64, 'options': {'seq_len': 8}, 'tree': {'levels': [
        {'nodes': [{'windows': 40, 'samples': 40}, {'windows': 40, 'samples': 40}]},
        {'nodes': [{'windows': s, 'samples': s} for s in samples]}]}}
    return CISIndex(str(tmp_path), manifest)


def test_spread_to_leaves_follows_generalist_sample_counts(known_tree_index):
    leaves = spread_to_leaves(known_tree_index, 0, np.array([0.8, 0.2]))
    assert leaves.tolist() == pytest.approx([0.2, 0.6, 0.1, 0.1])


def test_level_rule_picks_the_deepest_level_with_enough_windows_per_cluster(known_tree_index):
    spread_over_all_leaves = np.array([[i % 2, i % 4] for i in range(40)])  # 10 per leaf
    assert choose_level(known_tree_index, spread_over_all_leaves, min_per_cluster=10) == 1
    assert choose_level(known_tree_index, spread_over_all_leaves, min_per_cluster=11) == 0


def test_the_specialist_share_follows_the_repeat_budget_and_its_home_is_beside_the_weights():
    from cis_stream.specialist import fraction_for, stream_dir
    assert fraction_for(500, 100_000, repeats=20, fraction=None, max_fraction=0.5) == pytest.approx(0.1)
    assert fraction_for(500, 100_000, repeats=None, fraction=0.25, max_fraction=0.5) == 0.25
    # 20 passes would fill the whole budget: the sample gets the most the mixture may give it.
    assert fraction_for(500, 10_000, repeats=20, fraction=None, max_fraction=0.4) == 0.4
    assert stream_dir('runs/med.weights.json') == 'runs/med.specialist'
    assert stream_dir('med.json') == 'med.json.specialist'
