"""Adaptive phases through train.py: at the boundary the model is measured on the specialist
validation text per cluster, the phase's proportions are written to the run folder and drawn
exactly; a resumed run replays the file (same order); a missing file mid-phase is named."""

import json
import os
import shutil

import numpy as np
import pytest

from cis_stream.adaptive import read_adapted
from cis_stream.dataset import ClusteredImportanceDataset
from tests.e2e.test_train import _overrides, _run
from tests.helpers import global_order


def _schedule(weights, validation):
    return [{'weights': weights, 'samples': 32},
            {'weights': weights, 'samples': 64, 'adapt': {'validation': [str(validation)], 'step': 50.0}}]


def _args(weights, validation):
    schedule = ('[{weights: %s, samples: 32}, {weights: %s, samples: 64, adapt: {validation: [%s], step: 50.0}}]'
                % (weights, weights, validation))
    return {'train_loader.dataset.weights': 'null', 'train_loader.dataset.schedule': schedule,
            'train_loader.dataset.epoch_size': 'null'}


def test_an_adaptive_phase_is_measured_written_drawn_exactly_and_replayed(mix_index, mix_weights, split_dir,
                                                                          tmp_path):
    validation = split_dir / 'specialist_test.jsonl'
    args = _args(mix_weights, validation)
    run = tmp_path / 'run'
    result = _run(_overrides(mix_index.root, mix_weights, run, **args))
    assert result.returncode == 0, result.stderr[-3000:]
    order = global_order(run / 'order.jsonl')
    written = run / 'ckpt' / 'mixture' / 'phase-2.weights.json'
    record = json.loads(written.read_text())
    assert record['phase'] == 2 and record['measured_after_batch'] == 4 and record['rule']['step'] == 50.0
    measured = {c: v for c, v in record['clusters'].items() if 'loss' in v}
    assert all(3 < v['loss'] < 12 for v in measured.values())
    assert all(v['mass_after'] == 0 for v in measured.values() if v['mass_before'] == 0)  # a zero stays zero
    measured = {c: v for c, v in measured.items() if v['mass_before'] > 0}
    assert len(measured) >= 2
    # The rule moved mass towards the clusters where the validation loss is higher.
    hardest = max(measured, key=lambda c: measured[c]['loss'])
    easiest = min(measured, key=lambda c: measured[c]['loss'])
    assert measured[hardest]['mass_after'] > measured[hardest]['mass_before']
    assert measured[easiest]['mass_after'] < measured[easiest]['mass_before']

    dataset = ClusteredImportanceDataset(mix_index.root, schedule=_schedule(mix_weights, validation),
                                         adapt_dir=str(written.parent), batch_size=8, num_canonical_nodes=1)
    adapted = dataset.mixture.counts(1)
    proportions = np.asarray(read_adapted(str(written), mix_index, dataset.cis_fingerprint, 1))
    assert proportions.sum() == pytest.approx(1)
    # The rule moved mass away from the weights file's proportions (32 samples an epoch may still round
    # to the same counts), and the phase draws the counts of the adapted proportions.
    assert not np.allclose(proportions, json.loads(open(mix_weights).read())['leaf_proportions'])
    for batches in (order[4:8], order[8:12]):  # the adaptive phase's two epochs, exactly its counts
        drawn = np.bincount(dataset.leaf_of(sum(batches, [])), minlength=mix_index.num_leaves)
        assert drawn.tolist() == adapted.tolist()

    # Resumed inside the adaptive phase: the file is the run's record, so the order is the same.
    resumed = tmp_path / 'resumed'
    first = _run(_overrides(mix_index.root, mix_weights, resumed, steps=6, autoresume='true', **args))
    assert first.returncode == 0, first.stderr[-3000:]
    assert json.loads((resumed / 'ckpt' / 'mixture' / 'phase-2.weights.json').read_text())['leaf_proportions'] == \
        record['leaf_proportions']  # the same model at the boundary measures the same
    second = _run(_overrides(mix_index.root, mix_weights, resumed, steps=12, autoresume='true', **args))
    assert second.returncode == 0, second.stderr[-3000:]
    assert global_order(resumed / 'order.jsonl') == order

    # Without its file, a run resumed inside the phase stops with the file's name and the cause.
    shutil.rmtree(resumed / 'ckpt' / 'mixture')
    third = _run(_overrides(mix_index.root, mix_weights, resumed, steps=14, autoresume='true', **args))
    assert third.returncode != 0
    assert 'schedule phase 2 is adaptive, but' in third.stderr and 'phase-2.weights.json does not exist' in third.stderr


def test_the_fingerprint_covers_the_rule_and_the_validation_text(mix_index, mix_weights, split_dir, tmp_path):
    validation = tmp_path / 'val.jsonl'
    shutil.copy(split_dir / 'specialist_test.jsonl', validation)

    def fingerprint(schedule):
        return ClusteredImportanceDataset(mix_index.root, schedule=schedule, adapt_dir=str(tmp_path / 'a'),
                                          batch_size=8).cis_fingerprint

    base = fingerprint(_schedule(mix_weights, validation))
    other_step = _schedule(mix_weights, validation)
    other_step[1]['adapt']['step'] = 1.0
    assert fingerprint(other_step) != base
    with open(validation, 'a', encoding='utf-8') as handle:
        handle.write(json.dumps({'text': 'One more validation article about cells and proteins. ' * 5}) + '\n')
    assert fingerprint(_schedule(mix_weights, validation)) != base


def test_adaptive_schedules_that_cannot_work_are_refused(mix_index, mix_weights, split_dir):
    schedule = _schedule(mix_weights, split_dir / 'specialist_test.jsonl')
    with pytest.raises(ValueError, match='set adapt_dir'):
        ClusteredImportanceDataset(mix_index.root, schedule=schedule, batch_size=8)
    first = [dict(schedule[1]), schedule[0]]
    with pytest.raises(ValueError, match='the first phase cannot adapt'):
        ClusteredImportanceDataset(mix_index.root, schedule=first, adapt_dir='x', batch_size=8)
    missing = _schedule(mix_weights, os.path.join(str(split_dir), 'missing.jsonl'))
    with pytest.raises(ValueError, match='adapt.validation'):
        ClusteredImportanceDataset(mix_index.root, schedule=missing, adapt_dir='x', batch_size=8)
