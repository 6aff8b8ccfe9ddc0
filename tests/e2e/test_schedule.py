"""Mixture schedules: each phase draws its exact counts, epoch by epoch; the order is the same for 0
or 2 workers and 1 or 2 processes, and resumes exactly inside any phase; the fingerprint covers the
whole schedule; bad schedules get a precise message."""

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from torch.utils.data import DataLoader

from cis_stream.dataset import ClusteredImportanceDataset
from cis_stream.mixture import capped_counts, largest_remainder
from cis_stream.training.loaders import collate_causal_lm
from cis_stream.training.train import load_config
from cis_stream.weights import read_weights
from tests.e2e.test_train import _overrides, _run
from tests.helpers import REPO_ROOT, global_order

COMMON = dict(batch_size=8, shuffle=True, shuffle_seed=11, num_canonical_nodes=1, sample_ids=True)


def _two_phases(weights, first=160, second=240, unit='samples'):
    """Uniform, then the CIS mixture: epochs of gcd(160, 240) = 80 samples, 2 then 3 of them."""
    return [{'weights': None, unit: first}, {'weights': weights, unit: second}]


def _epochs(dataset, count):
    """The sample ids of `count` consecutive epochs (each `iter` is Streaming's next epoch)."""
    return [np.array([int(item['sample_id']) for item in dataset]) for _ in range(count)]


def test_each_phase_draws_its_own_exact_counts_epoch_by_epoch(mix_index, mix_weights):
    dataset = ClusteredImportanceDataset(mix_index.root, schedule=_two_phases(mix_weights), **COMMON)
    assert dataset.epoch_size == 80 and [dataset.phase_of(e) for e in range(7)] == [0, 0, 1, 1, 1, 1, 1]
    sizes = mix_index.leaf_samples
    uniform = largest_remainder(sizes / sizes.sum(), 80)
    cis = largest_remainder(np.asarray(read_weights(mix_weights, mix_index)['leaf_proportions']), 80)
    assert not np.array_equal(uniform, cis)
    drawn = [np.bincount(dataset.leaf_of(ids), minlength=mix_index.num_leaves) for ids in _epochs(dataset, 6)]
    assert [d.tolist() for d in drawn] == [uniform.tolist()] * 2 + [cis.tolist()] * 4  # the last phase goes on
    # A leaf drawn in any phase is a stream, with nothing drawn from it in the phases that leave it out.
    assert dataset.stream_leaves.tolist() == np.flatnonzero(uniform + cis).tolist()
    assert ((uniform > 0) & (cis == 0)).any()


def test_a_one_phase_schedule_is_the_plain_mixture(mix_index, mix_weights):
    plain = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=400, **COMMON)
    scheduled = ClusteredImportanceDataset(mix_index.root, schedule=[{'weights': mix_weights, 'samples': 400}],
                                           **COMMON)
    assert scheduled.cis_fingerprint == plain.cis_fingerprint
    assert [e.tolist() for e in _epochs(scheduled, 2)] == [e.tolist() for e in _epochs(plain, 2)]


