"""Specialist weights: determinism, level rule, spreading, multi-task, smoothing, cap, validation."""

import json
import subprocess
import sys

import numpy as np
import pytest

from cis_stream import cli
from cis_stream.report.summary import weights_summary as summary
from cis_stream.weights import WeightOptions, compute_weights, parse_task, read_weights, write_weights
from tests.helpers import MIX_TOPIC


@pytest.fixture(scope='module')
def few_windows(split_dir, tmp_path_factory):
    """Three specialist documents: too few windows per cluster for the default level rule below the top."""
    path = tmp_path_factory.mktemp('few') / 'few.jsonl'
    with open(split_dir / 'specialist.jsonl', encoding='utf-8') as handle:
        path.write_text(''.join(handle.readlines()[:3]), encoding='utf-8')
    return str(path)


def test_min_per_cluster_zero_is_honoured_and_bad_values_are_refused(mix_index, few_windows, tmp_path):
    """`--min-per-cluster 0` used to become the default 10 (a truthiness test in the command line)."""
    levels = {}
    for value in ('0', '10'):
        out = tmp_path / f'{value}.weights.json'
        assert cli.main(['weights', '--index', mix_index.root, '--specialist', few_windows,
                         '--min-per-cluster', value, '-o', str(out)]) == 0
        levels[value] = json.loads(out.read_text())['level']
    assert levels == {'0': len(mix_index.levels) - 1, '10': 0}
    for bad in (-1.0, float('nan'), float('inf')):
        with pytest.raises(ValueError, match='--min-per-cluster'):
            WeightOptions(min_per_cluster=bad).validate(mix_index)


def test_same_inputs_give_byte_identical_weights(mix_index, split_dir, tmp_path):
    specialist = [str(split_dir / 'specialist.jsonl')]
    for name in ('a', 'b'):
        write_weights(compute_weights(mix_index.root, [(specialist, 1.0)]), str(tmp_path / f'{name}.json'))
    assert (tmp_path / 'a.json').read_bytes() == (tmp_path / 'b.json').read_bytes()


def test_weights_file_records_what_it_was_made_from(mix_weights, mix_index, split_dir):
    weights = read_weights(mix_weights, mix_index)
    assert weights['index_fingerprint'] == mix_index.fingerprint
    recorded = weights['tasks'][0]['inputs'][0]
    assert recorded['sha256'] == __import__('hashlib').sha256((split_dir / 'specialist.jsonl').read_bytes()).hexdigest()
    assert recorded['documents'] == sum(1 for _ in open(split_dir / 'specialist.jsonl'))
    assert sum(weights['leaf_proportions']) == pytest.approx(1.0)
    level = weights['level']
    target = np.asarray(weights['target_histogram'])
    generalist = np.asarray(weights['generalist_histogram'])
    nonzero = generalist > 0
    assert np.allclose(np.asarray(weights['importance_weights'])[nonzero], target[nonzero] / generalist[nonzero])
    assert len(target) == mix_index.levels[level]
    assert 0 < weights['ess_fraction'] <= 1


def test_cis_mass_lands_on_the_clusters_that_hold_the_specialist_topic(mix_weights, mix_index, pool_placement,
                                                                       pool_topics):
    """Measured against topic labels: the share of the topic in what CIS would draw."""
    weights = read_weights(mix_weights, mix_index)
    leaves = pool_placement.nodes[:, -1]
    is_topic = np.array([pool_topics[d] == MIX_TOPIC for d in pool_placement.doc_index])
    windows = np.bincount(leaves, minlength=mix_index.num_leaves)
    topic_share = np.bincount(leaves, weights=is_topic, minlength=mix_index.num_leaves) / np.maximum(windows, 1)
    cis_share = float(np.dot(weights['leaf_proportions'], topic_share))
    generalist_share = float(is_topic.mean())
    # Measured: 0.42 of CIS draws are the topic's windows, against 0.076 of the pool (5.5x).
    assert cis_share > 0.3
    assert cis_share > 3.5 * generalist_share


def test_multi_task_mixture_is_the_weighted_sum_of_task_histograms(mix_index, split_dir, other_topic_file):
    tasks = [([str(split_dir / 'specialist.jsonl')], 3.0), ([str(other_topic_file)], 1.0)]
    weights = compute_weights(mix_index, tasks, WeightOptions(level=1))
    histograms = [np.asarray(t['windows_per_level'][1]) / t['windows'] for t in weights['tasks']]
    assert np.allclose(weights['specialist_histogram'], 0.75 * histograms[0] + 0.25 * histograms[1])
    single = compute_weights(mix_index, tasks[:1], WeightOptions(level=1))
    assert np.allclose(single['specialist_histogram'], histograms[0])


