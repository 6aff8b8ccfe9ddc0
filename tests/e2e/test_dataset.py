"""ClusteredImportanceDataset: exact per-leaf counts, determinism, resume checks, remote cache."""

import json
import threading
import time

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from cis_stream.dataset import ClusteredImportanceDataset, _LeafStream
from cis_stream.mixture import capped_counts, largest_remainder
from cis_stream.training.loaders import build_cis_dataloader, collate_causal_lm
from cis_stream.weights import read_weights

COMMON = dict(batch_size=8, shuffle=True, shuffle_seed=11, num_canonical_nodes=1, sample_ids=True)


def _epoch_ids(dataset):
    return np.array([int(item['sample_id']) for item in dataset])


def test_an_epoch_draws_exactly_the_rounded_counts_per_leaf(mix_index, mix_weights):
    weights = read_weights(mix_weights, mix_index)
    dataset = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=3001, **COMMON)
    expected = largest_remainder(np.asarray(weights['leaf_proportions']), 3001)
    assert dataset.leaf_counts.tolist() == expected.tolist()
    ids = _epoch_ids(dataset)
    assert len(ids) == 3001
    leaves = dataset.leaf_of(ids)
    drawn = np.bincount(leaves, minlength=mix_index.num_leaves)
    assert drawn.tolist() == expected.tolist()
    # Inside a leaf, samples repeat only once the leaf is exhausted (upsampling).
    sizes = mix_index.counts(len(mix_index.levels) - 1, 'samples')
    distinct = np.bincount(leaves[np.unique(ids, return_index=True)[1]], minlength=mix_index.num_leaves)
    assert distinct.tolist() == np.minimum(expected, sizes).tolist()
    zero = np.asarray(weights['leaf_proportions']) == 0
    assert zero.any() and drawn[zero].sum() == 0


def test_items_are_fixed_length_token_tensors_from_the_leaf(mix_index, mix_weights):
    dataset = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=64, max_seq_len=48, **COMMON)
    item = dataset[0]
    assert item['input_ids'].dtype == torch.int64 and item['input_ids'].shape == (48,)
    assert int(item['input_ids'].max()) < mix_index.manifest['options']['tokenizer']['vocab_size']
    with pytest.raises(ValueError, match='exceeds'):
        ClusteredImportanceDataset(mix_index.root, mix_weights, max_seq_len=65, **COMMON)


def test_uniform_baseline_follows_leaf_sizes_and_the_cap_holds(mix_index, mix_weights):
    sizes = mix_index.counts(len(mix_index.levels) - 1, 'samples')
    uniform = ClusteredImportanceDataset(mix_index.root, None, **COMMON)
    assert uniform.leaf_counts.tolist() == sizes.tolist()   # one epoch = every sample once
    epoch = int(sizes.sum()) // 2
    uncapped = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=epoch, **COMMON)
    assert np.any(uncapped.leaf_counts > 1.5 * sizes)  # the cap binds at this epoch size
    capped = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=epoch, max_repeat=1.5, **COMMON)
    weights = read_weights(mix_weights, mix_index)
    assert capped.leaf_counts.tolist() == capped_counts(
        np.asarray(weights['leaf_proportions']), epoch, sizes, 1.5).tolist()
    assert np.all(capped.leaf_counts <= np.floor(1.5 * sizes))
    drawn = np.bincount(capped.leaf_of(_epoch_ids(capped)), minlength=mix_index.num_leaves)
    assert np.all(drawn <= np.floor(1.5 * sizes))


def test_order_is_the_same_for_two_builds_and_for_0_or_2_workers(mix_index, mix_weights):
    def loader_ids(workers):
        dataset = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **COMMON)
        loader = DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate_causal_lm)
        return [batch['sample_id'].tolist() for batch in loader]

    first = loader_ids(0)
    assert first == loader_ids(0)
    assert first == loader_ids(2)
    other_seed = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400,
                                            **dict(COMMON, shuffle_seed=12))
    assert _epoch_ids(other_seed).tolist() != sum(first, [])


def test_state_dict_carries_the_mixture_and_a_resume_on_another_is_refused(mix_index, mix_weights, tmp_path):
    dataset = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **COMMON)
    state = dataset.state_dict(16, True)
    assert state['cis_fingerprint'] == dataset.cis_fingerprint and state['sample_in_epoch'] == 16
    uniform = ClusteredImportanceDataset(mix_index.root, None, epoch_size=400, **COMMON)
    with pytest.raises(ValueError, match='cannot resume.*allow_mixture_change'):
        uniform.load_state_dict(state)
    bigger = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=800, **COMMON)
    with pytest.raises(ValueError, match='cannot resume'):
        bigger.load_state_dict(state)
    allowed = ClusteredImportanceDataset(mix_index.root, None, epoch_size=400, allow_mixture_change=True, **COMMON)
    allowed.load_state_dict(state)  # on purpose: no error


