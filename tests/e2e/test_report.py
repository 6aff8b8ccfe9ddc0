"""`cis-stream inspect`: its numbers against the files, its plots, snippets, escaping and errors."""

from __future__ import annotations

import html
import json
import os
import re
import shutil

import numpy as np
import pytest
from PIL import Image
from streaming import StreamingDataset
from tokenizers import Tokenizer

from cis_stream import cli
from cis_stream.format.samples import EOS_MARK
from cis_stream.index.job import build_index
from cis_stream.report.html import REPORT_FILE, write_report
from cis_stream.report.inspect import SNIPPET_CHARS, describe_clusters, inspect_index, top_terms
from cis_stream.report.summary import inspection_summary as summary
from tests.helpers import SMALL_OPTIONS, json_line, write_lines

TOKENS = 3_000_000


def number(text: str) -> int:
    return int(text.replace(',', ''))


def listing(root: str) -> dict:
    """Every file under `root` with its size and mtime: the index must not change."""
    return {os.path.join(d, n): (os.stat(os.path.join(d, n)).st_size, os.stat(os.path.join(d, n)).st_mtime_ns)
            for d, _, names in os.walk(root) for n in names}


@pytest.fixture(scope='module')
def manifest(mix_index):
    with open(os.path.join(mix_index.root, 'cis_index.json'), encoding='utf-8') as handle:
        return json.load(handle)


@pytest.fixture(scope='module')
def weights_json(mix_weights):
    with open(mix_weights, encoding='utf-8') as handle:
        return json.load(handle)


@pytest.fixture(scope='module')
def report(mix_index, mix_weights, tmp_path_factory):
    """The summary and the HTML report of the mixture fixtures, and the index before and after."""
    before = listing(mix_index.root)
    insp = inspect_index(mix_index.root, mix_weights, TOKENS)
    out = str(tmp_path_factory.mktemp('report') / 'report')
    path = write_report(insp, out, progress=False)
    with open(path, encoding='utf-8') as handle:
        page = handle.read()
    return {'insp': insp, 'text': summary(insp), 'dir': out, 'path': path, 'html': page,
            'before': before, 'after': listing(mix_index.root)}


def expected_repeats(manifest, weights_json, budget):
    leaf_samples = np.asarray([n['samples'] for n in manifest['tree']['levels'][-1]['nodes']], np.float64)
    return np.asarray(weights_json['leaf_proportions']) * budget / leaf_samples


def ess_from_file(weights_json) -> float:
    target = np.asarray(weights_json['target_histogram'])
    generalist = np.asarray(weights_json['generalist_histogram'])
    return 1.0 / np.sum(target[generalist > 0] ** 2 / generalist[generalist > 0])


def test_summary_totals_match_the_manifest(report, manifest):
    text, t = report['text'], manifest['totals']
    m = re.search(r'indexed ([\d,]+) of ([\d,]+) documents \(([\d,]+) rejected', text)
    assert [number(g) for g in m.groups()] == [t['documents_indexed'], t['documents_read'], t['documents_rejected']]
    m = re.search(r'([\d,]+) windows, ([\d,]+) tokens, ([\d,]+) samples in \[([\d, ]+)\] clusters', text)
    assert [number(g) for g in m.groups()[:3]] == [t['windows'], t['tokens'], t['samples']]
    assert [int(x) for x in m.group(4).split(',')] == [len(level['nodes']) for level in manifest['tree']['levels']]
    m = re.search(r'sample tokens ([\d,]+) = ([\d,]+) text \+ ([\d,]+) EOS \+ ([\d,]+) pad', text)
    assert [number(g) for g in m.groups()] == [t['sample_tokens'], t['tokens'], t['eos_tokens'], t['pad_tokens']]
    assert f"rejects {manifest['rejects']['count']}" in text
    assert manifest['fingerprint'][:16] in text


