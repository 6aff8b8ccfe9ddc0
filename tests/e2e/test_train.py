"""Composer training: the global sample order is the same for 1 or 2 processes, 0 or 2 workers,
and across a kill -9 and autoresume; a resume on another mixture fails loudly; YAML typos too."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from cis_stream.training.train import fit_microbatch, load_config, main
from tests.helpers import REPO_ROOT, global_order, kill_between_checkpoints

ROOT = REPO_ROOT
TRAIN = os.path.join(ROOT, 'train.py')
YAML = os.path.join(ROOT, 'yamls', 'cis.yaml')
COMPOSER = os.path.join(os.path.dirname(sys.executable), 'composer')


def _overrides(index, weights, out, steps=12, **extra):
    values = {
        'max_seq_len': 64, 'global_train_batch_size': 8, 'device_train_microbatch_size': 4,
        'model.d_model': 32, 'model.n_layers': 1, 'model.n_heads': 2, 'max_duration': f'{steps}ba',
        'eval_loaders': '[]', 'save_interval': '4ba', 'console_log_interval': '100ba',
        'train_loader.dataset.index': index, 'train_loader.dataset.weights': weights,
        'train_loader.dataset.epoch_size': 2000, 'save_folder': f'{out}/ckpt',
        'callbacks': '{sample_order: {path: %s/order.jsonl}}' % out,
    }
    values.update(extra)
    return [f'{key}={value}' for key, value in values.items()]


def _run(args, processes=1, **kwargs):
    launcher = [COMPOSER, '-n', str(processes)] if processes > 1 else [sys.executable]
    return subprocess.run(launcher + [TRAIN, YAML] + args, capture_output=True, text=True, cwd=ROOT, **kwargs)


@pytest.fixture(scope='module')
def single_process_order(mix_index, mix_weights, tmp_path_factory):
    out = tmp_path_factory.mktemp('one_process')
    result = _run(_overrides(mix_index.root, mix_weights, out))
    assert result.returncode == 0, result.stderr[-3000:]
    order = global_order(out / 'order.jsonl')
    assert len(order) == 12 and all(len(batch) == 8 for batch in order)
    return order


def test_two_processes_draw_the_sameglobal_order(single_process_order, mix_index, mix_weights, tmp_path):
    result = _run(_overrides(mix_index.root, mix_weights, tmp_path), processes=2)
    assert result.returncode == 0, result.stderr[-3000:]
    assert global_order(tmp_path / 'order.jsonl') == single_process_order


def test_two_loader_workers_draw_the_sameglobal_order(single_process_order, mix_index, mix_weights, tmp_path):
    result = _run(_overrides(mix_index.root, mix_weights, tmp_path, **{'train_loader.num_workers': 2}))
    assert result.returncode == 0, result.stderr[-3000:]
    assert global_order(tmp_path / 'order.jsonl') == single_process_order


def test_kill_and_autoresume_continue_the_exact_order(mix_index, mix_weights, tmp_path):
    steps = 30
    reference = tmp_path / 'reference'
    result = _run(_overrides(mix_index.root, mix_weights, reference, steps))
    assert result.returncode == 0, result.stderr[-3000:]
    expected = global_order(reference / 'order.jsonl')

    run = tmp_path / 'killed'
    args = _overrides(mix_index.root, mix_weights, run, steps, autoresume='true', save_overwrite='false')
    process = subprocess.Popen([sys.executable, TRAIN, YAML] + args, cwd=ROOT,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    order_file = run / 'order.jsonl'
    deadline = time.time() + 300
    while time.time() < deadline and process.poll() is None:
        if order_file.exists() and sum(1 for _ in open(order_file)) >= 10:
            break
        time.sleep(0.02)
    kill_between_checkpoints(process, run / 'ckpt')
    logged = sum(1 for _ in open(order_file))
    assert process.returncode == -signal.SIGKILL and logged < steps, 'the run was not killed mid-epoch'

    result = subprocess.run([sys.executable, TRAIN, YAML] + args, capture_output=True, text=True, cwd=ROOT)
    assert result.returncode == 0, result.stderr[-3000:]
    assert global_order(order_file) == expected
    resumed_from = json.loads(open(order_file).readlines()[logged])['batch']
    assert 0 < resumed_from < logged  # it resumed from a mid-epoch checkpoint, not from scratch


def test_a_mixture_with_the_specialist_stream_trains_and_logs_its_eval_curve(mix_index, stream_weights, split_dir,
                                                                             tmp_path):
    evals = '[{label: specialist, dataset: {files: [%s]}}]' % (split_dir / 'specialist_test.jsonl')
    result = _run(_overrides(mix_index.root, stream_weights, tmp_path, steps=8, eval_interval='[3, 8]',
                             eval_subset_num_batches=2, eval_loaders=evals,
                             callbacks='{sample_order: {path: %s/order.jsonl}, eval_history: {path: %s/evals.jsonl}}'
                             % (tmp_path, tmp_path)))
    assert result.returncode == 0, result.stderr[-3000:]
    history = [json.loads(line) for line in open(tmp_path / 'evals.jsonl', encoding='utf-8')]
    assert [(r['batch'], r['tokens']) for r in history] == [(3, 3 * 8 * 64), (8, 8 * 8 * 64)]
    assert all(1 < r['metrics']['specialist']['LanguagePerplexity'] < 1e5 for r in history)
    from cis_stream.dataset import ClusteredImportanceDataset
    dataset = ClusteredImportanceDataset(mix_index.root, stream_weights, epoch_size=2000, batch_size=8)
    drawn = dataset.leaf_of(sum(global_order(tmp_path / 'order.jsonl'), []))
    assert dataset.leaf_counts[-1] > 0 and (drawn == mix_index.num_leaves).sum() > 0  # the stream is trained on


def test_resume_on_other_weights_fails_with_a_clear_message(mix_index, mix_weights, tmp_path):
    args = _overrides(mix_index.root, mix_weights, tmp_path, steps=4, autoresume='true', save_overwrite='false')
    assert _run(args).returncode == 0
    args = _overrides(mix_index.root, 'null', tmp_path, steps=8, autoresume='true', save_overwrite='false')
    result = _run(args)
    assert result.returncode == 2
    assert 'cannot resume' in result.stderr and 'allow_mixture_change' in result.stderr


def test_yaml_typos_are_named_with_a_suggestion(mix_index, mix_weights, tmp_path):
    result = _run(_overrides(mix_index.root, mix_weights, tmp_path) + ['max_durration=3ba'])
    assert result.returncode == 2
    assert "unknown key 'max_durration'" in result.stderr and "did you mean 'max_duration'" in result.stderr
    result = _run(_overrides(mix_index.root, mix_weights, tmp_path) + ['train_loader.dataset.wieghts=x'])
    assert result.returncode == 2 and "'wieghts'" in result.stderr and "'weights'" in result.stderr


def test_split_samples_keep_the_global_order_for_one_or_two_processes(mix_index, mix_weights, tmp_path):
    """max_seq_len 32 on 64-token samples: 8 training sequences a step are 4 index samples, on 1
    process or on 2 (4 sequences each, where the asked microbatch of 8 is cut to 4 without warnings)."""
    orders = []
    for processes in (1, 2):
        out = tmp_path / f'{processes}'
        args = _overrides(mix_index.root, mix_weights, out, steps=6, max_seq_len=32,
                          device_train_microbatch_size=8)
        result = _run(args, processes=processes)
        assert result.returncode == 0, result.stderr[-3000:]
        assert 'Cannot split tensor' not in result.stderr and 'truncated' not in result.stderr
        orders.append(global_order(out / 'order.jsonl', split=2))
    assert 'device_train_microbatch_size 8 does not divide the device batch of 4 sequences' in result.stderr
    assert len(orders[0]) == 6 and all(len(batch) == 4 for batch in orders[0])
    assert orders[0] == orders[1]


def test_the_microbatch_is_cut_to_divide_the_device_batch():
    assert [fit_microbatch(m, 12) for m in (12, 6, 16, 8, 5, 1)] == [12, 6, 12, 6, 4, 1]
    assert fit_microbatch('auto', 12) == 'auto'


def test_overrides_reach_into_lists_by_index(tmp_path, capsys):
    cfg = load_config(YAML, ['eval_loaders.0.label=x', 'eval_loaders.1.dataset.text_field=body'])
    assert cfg['eval_loaders'][0]['label'] == 'x' and cfg['eval_loaders'][1]['dataset']['text_field'] == 'body'
    with pytest.raises(ValueError, match=r"override 'max_seq_len.x': max_seq_len is 128, not a mapping or a list"):
        load_config(YAML, ['max_seq_len.x=1'])
    assert main([YAML, 'eval_loaders.2.label=x']) == 2
    assert capsys.readouterr().err == ("train.py: error: override 'eval_loaders.2.label': eval_loaders is a list "
                                       "with entries 0..1, not '2'\n")


def test_the_seed_fixes_the_initial_model(mix_index, mix_weights, tmp_path):
    """Same seed, same first-batch losses to the bit; another seed (same data order), another model."""
    def first_losses(name, seed):
        out = tmp_path / name
        callbacks = '{cluster_loss: {path: %s/clusters.jsonl, interval: 1}}' % out
        result = _run(_overrides(mix_index.root, mix_weights, out, steps=1, seed=seed, callbacks=callbacks,
                                 **{'train_loader.dataset.shuffle_seed': 17}))
        assert result.returncode == 0, result.stderr[-3000:]
        return json.loads(open(out / 'clusters.jsonl', encoding='utf-8').readline())['clusters']

    first = first_losses('a', 17)
    assert first_losses('b', 17) == first
    other = first_losses('c', 18)
    assert other.keys() == first.keys() and other != first