def test_resumed_dataset_continues_the_exact_remaining_order(mix_index, mix_weights):
    full = _epoch_ids(ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **COMMON))
    first = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **COMMON)
    iterator = iter(first)
    for _ in range(136):
        next(iterator)
    state = first.state_dict(136, True)
    resumed = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **COMMON)
    resumed.load_state_dict(state)
    assert _epoch_ids(resumed).tolist() == full[136:].tolist()


def test_weights_for_another_index_are_refused_at_construction(mix_index, mix_weights, tmp_path):
    other = json.loads(open(mix_weights).read())
    other['index_fingerprint'] = '1' * 64
    path = tmp_path / 'other.weights.json'
    path.write_text(json.dumps(other))
    with pytest.raises(ValueError, match='made for index 1111111111111111.*recompute'):
        ClusteredImportanceDataset(mix_index.root, str(path), **COMMON)
    with pytest.raises(ValueError, match='sets .streams. itself'):
        ClusteredImportanceDataset(mix_index.root, mix_weights, streams=[], **COMMON)


def test_a_remote_index_is_fetched_into_the_local_cache(mix_index, mix_weights, tmp_path):
    """With `local`, the index is a Streaming remote (here a directory; s3:// works the same way)."""
    cache = tmp_path / 'cache'
    remote = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=200, local=str(cache), **COMMON)
    local = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=200, **COMMON)
    assert (cache / 'cis_index.json').is_file()
    assert remote.cis_index.tokenizer.eos_id == mix_index.tokenizer.eos_id  # train.py needs it
    assert _epoch_ids(remote).tolist() == _epoch_ids(local).tolist()
    assert torch.equal(remote[5]['input_ids'], local[5]['input_ids'])
    assert any((cache / 'clusters').rglob('shard.*.mds*'))


def test_llm_foundry_finds_the_cis_loader_through_its_entry_point_group(mix_index, mix_weights):
    from importlib.metadata import entry_points
    (entry,) = [e for e in entry_points(group='llmfoundry_dataloaders') if e.name == 'cis']
    build = entry.load()
    # llm-foundry >= 0.11 passes the loader section's keys as keywords.
    spec = build(tokenizer=None, device_batch_size=4, dataset={'index': mix_index.root, 'weights': mix_weights,
                                                               'epoch_size': 40, 'num_canonical_nodes': 1})
    batch = next(iter(spec.dataloader))
    assert set(batch) == {'input_ids', 'labels'}  # no sample ids unless asked for
    assert batch['input_ids'].shape == (4, 64) and torch.equal(batch['labels'], batch['input_ids'])
    assert spec.get_num_tokens_in_batch(batch) == 256


def test_remote_start_up_uses_the_leaf_index_bundle_and_checks_it(mix_index, mix_weights, tmp_path):
    import shutil
    remote = tmp_path / 'remote'
    shutil.copytree(mix_index.root, remote)
    for leaf_index in (remote / 'clusters').glob('*/index.json'):
        leaf_index.unlink()  # only the bundle can provide them now
    cache = tmp_path / 'cache'
    dataset = ClusteredImportanceDataset(str(remote), mix_weights, epoch_size=100, local=str(cache), **COMMON)
    assert not list((cache / 'clusters').glob('*/index.json'))  # the leaves' streams read the bundle itself
    local = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=100, **COMMON)
    assert _epoch_ids(dataset).tolist() == _epoch_ids(local).tolist()
    assert [s.samples for s in dataset.shards] == [s.samples for s in local.shards]
    assert torch.equal(dataset[7]['input_ids'], local[7]['input_ids'])
    (remote / 'leaf_indexes.json.zst').write_bytes(b'not the bundle')
    with pytest.raises(ValueError, match='does not match the manifest'):
        ClusteredImportanceDataset(str(remote), mix_weights, local=str(tmp_path / 'cache2'), **COMMON)