def test_smoothing_mixes_in_the_generalist_histogram(mix_index, split_dir):
    task = [([str(split_dir / 'specialist.jsonl')], 1.0)]
    weights = compute_weights(mix_index, task, WeightOptions(level=1, smoothing=0.25))
    expected = 0.75 * np.asarray(weights['specialist_histogram']) + 0.25 * np.asarray(weights['generalist_histogram'])
    assert np.allclose(weights['target_histogram'], expected)
    assert weights['coverage'] == 1.0  # smoothing reaches every cluster


def test_max_repeat_caps_expected_passes_for_the_token_budget(mix_index, split_dir):
    task = [([str(split_dir / 'specialist.jsonl')], 1.0)]
    tokens = 2 * mix_index.manifest['totals']['sample_tokens']
    uncapped = compute_weights(mix_index, task, WeightOptions(level=1, smoothing=0.1))
    capped = compute_weights(mix_index, task, WeightOptions(level=1, smoothing=0.1, max_repeat=3.0, tokens=tokens))
    assert max(uncapped['expected_repeats']) * 2 > 3.0          # the cap binds here
    assert max(capped['expected_repeats']) <= 3.0 + 1e-9
    assert sum(capped['leaf_proportions']) == pytest.approx(1.0)


def test_bad_weight_files_and_options_get_clear_errors(mix_weights, mix_index, tmp_path):
    weights = json.loads(open(mix_weights).read())
    cases = {
        'other_index': dict(weights, index_fingerprint='0' * 64),
        'negative': dict(weights, leaf_proportions=[-0.5, 1.5] + weights['leaf_proportions'][2:]),
        'nan': dict(weights, leaf_proportions=[float('nan')] + weights['leaf_proportions'][1:]),
        'unnormalised': dict(weights, leaf_proportions=[2 * p for p in weights['leaf_proportions']]),
        'too_few': dict(weights, leaf_proportions=weights['leaf_proportions'][:3]),
        'no_such_level': dict(weights, level=2),
    }
    messages = {'other_index': 'recompute it', 'negative': 'non-negative', 'nan': 'finite',
                'unnormalised': 'sum to 1', 'too_few': 'leaf proportions for an index of',
                'no_such_level': 'field level: 2, but .* has levels 0..1'}
    for name, content in cases.items():
        path = tmp_path / f'{name}.json'
        path.write_text(json.dumps(content))
        with pytest.raises(ValueError, match=messages[name]):
            read_weights(str(path), mix_index)
    with pytest.raises(ValueError, match='no such weights file'):
        read_weights(str(tmp_path / 'missing.json'), mix_index)
    with pytest.raises(ValueError, match='FILE'):
        parse_task('specialist.jsonl')
    with pytest.raises(ValueError, match='--max-repeat needs --tokens'):
        WeightOptions(max_repeat=2.0).validate(mix_index)
    with pytest.raises(ValueError, match='levels 0..1'):
        WeightOptions(level=5).validate(mix_index)


