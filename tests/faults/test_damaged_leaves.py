"""Damaged leaves: a missing, corrupted or truncated shard, or a deleted index.json, is named by leaf
and file with the fix (rebuild), whether the dataset iterates or indexes; a sound copy reads the same."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cis_stream.dataset import ClusteredImportanceDataset, DamagedLeafError
from tests.helpers import copy_index, leaf_sample_ids

# The datasets of these tests: no shuffle, so that a sample id names the same sample every time.
COMMON = dict(batch_size=8, shuffle=False, num_canonical_nodes=1)


@pytest.mark.parametrize('damage', ['corrupted', 'truncated', 'missing'])
@pytest.mark.parametrize('access', ['iterate', 'index'])
def test_damaged_shard_names_the_leaf(mix_index, tmp_path, damage, access):
    root = copy_index(mix_index, tmp_path / 'index')
    leaf = 5
    shard = os.path.join(root, 'clusters', f'{leaf:05d}', 'shard.00000.mds.zstd')
    blob = open(shard, 'rb').read()
    if damage == 'corrupted':
        middle = len(blob) // 2
        open(shard, 'wb').write(blob[:middle] + bytes(b ^ 0xFF for b in blob[middle:middle + 16]) + blob[middle + 16:])
    elif damage == 'truncated':
        open(shard, 'wb').write(blob[:len(blob) // 2])
    else:
        os.remove(shard)
    dataset = ClusteredImportanceDataset(root, None, **COMMON)
    with pytest.raises(DamagedLeafError) as info:
        if access == 'iterate':
            for _ in dataset:
                pass
        else:
            dataset[int(leaf_sample_ids(dataset, leaf)[0])]
    message = str(info.value)
    assert message.startswith(f'leaf {leaf:05d}: {shard} '), message
    assert ('is missing' if damage == 'missing' else 'does not match its xxh64 hash') in message
    assert 'rebuild it with `cis-stream index' in message
    if access == 'index':
        # The other leaves still read, and the failed shard is not left "being prepared" forever
        # (Streaming would make the next reader of it wait without end).
        assert len(dataset[int(leaf_sample_ids(dataset, 6)[0])]['input_ids']) == 64
        with pytest.raises(DamagedLeafError):
            dataset[int(leaf_sample_ids(dataset, leaf)[-1])]
    else:
        # Streaming stops a dataset whose download thread failed; it keeps saying why.
        with pytest.raises(DamagedLeafError, match=f'leaf {leaf:05d}'):
            dataset[int(leaf_sample_ids(dataset, 6)[0])]


def test_a_sound_copy_reads_the_same_samples(mix_index, tmp_path):
    """The control for the test above: an undamaged copy, hashes checked, reads every sample."""
    dataset = ClusteredImportanceDataset(copy_index(mix_index, tmp_path / 'index'), None, epoch_size=600, **COMMON)
    reference = ClusteredImportanceDataset(mix_index.root, None, epoch_size=600, **COMMON)
    assert all(s.validate_hash == 'xxh64' for s in dataset.streams)
    for ours, theirs in zip(dataset, reference):
        assert np.array_equal(ours['input_ids'], theirs['input_ids'])


def test_deleted_leaf_index_json_names_the_leaf(mix_index, tmp_path):
    root = copy_index(mix_index, tmp_path / 'index')
    path = os.path.join(root, 'clusters', '00003', 'index.json')
    os.remove(path)
    with pytest.raises(DamagedLeafError) as info:
        ClusteredImportanceDataset(root, None, **COMMON)
    assert str(info.value).startswith(f'leaf 00003: {path} is missing: the index is damaged; rebuild it')