def test_a_remote_epoch_fetches_its_first_shards_in_parallel_in_the_same_order(mix_index, mix_weights, tmp_path,
                                                                              monkeypatch):
    """The shards of the first samples are fetched on several threads at once (Streaming fetches one
    at a time); the epoch's order and samples are those of the local index all the same."""
    active, peak, fetchers, lock = [0], [0], [], threading.Lock()
    original = _LeafStream.prepare_shard

    def slow_store(self, shard):
        with lock:
            active[0] += 1
            peak[0] = max(peak[0], active[0])
            fetchers.append(threading.current_thread().name)
        time.sleep(0.05)  # each fetch takes a round trip
        try:
            return original(self, shard)
        finally:
            with lock:
                active[0] -= 1
    monkeypatch.setattr(_LeafStream, 'prepare_shard', slow_store)
    local = _epoch_ids(ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=200, **COMMON))
    fetchers.clear()
    parallel = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=200, local=str(tmp_path / 'a'),
                                          download_threads=8, **COMMON)
    assert _epoch_ids(parallel).tolist() == local.tolist()
    # Streaming alone overlaps at most its download thread and the reading one.
    assert peak[0] >= 4 and sum(name.startswith('cis-prefetch') for name in fetchers) >= 4
    fetchers.clear()
    serial = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=200, local=str(tmp_path / 'b'),
                                        download_threads=0, **COMMON)
    assert _epoch_ids(serial).tolist() == local.tolist()
    assert fetchers and not any(name.startswith('cis-prefetch') for name in fetchers)

# A max_seq_len shorter than the index samples (issue 12, item 8) ------------------------------------

def test_a_shorter_max_seq_len_splits_each_sample_and_drops_no_token(mix_index, mix_weights):
    """64-token samples, 16-token training sequences: each sample gives 4, in order, none lost."""
    seq_len = mix_index.manifest['options']['seq_len']
    dataset = {'index': mix_index.root, 'weights': mix_weights, 'epoch_size': 400, 'num_canonical_nodes': 1,
               'shuffle': True, 'shuffle_seed': 11, 'sample_ids': True}
    split = build_cis_dataloader(device_batch_size=8, dataset=dict(dataset, max_seq_len=16))
    whole = build_cis_dataloader(device_batch_size=2, dataset=dataset)  # the same 2 index samples a batch
    assert split.dataloader.batch_size == 2 and split.dataloader.dataset.sequences_per_sample == 4
    tokens = 0
    for ours, theirs in zip(split.dataloader, whole.dataloader, strict=True):
        assert ours['input_ids'].shape == (8, 16) and torch.equal(ours['labels'], ours['input_ids'])
        assert torch.equal(ours['input_ids'].reshape(2, seq_len), theirs['input_ids'])
        assert ours['sample_id'].tolist() == theirs['sample_id'].repeat_interleave(4).tolist()
        tokens += split.get_num_tokens_in_batch(ours)
    assert tokens == 400 * seq_len  # every token of the epoch is trained on


def test_a_split_dataset_resumes_from_composers_count_of_training_sequences(mix_index, mix_weights):
    options = dict(COMMON, batch_size=2, max_seq_len=16)
    loader = DataLoader(ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **options),
                        batch_size=2, collate_fn=collate_causal_lm)
    full = [int(i) for batch in loader for i in batch['sample_id'][::4]]
    first = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **options)
    iterator = iter(DataLoader(first, batch_size=2, collate_fn=collate_causal_lm))
    for _ in range(5):
        next(iterator)
    state = first.state_dict(5 * 8, True)  # Composer's sample_in_epoch: 5 batches of 8 sequences
    assert state['sample_in_epoch'] == 10
    resumed = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **options)
    resumed.load_state_dict(state)
    assert [int(item['sample_id'][0]) for item in resumed] == full[10:]


def test_truncation_is_a_loud_warning_with_the_numbers(mix_index, mix_weights):
    with pytest.warns(UserWarning, match=r'max_seq_len 48 is shorter than the index samples of 64 tokens and it '
                                         r'does not divide 64: every sample is truncated, dropping 16 of its 64 '
                                         r'tokens \(25\.0% of the data\)'):
        dataset = ClusteredImportanceDataset(mix_index.root, mix_weights, max_seq_len=48, **COMMON)
    assert dataset[0]['input_ids'].shape == (48,)
    config = {'index': mix_index.root, 'weights': mix_weights, 'max_seq_len': 16, 'num_canonical_nodes': 1}
    with pytest.warns(UserWarning) as caught:
        spec = build_cis_dataloader(device_batch_size=6, dataset=config)
    messages = [str(w.message) for w in caught]
    assert any('device batch of 6 training sequences is not a multiple of the 4 sequences each 64-token index '
               'sample splits into' in m for m in messages), messages
    assert any('split_samples=False: every sample is truncated, dropping 48 of its 64 tokens (75.0% of the '
               'data)' in m for m in messages), messages
    batch = next(iter(spec.dataloader))
    assert batch['input_ids'].shape == (6, 16) and spec.get_num_tokens_in_batch(batch) == 96
