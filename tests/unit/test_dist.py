"""The process group's pure parts: dealing parts to ranks (largest first to the least loaded), each
process's share of the cores, and a group of one, which is a no-op. No process group is started."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cis_stream.index import dist
from cis_stream.index.dist import Group, balanced_split, share_cores
from cis_stream.text.tokens import load_tokenizer


def loads(sizes: list[int], owned: list[list[int]]) -> list[int]:
    return [sum(sizes[i] for i in items) for items in owned]


def test_every_item_is_dealt_once_and_each_rank_lists_its_items_in_order():
    sizes = [5, 1, 9, 3, 3, 7, 2]
    owned = balanced_split(sizes, 3)
    assert len(owned) == 3 and sorted(sum(owned, [])) == list(range(7))
    assert all(items == sorted(items) for items in owned)
    assert owned == balanced_split(list(sizes), 3), 'deterministic'


def test_largest_first_to_the_least_loaded_with_ties_to_the_lowest():
    # 9 -> rank 0, 7 -> 1, 5 -> 2; 3 -> 2 (load 5, the least), 3 -> 1 (7 < 8 < 9); 2 -> 2 (8 < 9 < 10);
    # 1 -> 0 (9 < 10 = 10): loads 10, 10, 10.
    assert balanced_split([5, 1, 9, 3, 3, 7, 2], 3) == [[1, 2], [4, 5], [0, 3, 6]]
    # Equal sizes alternate: ties go to the lower item and the lower rank.
    assert balanced_split([5, 5, 5, 5], 2) == [[0, 2], [1, 3]]
    assert balanced_split([4, 4], 3) == [[0], [1], []]
    assert balanced_split([], 2) == [[], []]
    assert balanced_split([3, 1, 2], 1) == [[0, 1, 2]]


@pytest.mark.parametrize('world', [2, 3, 8])
def test_real_document_sizes_are_dealt_within_the_greedy_bound(wiki_records, world):
    """Sizes of real documents (their GPT-2 token counts): the most loaded rank carries at most 4/3 of
    what the best possible deal would give it (Graham's bound for largest-first)."""
    gpt2 = load_tokenizer()
    sizes = [len(ids) for ids, _ in gpt2.encode([r['text'] for r in wiki_records[:400]])]
    owned = balanced_split(sizes, world)
    assert sorted(sum(owned, [])) == list(range(len(sizes)))
    best_possible = max(sum(sizes) / world, max(sizes))
    assert max(loads(sizes, owned)) <= 4 / 3 * best_possible
    assert max(loads(sizes, owned)) - min(loads(sizes, owned)) <= max(sizes)


def test_each_process_on_a_machine_gets_its_share_of_the_cores(monkeypatch):
    names = ('OMP_NUM_THREADS', 'RAYON_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS')
    for name in names + ('LOCAL_WORLD_SIZE', 'WORLD_SIZE'):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(os, 'cpu_count', lambda: 16)
    share_cores()  # one process: the libraries choose
    assert not any(name in os.environ for name in names)
    monkeypatch.setenv('LOCAL_WORLD_SIZE', '4')
    monkeypatch.setenv('MKL_NUM_THREADS', '2')  # the user's choice stays
    share_cores()
    assert [os.environ[name] for name in names] == ['4', '4', '4', '2']
    monkeypatch.delenv('LOCAL_WORLD_SIZE')
    monkeypatch.setenv('WORLD_SIZE', '32')  # without LOCAL_WORLD_SIZE, all on this machine: at least one each
    monkeypatch.delenv('OMP_NUM_THREADS')
    share_cores()
    assert os.environ['OMP_NUM_THREADS'] == '1'


def test_a_group_of_one_process_is_a_no_op(monkeypatch):
    for name in ('WORLD_SIZE', 'RANK', 'LOCAL_RANK'):
        monkeypatch.delenv(name, raising=False)
    group = Group()
    assert (group.world, group.rank, group.local_rank, group.leader) == (1, 0, 0, True)
    counts = np.arange(12).reshape(3, 4)
    assert group.sum(counts) is counts
    group.barrier()
    group.close()
    assert dist.BARRIER_TIMEOUT.total_seconds() >= 3600, 'rank 0 fits while the others wait'