def test_summary_mixture_numbers_are_recomputed_from_the_files(report, manifest, weights_json, mix_index):
    text = report['text']
    level = weights_json['level']
    assert f"level {level} ({len(weights_json['target_histogram'])} clusters;" in text
    ess = ess_from_file(weights_json)
    m = re.search(r'ESS ([\d.]+)% of the pool \(([\d,]+) samples\)', text)
    assert float(m.group(1)) == pytest.approx(100 * ess, abs=0.051)
    assert number(m.group(2)) == pytest.approx(ess * manifest['totals']['samples'], abs=1)
    # Generalist histogram of the weights file = the manifest's window counts at its level.
    windows = np.asarray([n['windows'] for n in manifest['tree']['levels'][level]['nodes']], np.float64)
    assert np.allclose(weights_json['generalist_histogram'], windows / windows.sum())
    target = np.asarray(weights_json['target_histogram'])
    rows = re.findall(r'^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+)$', text, re.M)
    assert [int(r[0]) for r in rows] == np.argsort(-target, kind='stable')[:5].tolist()
    samples = [n['samples'] for n in manifest['tree']['levels'][level]['nodes']]
    for c, t, g, w, s in rows:
        c = int(c)
        assert float(t) == pytest.approx(target[c], abs=5e-5)
        assert float(g) == pytest.approx(windows[c] / windows.sum(), abs=5e-5)
        assert float(w) == pytest.approx(target[c] / (windows[c] / windows.sum()), abs=5e-3)
        assert number(s) == samples[c]
    budget = TOKENS // manifest['options']['seq_len']
    assert f'budget {budget:,} samples of {manifest["options"]["seq_len"]} tokens' in text
    repeats = expected_repeats(manifest, weights_json, budget)
    m = re.search(r'max ([\d.]+)x \(leaf (\d+)\); (\d+) of (\d+) leaves repeated more than once: (.*)$', text, re.M)
    assert float(m.group(1)) == pytest.approx(repeats.max(), abs=5e-3)
    assert int(m.group(2)) == int(np.argmax(repeats))
    assert int(m.group(3)) == int(np.sum(repeats > 1)) > 0
    assert int(m.group(4)) == mix_index.num_leaves
    listed = [int(x) for x in re.findall(r'(\d+) \([\d.]+x\)', m.group(5))]
    assert listed == np.argsort(-repeats, kind='stable')[:len(listed)].tolist()
    assert all(repeats[leaf] > 1 for leaf in listed)


def test_default_budget_is_the_weights_files_own(mix_index, mix_weights, weights_json, manifest):
    insp = inspect_index(mix_index.root, mix_weights)
    assert insp.budget_samples == weights_json['budget_samples'] == manifest['totals']['samples']
    assert np.allclose(insp.repeats, weights_json['expected_repeats'])
    assert 'one pass over the pool' in summary(insp)


def test_specialist_histograms_per_level_agree_with_the_weights_file(report, weights_json):
    insp = report['insp']
    assert np.allclose(insp.specialist(weights_json['level']), weights_json['specialist_histogram'])
    for level in range(len(insp.index.levels)):
        assert insp.specialist(level).sum() == pytest.approx(1.0)