def test_phase_lengths_in_tokens_count_the_training_tokens_of_a_sample(mix_index, mix_weights):
    seq_len = mix_index.manifest['options']['seq_len']
    dataset = ClusteredImportanceDataset(mix_index.root, schedule=_two_phases(mix_weights, 160 * seq_len,
                                                                              240 * seq_len, 'tokens'),
                                         max_seq_len=seq_len // 4, **COMMON)
    assert dataset.epoch_size == 80 and dataset.mixture.phase_epochs == [2, 3]


def test_order_is_the_same_for_0_or_2_workers_across_the_phase_boundary(mix_index, mix_weights):
    def loader_ids(workers):
        dataset = ClusteredImportanceDataset(mix_index.root, schedule=_two_phases(mix_weights), **COMMON)
        loader = DataLoader(dataset, batch_size=8, num_workers=workers, collate_fn=collate_causal_lm,
                            persistent_workers=workers > 0)
        return [[batch['sample_id'].tolist() for batch in loader] for _ in range(4)]

    first = loader_ids(0)
    assert first == loader_ids(2)
    assert first[1] != first[2]  # the two phases really differ


def test_a_resume_inside_the_second_phase_continues_the_exact_order(mix_index, mix_weights):
    schedule = _two_phases(mix_weights)
    full = _epochs(ClusteredImportanceDataset(mix_index.root, schedule=schedule, **COMMON), 4)
    first = ClusteredImportanceDataset(mix_index.root, schedule=schedule, **COMMON)
    _epochs(first, 3)
    iterator = iter(first)  # the fourth epoch: the second phase's second
    for _ in range(24):
        next(iterator)
    state = first.state_dict(24, False)
    assert state['epoch'] == 3
    resumed = ClusteredImportanceDataset(mix_index.root, schedule=schedule, **COMMON)
    resumed.load_state_dict(state)
    assert [int(item['sample_id']) for item in resumed] == full[3][24:].tolist()


def test_the_fingerprint_covers_the_whole_schedule(mix_index, mix_weights):
    def fingerprint(schedule):
        return ClusteredImportanceDataset(mix_index.root, schedule=schedule, **COMMON).cis_fingerprint

    base = fingerprint(_two_phases(mix_weights))
    assert base != fingerprint(_two_phases(mix_weights, 240, 160))  # other lengths
    assert base != fingerprint([{'weights': mix_weights, 'samples': 160}, {'weights': None, 'samples': 240}])
    dataset = ClusteredImportanceDataset(mix_index.root, schedule=_two_phases(mix_weights), **COMMON)
    other = ClusteredImportanceDataset(mix_index.root, schedule=_two_phases(mix_weights, 80, 240), **COMMON)
    with pytest.raises(ValueError, match='cannot resume'):
        other.load_state_dict(dataset.state_dict(8, False))


def test_a_phase_can_mix_in_the_specialist_stream(mix_index, stream_weights):
    dataset = ClusteredImportanceDataset(mix_index.root, schedule=_two_phases(stream_weights), **COMMON)
    stream = mix_index.num_leaves  # the specialist stream's source number
    weights = read_weights(stream_weights, mix_index)
    share = weights['specialist']['fraction']
    expected = capped_counts(np.append(np.asarray(weights['leaf_proportions']) * (1 - share), share), 80,
                             dataset.mixture.source_samples, None)
    drawn = [np.bincount(dataset.leaf_of(ids), minlength=stream + 1) for ids in _epochs(dataset, 3)]
    assert drawn[0][stream] == 0 and drawn[2].tolist() == expected.tolist() and expected[stream] > 0


@pytest.mark.parametrize('schedule, message', [
    ([{'weights': None}, {'weights': None, 'samples': 80}], 'phase 1: its length .* is required'),
    ([{'weights': None, 'samples': 80, 'tokens': 64}], 'as tokens or as samples, not both'),
    ([{'weights': None, 'samples': 80}, {'weights': None, 'tokens': 640}], 'same unit'),
    ([{'weights': None, 'samples': 0}], 'whole number of at least 1'),
    ([{'weights': None, 'samples': 80.5}], 'whole number of at least 1'),
    ([{'weigths': None, 'samples': 80}], "unknown key 'weigths' .did you mean 'weights'"),
    ([{'samples': 80}], 'weights is required'),
    ([{'weights': None, 'samples': 10007}, {'weights': None, 'samples': 10009}], 'makes 20,016 epochs'),
    ([], 'non-empty list'),
])
def test_a_bad_schedule_is_named_precisely(mix_index, schedule, message):
    with pytest.raises(ValueError, match=message):
        ClusteredImportanceDataset(mix_index.root, schedule=schedule, **COMMON)


def test_phases_must_be_whole_epochs_and_weights_go_in_the_schedule(mix_index, mix_weights):
    with pytest.raises(ValueError, match=r'multiple of epoch_size \(50 samples'):
        ClusteredImportanceDataset(mix_index.root, schedule=_two_phases(mix_weights), epoch_size=50, **COMMON)
    with pytest.raises(ValueError, match='weights or schedule, not both'):
        ClusteredImportanceDataset(mix_index.root, mix_weights, schedule=_two_phases(mix_weights), **COMMON)
    with pytest.raises(ValueError, match='no such weights file'):
        ClusteredImportanceDataset(mix_index.root, schedule=_two_phases('missing.weights.json'), **COMMON)


def test_train_py_runs_a_schedule_and_logs_cluster_losses_alike_on_one_or_two_processes_and_a_resume(
        mix_index, mix_weights, tmp_path):
    """12 batches of 8: phase 1 is 4 batches (uniform), phase 2 the rest (CIS); a resume at batch 6."""
    schedule = '[{weights: null, samples: 32}, {weights: %s, samples: 64}]' % mix_weights
    args = dict(**{'train_loader.dataset.weights': 'null', 'train_loader.dataset.schedule': schedule,
                   'train_loader.dataset.epoch_size': 'null'})
    one = tmp_path / 'one'
    callbacks = '{sample_order: {path: %s/order.jsonl}, cluster_loss: {path: %s/clusters.jsonl, interval: 1}}'
    result = _run(_overrides(mix_index.root, mix_weights, one, **args, callbacks=callbacks % (one, one)))
    assert result.returncode == 0, result.stderr[-3000:]
    order = global_order(one / 'order.jsonl')
    dataset = ClusteredImportanceDataset(mix_index.root, schedule=_two_phases(mix_weights, 32, 64), **COMMON)
    leaves = [np.bincount(dataset.leaf_of(sum(order[a:b], [])), minlength=mix_index.num_leaves)
              for a, b in ((0, 4), (4, 8))]
    assert leaves[0].tolist() == dataset.mixture.phase_counts[0].tolist()  # the uniform phase, exactly
    assert leaves[1].tolist() == dataset.mixture.phase_counts[1].tolist()  # then an epoch of CIS

    # The per-cluster training loss after every batch: each top-level cluster's sequences, exactly.
    top = mix_index.leaf_ancestors(0)
    records = [json.loads(line) for line in open(one / 'clusters.jsonl', encoding='utf-8')]
    assert [r['batch'] for r in records] == list(range(1, 13))
    for record, ids in zip(records, order):
        drawn = np.bincount(top[dataset.leaf_of(ids)], minlength=mix_index.levels[0])
        assert {name: c['sequences'] for name, c in record['clusters'].items()} == \
            {f'c{c}': int(n) for c, n in enumerate(drawn) if n}
        assert all(0 < c['loss'] < 2 * np.log(mix_index.manifest['options']['tokenizer']['vocab_size'])
                   for c in record['clusters'].values())

    two = tmp_path / 'two'
    result = _run(_overrides(mix_index.root, mix_weights, two, **args, callbacks=callbacks % (two, two)),
                  processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert global_order(two / 'order.jsonl') == order
    reduced = [json.loads(line) for line in open(two / 'clusters.jsonl', encoding='utf-8')]
    assert [{n: c['sequences'] for n, c in r['clusters'].items()} for r in reduced] == \
        [{n: c['sequences'] for n, c in r['clusters'].items()} for r in records]  # summed over both ranks
    # The same losses: at the first batch (the same initial model), then up to the drift of training
    # in another float order, which Adam amplifies step by step.
    assert [c['loss'] for c in reduced[0]['clusters'].values()] == pytest.approx(
        [c['loss'] for c in records[0]['clusters'].values()], rel=1e-5)
    assert [c['loss'] for r in reduced for c in r['clusters'].values()] == pytest.approx(
        [c['loss'] for r in records for c in r['clusters'].values()], rel=2e-2)

    resumed = tmp_path / 'resumed'
    first = _run(_overrides(mix_index.root, mix_weights, resumed, steps=6, autoresume='true', **args))
    assert first.returncode == 0, first.stderr[-3000:]
    second = _run(_overrides(mix_index.root, mix_weights, resumed, steps=12, autoresume='true', **args))
    assert second.returncode == 0, second.stderr[-3000:]
    assert global_order(resumed / 'order.jsonl') == order


def test_the_continued_pretraining_yaml_is_one_run_of_two_phases(mix_index, mix_weights, tmp_path):
    """yamls/continued.yaml, on the test index: its uniform phase, then the CIS mixture, in one run."""
    yaml = os.path.join(REPO_ROOT, 'yamls', 'continued.yaml')
    phases = load_config(yaml, [])['train_loader']['dataset']['schedule']
    assert [p['weights'] for p in phases] == [None, 'demo_out/specialist.weights.json']
    overrides = {'train_loader.dataset.index': mix_index.root, 'train_loader.dataset.schedule.1.weights': mix_weights,
                 'train_loader.dataset.schedule.0.tokens': 32 * 64, 'max_seq_len': 64, 'global_train_batch_size': 8,
                 'device_train_microbatch_size': 8, 'model.d_model': 32, 'model.n_layers': 1, 'model.n_heads': 2,
                 'max_duration': '8ba', 'eval_loaders': '[]', 'scheduler.t_warmup': '2ba',
                 'save_folder': tmp_path / 'ckpt', 'results_path': tmp_path / 'results.json',
                 'callbacks': '{sample_order: {path: %s/order.jsonl}}' % tmp_path}
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'train.py'), yaml] +
                            [f'{key}={value}' for key, value in overrides.items()],
                            capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    order = global_order(tmp_path / 'order.jsonl')
    dataset = ClusteredImportanceDataset(mix_index.root, schedule=[{'weights': None, 'samples': 32},
                                                                   {'weights': mix_weights}], **COMMON)
    for phase, batches in enumerate((order[:4], order[4:])):
        drawn = np.bincount(dataset.leaf_of(sum(batches, [])), minlength=mix_index.num_leaves)
        assert drawn.tolist() == dataset.mixture.phase_counts[phase].tolist()