def test_weights_cli_writes_the_file_and_prints_a_summary(mix_index, split_dir, tmp_path):
    out = tmp_path / 'cli.weights.json'
    result = subprocess.run([sys.executable, '-m', 'cis_stream.cli', 'weights', '--index', mix_index.root,
                             '--specialist', str(split_dir / 'specialist.jsonl'), '-o', str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert 'top clusters' in result.stdout and 'ESS' in result.stdout and 'most repeated' in result.stdout
    assert read_weights(str(out), mix_index)['index_fingerprint'] == mix_index.fingerprint
    result = subprocess.run([sys.executable, '-m', 'cis_stream.cli', 'weights', '--index', str(tmp_path),
                             '--specialist', str(split_dir / 'specialist.jsonl'), '-o', str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 2
    assert 'not a cis_stream index' in result.stderr and 'Traceback' not in result.stderr


def summary_row(text: str, cluster: int) -> list[float]:
    """The numbers of `cluster`'s row in the printed top-cluster table."""
    for line in text.splitlines():
        fields = line.split()
        if len(fields) == 5 and fields[0] == str(cluster):
            return [float(f) for f in fields[1:]]
    raise AssertionError(f'no row for cluster {cluster} in:\n{text}')


def test_summary_shows_the_specialist_histogram_beside_the_target(mix_index, split_dir):
    """Smoothing makes them differ: the column headed P(c|spec) used to show the smoothed target."""
    weights = compute_weights(mix_index, [([str(split_dir / 'specialist.jsonl')], 1.0)],
                              WeightOptions(level=1, smoothing=0.5))
    text = summary(weights)
    assert 'cluster  P(c|spec)   target  P(c|gen)   w(c)' in text
    top = int(np.argmax(weights['target_histogram']))
    spec, target, gen, w = summary_row(text, top)
    assert spec == pytest.approx(weights['specialist_histogram'][top], abs=5e-5)
    assert target == pytest.approx(weights['target_histogram'][top], abs=5e-5)
    assert gen == pytest.approx(weights['generalist_histogram'][top], abs=5e-5)
    assert abs(spec - target) > 1e-3


@pytest.fixture(scope='module')
def with_bad_lines(split_dir, tmp_path_factory):
    """The first 40 real specialist documents with two bad records planted (lines 3 and 10)."""
    with open(split_dir / 'specialist.jsonl', encoding='utf-8') as handle:
        lines = handle.readlines()[:40]
    lines.insert(2, '{"text": "unterminated\n')
    lines.insert(9, '{"body": "the text is elsewhere"}\n')
    path = tmp_path_factory.mktemp('bad') / 'bad_lines.jsonl'
    path.write_text(''.join(lines), encoding='utf-8')
    return str(path)


def test_rejected_specialist_records_are_counted_listed_and_reported(mix_index, with_bad_lines):
    weights = compute_weights(mix_index, [([with_bad_lines], 1.0)], WeightOptions(level=0))
    [record] = weights['tasks'][0]['inputs']
    assert (record['documents'], record['rejected']) == (40, 2)
    assert [r['line'] for r in record['rejects']] == [3, 10]
    assert record['rejects'][0]['reason'].startswith('malformed JSON')
    assert record['rejects'][1]['reason'].startswith("missing text field 'text': the record has 'body'")
    text = summary(weights)
    assert "specialist records: 40 used, 2 rejected {'malformed JSON': 1, \"missing text field 'text'\": 1}" in text
    assert 'bad_lines.jsonl:3: malformed JSON' in text and 'tasks[].inputs[].rejects' in text


def test_no_usable_specialist_document_says_why(mix_index, split_dir, tmp_path):
    path = tmp_path / 'wrong_field.jsonl'
    with open(split_dir / 'specialist.jsonl', encoding='utf-8') as handle:
        path.write_text(''.join(json.dumps({'body': json.loads(line)['text']}) + '\n'
                                for line in handle.readlines()[:20]), encoding='utf-8')
    with pytest.raises(ValueError) as err:
        compute_weights(mix_index, [([str(path)], 1.0)])
    message = str(err.value)
    assert "no usable specialist document in" in message
    assert "20 rejected {\"missing text field 'text'\": 20}" in message
    assert ("wrong_field.jsonl:1: missing text field 'text': the record has 'body'; choose one with --text-field"
            in message)


def test_a_sample_too_small_for_the_level_rule_is_said_so(mix_index, few_windows, split_dir, caplog):
    """Three documents: the rule falls back to the top level, and says it with the numbers."""
    weights = compute_weights(mix_index, [([few_windows], 1.0)])
    windows = weights['tasks'][0]['windows']
    occupied = int(np.count_nonzero(weights['tasks'][0]['windows_per_level'][0]))
    assert weights['level'] == 0 and windows / occupied < 10
    expected = (f'{windows} specialist window(s) over {occupied} occupied top-level cluster(s) '
                f'({windows / occupied:.1f} per cluster, fewer than the 10 specialist windows per occupied cluster')
    assert weights['level_rule'].startswith('the top level, as the sample is too small')
    assert expected in weights['level_rule']
    assert any(expected in r.getMessage() and r.levelname == 'WARNING' for r in caplog.records)
    caplog.clear()
    enough = compute_weights(mix_index, [([str(split_dir / 'specialist.jsonl')], 1.0)])
    assert enough['level_rule'] == 'deepest with >= 10 specialist windows per occupied cluster'
    assert not any('too small' in r.getMessage() for r in caplog.records)


def test_specialist_and_task_together_are_refused(mix_index, split_dir, other_topic_file, tmp_path, capsys):
    argv = ['weights', '--index', mix_index.root, '--specialist', str(split_dir / 'specialist.jsonl'),
            '--task', f'{other_topic_file}:1', '-o', str(tmp_path / 'w.json')]
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert 'give either --specialist' in err and 'not both' in err and 'one more --task' in err
    assert not (tmp_path / 'w.json').exists()
    with pytest.raises(SystemExit):
        cli.main(['weights', '--help'])
    assert 'JSON field holding the text of the specialist files' in capsys.readouterr().out
