"""llm-foundry's own training entry point (`train_from_yaml`, what its scripts/train/train.py runs) on a
CIS mixture, with llm-foundry 0.22 really installed (`make test-foundry` makes .venv-foundry): the
`cis` loader and our callbacks found through their entry points, tokens counted per batch, the same
global sample order as our train.py, a kill -9 and autoresume that continue it exactly, a misspelled
dataset key named by our message, and llm-foundry's own `text` loader reading one of our leaves."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

import numpy as np
import pytest

from tests.helpers import REPO_ROOT, global_order, kill_between_checkpoints

pytest.importorskip('llmfoundry', reason="llm-foundry's tests run in .venv-foundry: make test-foundry")

YAML = os.path.join(REPO_ROOT, 'yamls', 'foundry', 'cis-mpt.yaml')
STEPS, BATCH, SEQ = 12, 8, 64


@pytest.fixture(scope='module')
def tokenizer_dir(mix_index, tmp_path_factory) -> str:
    out = str(tmp_path_factory.mktemp('tokenizer_hf'))
    result = subprocess.run([sys.executable, '-m', 'cis_stream.cli', 'export-tokenizer', mix_index.root, out],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return out


def _overrides(mix_index, weights, tokenizer_dir, split_dir, out, **extra) -> list[str]:
    values = {
        'variables.index': mix_index.root, 'variables.weights': weights, 'variables.tokenizer': tokenizer_dir,
        'variables.corpus': str(split_dir), 'variables.max_seq_len': SEQ, 'variables.run_name': 'foundry-test',
        'model.d_model': 32, 'model.n_layers': 1, 'model.n_heads': 2,
        'model.vocab_size': mix_index.manifest['options']['tokenizer']['vocab_size'],
        'global_train_batch_size': BATCH, 'device_train_microbatch_size': BATCH, 'device_eval_batch_size': BATCH,
        'max_duration': f'{STEPS}ba', 'eval_interval': '6ba', 'eval_subset_num_batches': 2,
        'train_loader.dataset.epoch_size': 2000, 'train_loader.dataset.sample_ids': True,
        'save_folder': f'{out}/ckpt', 'save_interval': '4ba', 'console_log_interval': '100ba',
        'callbacks': '{cis_sample_order: {path: %s/order.jsonl}, cis_eval_history: {path: %s/evals.jsonl}}'
                     % (out, out),
    }
    values.update(extra)
    return [f'{key}={value}' for key, value in values.items()]


def _foundry(args: list[str], **kwargs) -> subprocess.CompletedProcess | subprocess.Popen:
    command = [sys.executable, '-m', 'cis_stream.training.foundry', YAML, *args]
    if kwargs.pop('background', False):
        return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                                cwd=REPO_ROOT, start_new_session=True)
    return subprocess.run(command, capture_output=True, text=True, cwd=REPO_ROOT, **kwargs)


@pytest.fixture(scope='module')
def foundry_order(mix_index, mix_weights, tokenizer_dir, split_dir, tmp_path_factory):
    out = tmp_path_factory.mktemp('foundry')
    result = _foundry(_overrides(mix_index, mix_weights, tokenizer_dir, split_dir, out))
    assert result.returncode == 0, result.stderr[-4000:]
    return out, global_order(out / 'order.jsonl')


def test_llm_foundry_trains_on_the_mixture_counting_tokens(foundry_order):
    out, order = foundry_order
    assert len(order) == STEPS and all(len(batch) == BATCH for batch in order)
    history = [json.loads(line) for line in open(out / 'evals.jsonl', encoding='utf-8')]
    assert [(r['batch'], r['tokens']) for r in history] == [(6, 6 * BATCH * SEQ), (12, 12 * BATCH * SEQ)]
    assert {'eval/specialist', 'eval/generalist'} <= set(history[-1]['metrics'])  # llm-foundry's labels


def test_llm_foundry_draws_the_global_order_of_our_train_py(foundry_order, mix_index, mix_weights, tmp_path):
    _, order = foundry_order
    ours = [sys.executable, os.path.join(REPO_ROOT, 'train.py'), os.path.join(REPO_ROOT, 'yamls', 'cis.yaml'),
            f'max_seq_len={SEQ}', f'global_train_batch_size={BATCH}', f'device_train_microbatch_size={BATCH}',
            'model.d_model=32', 'model.n_layers=1', 'model.n_heads=2', f'max_duration={STEPS}ba', 'eval_loaders=[]',
            f'train_loader.dataset.index={mix_index.root}', f'train_loader.dataset.weights={mix_weights}',
            'train_loader.dataset.epoch_size=2000', f'save_folder={tmp_path}/ckpt', 'save_interval=100ba',
            'callbacks={sample_order: {path: %s/order.jsonl}}' % tmp_path]
    result = subprocess.run(ours, capture_output=True, text=True, cwd=REPO_ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert global_order(tmp_path / 'order.jsonl') == order


def test_a_killed_llm_foundry_run_autoresumes_the_exact_order(foundry_order, mix_index, mix_weights, tokenizer_dir,
                                                              split_dir, tmp_path):
    _, order = foundry_order
    args = _overrides(mix_index, mix_weights, tokenizer_dir, split_dir, tmp_path)
    process = _foundry(args, background=True)
    log = tmp_path / 'order.jsonl'
    deadline = time.time() + 600
    while time.time() < deadline and process.poll() is None:
        if log.exists() and sum(1 for _ in open(log, encoding='utf-8')) >= 7:
            break
        time.sleep(0.2)
    assert process.poll() is None, 'the run ended before it could be killed: ' + process.stderr.read()[-2000:]
    kill_between_checkpoints(process, tmp_path / 'ckpt')
    assert sum(1 for _ in open(log, encoding='utf-8')) < STEPS
    result = _foundry(args)  # the same command: llm-foundry's autoresume picks the last checkpoint
    assert result.returncode == 0, result.stderr[-4000:]
    assert global_order(log) == order


def test_a_misspelled_dataset_key_is_named_by_our_message(mix_index, mix_weights, tokenizer_dir, split_dir, tmp_path):
    result = _foundry(_overrides(mix_index, mix_weights, tokenizer_dir, split_dir, tmp_path,
                                 **{'train_loader.dataset.shufle_seed': 3}))
    assert result.returncode == 2
    assert "train_loader.dataset: unknown key 'shufle_seed' (did you mean 'shuffle_seed'?)" in result.stderr
    assert 'TypeError' not in result.stderr


def test_llm_foundrys_text_loader_reads_one_of_our_leaves(mix_index, tokenizer_dir):
    from llmfoundry.data.text_data import StreamingTextDataset
    from streaming import StreamingDataset
    from transformers import AutoTokenizer
    leaf = int(mix_index.leaf_samples.argmax())
    theirs = StreamingTextDataset(tokenizer=AutoTokenizer.from_pretrained(tokenizer_dir), max_seq_len=SEQ,
                                  local=mix_index.leaf_path(leaf), shuffle=False, batch_size=1,
                                  token_encoding_type='uint16')
    ours = StreamingDataset(local=mix_index.leaf_path(leaf), batch_size=1, shuffle=False)
    assert theirs.num_samples == ours.num_samples == mix_index.leaf_samples[leaf]
    for i in (0, theirs.num_samples // 2, theirs.num_samples - 1):
        assert theirs[i].tolist() == ours[i]['tokens'].astype('int64').tolist()


def test_llm_foundry_trains_on_a_schedule_and_logs_the_loss_per_cluster(mix_index, mix_weights, tokenizer_dir,
                                                                         split_dir, tmp_path):
    """A two-phase schedule under llm-foundry's loader: 4 batches uniform, then CIS, each exactly."""
    from cis_stream.dataset import ClusteredImportanceDataset
    schedule = '[{weights: null, samples: 32}, {weights: %s, samples: 64}]' % mix_weights
    callbacks = ('{cis_sample_order: {path: %s/order.jsonl}, cis_cluster_loss: {path: %s/clusters.jsonl, interval: 4}}'
                 % (tmp_path, tmp_path))
    result = _foundry(_overrides(mix_index, mix_weights, tokenizer_dir, split_dir, tmp_path, callbacks=callbacks,
                                 **{'train_loader.dataset.weights': 'null', 'train_loader.dataset.epoch_size': 'null',
                                    'train_loader.dataset.schedule': schedule}))
    assert result.returncode == 0, result.stderr[-4000:]
    order = global_order(tmp_path / 'order.jsonl')
    dataset = ClusteredImportanceDataset(mix_index.root, schedule=[{'weights': None, 'samples': 32},
                                                                   {'weights': mix_weights, 'samples': 64}],
                                         batch_size=BATCH, num_canonical_nodes=1)
    for phase, batches in enumerate((order[:4], order[4:8])):
        drawn = [int(n) for n in np.bincount(dataset.leaf_of(sum(batches, [])), minlength=mix_index.num_leaves)]
        assert drawn == dataset.mixture.phase_counts[phase].tolist()
    records = [json.loads(line) for line in open(tmp_path / 'clusters.jsonl', encoding='utf-8')]
    assert [r['batch'] for r in records] == [4, 8, 12]
    assert [sum(c['sequences'] for c in r['clusters'].values()) for r in records] == [4 * BATCH] * 3