def test_html_shows_the_files_numbers(report, manifest, weights_json):
    page, t = report['html'], manifest['totals']
    for key in ('documents_read', 'documents_indexed', 'windows', 'tokens', 'eos_tokens', 'pad_tokens',
                'samples', 'sample_tokens'):
        assert f'<td>{t[key]:,}</td>' in page, key
    assert manifest['fingerprint'] in page
    ess = ess_from_file(weights_json)
    assert f'{ess:.1%} of the pool ({ess * t["samples"]:,.0f} samples)' in page
    repeats = expected_repeats(manifest, weights_json, TOKENS // manifest['options']['seq_len'])
    assert f'{int(np.sum(repeats > 1)):,} of {len(repeats):,} (max {repeats.max():.2f}x)' in page
    # Raw specialist ESS per level, from the task's window counts in the weights file.
    task = weights_json['tasks'][0]
    for level, level_info in enumerate(manifest['tree']['levels']):
        spec = np.asarray(task['windows_per_level'][level]) / task['windows']
        gen = np.asarray([n['windows'] for n in level_info['nodes']], np.float64)
        gen /= gen.sum()
        assert f'<td>{1 / np.sum(spec ** 2 / gen):.1%}</td>' in page


def test_report_is_self_contained_with_valid_plots(report):
    page = report['html']
    images = re.findall(r'<img src="([^"]+)"', page)
    assert sorted(images) == ['ess.png', 'histograms.png', 'importance.png', 'repetition.png']
    for name in images:
        with Image.open(os.path.join(report['dir'], name)) as image:
            assert image.format == 'PNG'
            assert image.size[0] >= 600 and image.size[1] >= 250
            image.verify()
    assert not re.search(r'(src|href)="(https?:)?//', page)
    assert '<script' not in page and '<link' not in page


def test_inspection_leaves_the_index_directory_unchanged(report):
    """Shards are decompressed into a private temporary directory, never into the index."""
    assert report['after'] == report['before']


def decode_leaf(index, leaf: int, tmp_path) -> list[str]:
    """Every sample of a leaf decoded through Streaming's StreamingDataset, on a copy of the leaf."""
    copy = str(tmp_path / f'leaf{leaf}')
    shutil.copytree(index.leaf_path(leaf), copy)
    dataset = StreamingDataset(local=copy, batch_size=1)
    tokenizer = Tokenizer.from_file(os.path.join(index.root, 'tokenizer.json'))
    eos = index.manifest['options']['tokenizer']['eos_id']
    texts = []
    for i in range(dataset.num_samples):
        ids = dataset[i]['tokens'].tolist()
        pieces, current = [], []
        for token in ids + [eos]:
            if token == eos:
                pieces.append(tokenizer.decode(current))
                current = []
            else:
                current.append(token)
        texts.append(EOS_MARK.join(p for p in pieces if p.strip()))
    del dataset
    return texts


def test_snippets_are_the_named_samples_of_their_leaf(report, mix_index, tmp_path):
    insp = report['insp']
    views = describe_clusters(insp, 3, progress=False)
    ancestors = mix_index.leaf_ancestors(insp.level)
    assert [v.cluster for v in views] == insp.ranking[:3].tolist()
    decoded = {}
    for view in views:
        assert len(view.snippets) == 3 and view.terms
        for leaf, sample, text in view.snippets:
            assert ancestors[leaf] == view.cluster
            if leaf not in decoded:
                decoded[leaf] = decode_leaf(mix_index, leaf, tmp_path)
            assert text == decoded[leaf][sample]
            shown = html.escape(text[:SNIPPET_CHARS] + ('…' if len(text) > SNIPPET_CHARS else ''))
            assert f'leaf {leaf}, sample {sample}</p><blockquote>{shown}</blockquote>' in report['html']
        # A cluster's top terms are words of its own samples.
        for leaf in view.leaves:
            if leaf not in decoded:
                decoded[leaf] = decode_leaf(mix_index, leaf, tmp_path)
        words = set(re.findall(r'\w+', ' '.join(' '.join(decoded[leaf]) for leaf in view.leaves).lower()))
        assert set(view.terms) <= words


def test_top_terms_name_each_topic(split_dir):
    with open(split_dir / 'pool.jsonl', encoding='utf-8') as handle:
        rows = [json.loads(line) for line in handle]
    topics = ('Mathematics', 'Geography', 'Arts')
    docs = [' '.join([r['text'] for r in rows if r['topic'] == topic][:40]) for topic in topics]
    terms = top_terms(docs)
    # Measured on this text: mathematics, geometry, ... | country, region, ... | art, music, ...
    assert 'mathematics' in terms[0] and 'country' in terms[1] and 'art' in terms[2]
    for doc, doc_terms in zip(docs, terms):
        assert len(doc_terms) == 8
        assert all(re.search(rf'\b{t}\b', doc.lower()) for t in doc_terms)
        assert not {'the', 'and', 'which'} & set(doc_terms)


def test_report_without_weights_ranks_clusters_by_size(small_index, tmp_path):
    insp = inspect_index(small_index.root)
    text = summary(insp)
    assert 'weights' not in text and 'ESS' not in text
    path = write_report(insp, str(tmp_path / 'r'), top=4, progress=False)
    assert sorted(os.listdir(tmp_path / 'r')) == ['histograms.png', REPORT_FILE]
    page = open(path, encoding='utf-8').read()
    shown = [int(c) for c in re.findall(r'<h3>cluster (\d+) \(level', page)]
    samples = small_index.leaf_samples
    assert shown == np.argsort(-samples, kind='stable')[:4].tolist()
    assert 'Top clusters by samples' in page


def test_text_and_paths_are_escaped_in_the_html(small_corpus, tmp_path):
    """Documents carrying markup, in an index whose path carries markup too."""
    payload = '<script>alert("cis")</script> & <b>bold</b>'
    source = tmp_path / 'markup.jsonl'
    write_lines(str(source), [json_line({'text': f'{d["text"]} {payload}'}) for d in small_corpus.docs[:120]])
    index = build_index([str(source)], str(tmp_path / 'idx<b>&"x"'), **SMALL_OPTIONS)
    insp = inspect_index(index.root)
    views = describe_clusters(insp, index.num_leaves, progress=False)
    assert any('<script>' in text for v in views for _, _, text in v.snippets)
    page = open(write_report(insp, str(tmp_path / 'r'), top=index.num_leaves, progress=False), encoding='utf-8').read()
    assert '<script' not in page and '<b>' not in page
    assert html.escape(payload) in page
    assert html.escape(index.root) in page and index.root not in page


def test_cli_inspect_prints_and_writes(mix_index, mix_weights, tmp_path, capsys):
    out = tmp_path / 'rep'
    assert cli.main(['inspect', mix_index.root, '--weights', mix_weights, '--tokens', '640000',
                     '--html', str(out), '--top', '2']) == 0
    printed = capsys.readouterr().out
    assert printed.startswith(f'index {mix_index.root}\n')
    assert 'budget 10,000 samples of 64 tokens (--tokens 640,000)' in printed
    assert printed.strip().endswith(f'wrote {out / REPORT_FILE}')
    assert len(re.findall(r'<h3>cluster', (out / REPORT_FILE).read_text(encoding='utf-8'))) == 2


@pytest.mark.parametrize('case, message', [
    ('other_index', 'was made for index'),
    ('not_index', 'not a cis_stream index (no cis_index.json)'),
    ('missing', 'no such index directory'),
    ('tokens_without_weights', '--tokens needs --weights'),
    ('too_few_tokens', 'less than one sample of 64 tokens'),
    ('html_is_a_file', 'exists and is not a directory'),
])
def test_cli_inspect_errors_are_clear(case, message, mix_index, mix_weights, small_index, tmp_path, capsys):
    (tmp_path / 'file.html').write_text('x')
    argv = {
        'other_index': [small_index.root, '--weights', mix_weights],
        'not_index': [str(tmp_path)],
        'missing': [str(tmp_path / 'nowhere')],
        'tokens_without_weights': [mix_index.root, '--tokens', '1000'],
        'too_few_tokens': [mix_index.root, '--weights', mix_weights, '--tokens', '10'],
        'html_is_a_file': [small_index.root, '--html', str(tmp_path / 'file.html')],
    }[case]
    assert cli.main(['inspect', *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith('cis-stream inspect: error: ') and message in err
    assert 'Traceback' not in err
    if case == 'other_index':
        assert f'recompute it with `cis-stream weights --index {small_index.root}' in err


def html_totals(page: str) -> dict[str, int]:
    """The report's Totals table: header → number."""
    table = re.search(r'<h2>Totals</h2><table>(.*?)</table>', page).group(1)
    headers = re.findall(r'<th[^>]*>([^<]*)</th>', table)
    values = re.findall(r'<td[^>]*>([^<]*)</td>', table)
    return dict(zip(headers, (number(v) for v in values)))


def test_html_totals_reconcile_with_excluded_documents(small_corpus, tmp_path):
    """An index built with --exclude: read = indexed + rejected + excluded (excluded was left out)."""
    evals = str(tmp_path / 'evals.jsonl')
    write_lines(evals, [json_line({'text': d['text']}) for d in small_corpus.docs[10:13]])
    index = build_index([small_corpus.root], str(tmp_path / 'idx'), exclude=[evals], **SMALL_OPTIONS)
    page = open(write_report(inspect_index(index.root), str(tmp_path / 'r'), top=1, progress=False),
                encoding='utf-8').read()
    totals = html_totals(page)
    assert totals['excluded'] == index.manifest['totals']['documents_excluded'] == 3
    assert totals['indexed'] + totals['rejected'] + totals['excluded'] == totals['documents read'] == 300


def test_a_hand_edited_weights_file_is_shown_as_training_draws_it(mix_index, mix_weights, weights_json, tmp_path):
    """All the mass moved to the leaves of the least weighted cluster; target_histogram left as it was."""
    level = weights_json['level']
    target = np.asarray(weights_json['target_histogram'])
    cluster = int(np.argmin(np.where(target > 0, target, np.inf)))
    leaves = np.flatnonzero(mix_index.leaf_ancestors(level) == cluster)
    proportions = np.zeros(mix_index.num_leaves)
    proportions[leaves] = 1 / len(leaves)
    path = tmp_path / 'edited.weights.json'
    path.write_text(json.dumps(dict(weights_json, leaf_proportions=proportions.tolist())), encoding='utf-8')
    insp = inspect_index(mix_index.root, str(path))
    text = summary(insp)
    rows = re.findall(r'^\s+(\d+)\s+([\d.]+)\s+([\d.]+)\s+([\d.]+)\s+([\d,]+)$', text, re.M)
    assert (int(rows[0][0]), float(rows[0][1])) == (cluster, 1.0)
    assert 'does not match its leaf_proportions' in text
    # All the mass on one cluster: the ESS is that cluster's share of the pool.
    assert insp.ess_fraction == pytest.approx(insp.generalist(level)[cluster])
    page = open(write_report(insp, str(tmp_path / 'r'), top=1, progress=False), encoding='utf-8').read()
    assert f'<h3>cluster {cluster} (level {level})</h3>' in page and 'target 1.0000' in page
    assert 'does not match its leaf_proportions' not in summary(inspect_index(mix_index.root, mix_weights))


@pytest.mark.parametrize('top', ['0', '-1', 'x'])
def test_inspect_refuses_a_top_that_is_not_positive(top, small_index, tmp_path, capsys):
    with pytest.raises(SystemExit) as done:
        cli.main(['inspect', small_index.root, '--html', str(tmp_path / 'r'), '--top', top])
    assert done.value.code == 2
    assert f"argument --top: '{top}': expected a positive whole number" in capsys.readouterr().err
    assert not (tmp_path / 'r').exists()
