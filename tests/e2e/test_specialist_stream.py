"""The specialist sample as a stream of the mixture (`--specialist-repeats R --tokens N`): tokenised
exactly like the index, drawn with exact counts and the repeat budget, deterministic and resumable,
covered by the mixture fingerprint, screened against the index's eval files, and every misuse refused
with a message that says what to do. Real Wikipedia text (the mixture fixtures)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest
from torch.utils.data import DataLoader

from cis_stream.dataset import ClusteredImportanceDataset
from cis_stream.index.job import build_index
from cis_stream.mixture import largest_remainder
from cis_stream.text.readers import read_documents
from cis_stream.weights import WeightOptions, compute_weights, read_weights, write_weights
from tests.helpers import STREAM_BUDGET as BUDGET
from tests.helpers import json_line, read_leaves, window_tokens, write_lines

COMMON = dict(batch_size=8, shuffle=True, shuffle_seed=5, num_canonical_nodes=1, sample_ids=True)
SEQ_LEN = 64  # the mixture index's samples


def _weights(index, files, path, **options) -> str:
    write_weights(compute_weights(index, [(files, 1.0)], WeightOptions(**options), str(path), progress=False),
                  str(path))
    return str(path)


@pytest.fixture
def with_stream(stream_weights) -> str:
    return stream_weights


def _epoch_ids(dataset) -> np.ndarray:
    return np.array([int(item['sample_id']) for item in dataset])


def test_the_stream_is_the_sample_tokenised_like_the_index_beside_the_weights(mix_index, split_dir, with_stream):
    weights = read_weights(with_stream, mix_index)
    record = weights['specialist']
    stream_root = os.path.join(os.path.dirname(with_stream), 'bio.specialist')
    assert record['dataset'] == 'bio.specialist' and os.path.isfile(os.path.join(stream_root, 'cis_index.json'))
    # Every token of every window the index's tokenizer cuts the sample into, in order, EOS-joined.
    texts = [d.text for d in read_documents([str(split_dir / 'specialist.jsonl')])]
    eos = mix_index.tokenizer.eos_id
    expected = np.concatenate([np.append(w, eos) for w in window_tokens(mix_index, texts)])
    from cis_stream.format.reader import CISIndex
    stream = CISIndex.open(stream_root)
    ((count, samples),) = read_leaves(stream).values()
    packed = np.concatenate(samples).astype(np.int64)
    assert count == record['samples'] and stream.fingerprint == record['fingerprint']
    assert stream.manifest['options']['seq_len'] == SEQ_LEN
    assert np.array_equal(packed[packed != eos], expected[expected != eos])
    # The share shows the sample 6 times in the budget, and the leaves take the rest.
    assert record['fraction'] == pytest.approx(6 * record['samples'] / BUDGET)
    assert record['expected_repeats'] == pytest.approx(6)
    repeats = np.asarray(weights['expected_repeats'])
    assert repeats @ mix_index.leaf_samples == pytest.approx((1 - record['fraction']) * BUDGET)


def test_the_dataset_draws_the_stream_with_exact_counts_and_the_repeat_budget(mix_index, with_stream):
    record = read_weights(with_stream, mix_index)['specialist']
    dataset = ClusteredImportanceDataset(mix_index.root, with_stream, epoch_size=BUDGET, **COMMON)
    proportions = np.append(np.asarray(read_weights(with_stream, mix_index)['leaf_proportions'])
                            * (1 - record['fraction']), record['fraction'])
    assert dataset.leaf_counts.tolist() == largest_remainder(proportions, BUDGET).tolist()
    ids = _epoch_ids(dataset)
    drawn = np.bincount(dataset.leaf_of(ids), minlength=mix_index.num_leaves + 1)
    assert drawn.tolist() == dataset.leaf_counts.tolist()
    assert drawn[-1] == round(6 * record['samples'])  # exactly 6 passes over the sample
    # The stream's items are the stream's samples, each drawn 6 times.
    stream_ids = ids[dataset.leaf_of(ids) == mix_index.num_leaves]
    distinct, times = np.unique(stream_ids, return_counts=True)
    assert len(distinct) == record['samples'] and np.all(times == 6)
    item = dataset[int(stream_ids[0])]
    assert int(item['input_ids'].max()) < mix_index.manifest['options']['tokenizer']['vocab_size']


def test_the_order_is_deterministic_resumable_and_fingerprinted(mix_index, mix_weights, with_stream):
    def loader_ids(workers: int) -> list[list[int]]:
        dataset = ClusteredImportanceDataset(mix_index.root, with_stream, epoch_size=600, **COMMON)
        return [b['sample_id'].tolist() for b in DataLoader(dataset, batch_size=8, num_workers=workers)]

    first = loader_ids(0)
    assert first == loader_ids(2)
    full = np.asarray(sum(first, []))
    resumed = ClusteredImportanceDataset(mix_index.root, with_stream, epoch_size=600, **COMMON)
    started = ClusteredImportanceDataset(mix_index.root, with_stream, epoch_size=600, **COMMON)
    iterator = iter(started)
    for _ in range(200):
        next(iterator)
    resumed.load_state_dict(started.state_dict(200, True))
    assert _epoch_ids(resumed).tolist() == full[200:].tolist()
    # The stream is part of the mixture's identity: a resume without it is refused.
    without = ClusteredImportanceDataset(mix_index.root, mix_weights, epoch_size=600, **COMMON)
    assert without.cis_fingerprint != started.cis_fingerprint
    with pytest.raises(ValueError, match='cannot resume'):
        without.load_state_dict(started.state_dict(200, True))


def test_a_changed_or_missing_stream_is_refused_with_the_fix(mix_index, split_dir, with_stream, tmp_path):
    copy = tmp_path / 'bio.weights.json'
    shutil.copy(with_stream, copy)
    with pytest.raises(ValueError, match='bio.specialist.*cannot be opened.*recompute the weights'):
        ClusteredImportanceDataset(mix_index.root, str(copy), **COMMON)
    # Rebuilt from other text under the same name: the fingerprint no longer matches.
    other = tmp_path / 'other.jsonl'
    write_lines(str(other), [json_line({'text': t}) for t in
                             [d.text for d in read_documents([str(split_dir / 'specialist_test.jsonl')])]])
    _weights(mix_index, [str(other)], tmp_path / 'bio.weights.json', specialist_fraction=0.2)
    shutil.copy(with_stream, copy)
    with pytest.raises(ValueError, match='made with the specialist stream .* but .*bio.specialist is'):
        ClusteredImportanceDataset(mix_index.root, str(copy), **COMMON)
    record = json.loads(open(with_stream).read())
    record['specialist']['dataset'] = '../elsewhere'
    copy.write_text(json.dumps(record))
    with pytest.raises(ValueError, match='field specialist.dataset'):
        ClusteredImportanceDataset(mix_index.root, str(copy), **COMMON)


def test_bad_specialist_options_are_refused(mix_index, split_dir, tmp_path):
    files = [str(split_dir / 'specialist.jsonl')]
    cases = [({'specialist_repeats': 4}, '--specialist-repeats needs --tokens'),
             ({'specialist_repeats': 4, 'specialist_fraction': 0.1, 'tokens': 10_000}, 'not both'),
             ({'specialist_fraction': 1.0}, 'between 0 and 1'),
             ({'specialist_repeats': -1, 'tokens': 10_000}, 'positive number of passes'),
             ({'tokens': 10_000}, 'give one of them too'),
             ({'specialist_repeats': 5, 'tokens': 10_000, 'specialist_max_fraction': 1.5}, 'between 0 and 1')]
    for options, message in cases:
        with pytest.raises(ValueError, match=message):
            compute_weights(mix_index, [(files, 1.0)], WeightOptions(**options), str(tmp_path / 'x.weights.json'),
                            progress=False)
    assert not os.path.exists(tmp_path / 'x.weights.json')
    # 50 passes would take the whole budget: the stream gets the most it may have, and says how many passes.
    capped = json.loads(open(_weights(mix_index, files, tmp_path / 'cap.weights.json', specialist_repeats=50,
                                      tokens=200 * SEQ_LEN, specialist_max_fraction=0.4)).read())['specialist']
    assert capped['fraction'] == 0.4 and capped['expected_repeats'] == pytest.approx(0.4 * 200 / capped['samples'])


@pytest.fixture(scope='module')
def screened_index(split_dir, small_tokenizer, tmp_path_factory):
    """A small index decontaminated against the specialist test split (a copy, to remove later)."""
    root = tmp_path_factory.mktemp('screened')
    evals = root / 'specialist_test.jsonl'
    shutil.copy(split_dir / 'specialist_test.jsonl', evals)
    pool = root / 'pool.jsonl'
    with open(split_dir / 'pool.jsonl', encoding='utf-8') as src:
        pool.write_text(''.join(src.readlines()[:600]), encoding='utf-8')
    return build_index([str(pool)], str(root / 'index'), embedder='lsi', levels=[4], window=128, seq_len=64,
                       tokenizer=small_tokenizer, exclude=[str(evals)], progress=False), evals


def test_the_stream_is_screened_against_the_index_eval_files(screened_index, split_dir, tmp_path):
    index, evals = screened_index
    eval_texts = [d.text for d in read_documents([str(evals)])]
    leaked = tmp_path / 'leaky.jsonl'
    lines = open(split_dir / 'specialist.jsonl', 'rb').read().splitlines(keepends=True)
    write_lines(str(leaked), lines[:40] + [json_line({'text': t}) for t in eval_texts[:3]])
    path = _weights(index, [str(leaked)], tmp_path / 'leaky.weights.json', specialist_fraction=0.3)
    record = json.loads(open(path).read())['specialist']
    assert record['decontaminated'] and record['excluded_documents'] == 3
    from cis_stream.format.reader import CISIndex
    stream = CISIndex.open(str(tmp_path / 'leaky.specialist'))
    assert stream.manifest['totals']['documents_indexed'] == 40
    # An eval file gone missing: refused, naming the way out; with decontaminate=False, made and said so.
    evals.rename(evals.with_suffix('.moved'))
    try:
        with pytest.raises(ValueError, match='is missing.*--no-decontaminate'):
            _weights(index, [str(leaked)], tmp_path / 'again.weights.json', specialist_fraction=0.3)
        unscreened = _weights(index, [str(leaked)], tmp_path / 'open.weights.json', specialist_fraction=0.3,
                              decontaminate=False)
        assert json.loads(open(unscreened).read())['specialist']['decontaminated'] is False
    finally:
        evals.with_suffix('.moved').rename(evals)


def test_the_cli_makes_the_stream_and_says_what_it_mixed(mix_index, split_dir, tmp_path):
    out = tmp_path / 'cli.weights.json'
    result = subprocess.run([sys.executable, '-m', 'cis_stream.cli', 'weights', '--index', mix_index.root,
                             '--specialist', str(split_dir / 'specialist.jsonl'), '--specialist-repeats', '5',
                             '--tokens', str(BUDGET * SEQ_LEN), '-o', str(out)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'specialist stream cli.specialist/' in result.stdout and '5.0 passes over the budget' in result.stdout
    assert (tmp_path / 'cli.specialist' / 'cis_index.json').is_file()
