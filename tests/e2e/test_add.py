"""`cis-stream add`: new documents go down the frozen tree into new shards of their leaves; counts
grow by exactly the new documents; the old version stays intact; its weights are refused."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest
from streaming import StreamingDataset

from cis_stream import cli
from cis_stream.dataset import ClusteredImportanceDataset
from cis_stream.format.files import sha256_file
from cis_stream.format.manifest import finish_manifest
from cis_stream.format.publish import link_tree, lock_staging
from cis_stream.format.reader import CISIndex
from cis_stream.index.add import add_to_index
from cis_stream.index.job import build_index
from cis_stream.report.inspect import inspect_index
from cis_stream.report.summary import index_summary
from cis_stream.report.summary import inspection_summary as summary
from cis_stream.text.readers import InputError
from cis_stream.text.tokens import make_windows
from cis_stream.weights import WeightOptions, compute_weights, write_weights
from tests.helpers import SMALL_OPTIONS, indexed_words, json_line, read_leaves, words_of, write_lines

NEW_TOPIC = 'Geography'


@pytest.fixture(scope='module')
def new_docs(wiki_records, tmp_path_factory):
    """120 real summaries of another topic, plus one planted bad line (line 3)."""
    texts = [r['text'] for r in wiki_records if r['topic'] == NEW_TOPIC][:120]
    path = str(tmp_path_factory.mktemp('new') / 'geo.jsonl')
    lines = [json_line({'text': t}) for t in texts]
    write_lines(path, lines[:2] + [b'{"text": 7}\n'] + lines[2:])
    return path, texts


def file_hashes(root: str) -> dict[str, str]:
    """sha256 of every file under `root`, by relative path."""
    return {os.path.relpath(os.path.join(folder, name), root): sha256_file(os.path.join(folder, name))
            for folder, _, names in os.walk(root) for name in names}


@pytest.fixture(scope='module')
def old_hashes(small_index):
    return file_hashes(small_index.root)


@pytest.fixture(scope='module')
def grown(small_index, new_docs, old_hashes, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('grown') / 'index')
    return add_to_index(small_index.root, [new_docs[0]], out, progress=False)


def test_add_leaves_every_byte_of_the_old_version_unchanged(small_index, grown, old_hashes):
    """The new version is staged as hard links to the old files: every writer must replace, not rewrite."""
    assert file_hashes(small_index.root) == old_hashes
    for name in ('cis_index.json', 'leaf_indexes.json.zst', 'rejects.jsonl'):
        assert not os.path.samefile(os.path.join(grown.root, name), os.path.join(small_index.root, name))


def test_shared_writers_replace_a_hard_linked_file_instead_of_writing_through_it(small_index, tmp_path):
    """finish_manifest and write_leaf_indexes (shared with the builder) on a staged copy of hard links."""
    before = file_hashes(small_index.root)
    staging = str(tmp_path / 'staging')
    link_tree(small_index.root, staging)
    leaf_index = os.path.join(staging, 'clusters', '00000', 'index.json')
    with open(leaf_index, encoding='utf-8') as handle:
        edited = json.dumps(json.load(handle), indent=2)
    os.unlink(leaf_index)  # a grown leaf, as add writes it: the bundle of leaf indexes changes
    with open(leaf_index, 'w', encoding='utf-8') as handle:
        handle.write(edited)
    finish_manifest(dict(small_index.manifest, timings={'add': 0.0}), staging, small_index.num_leaves)
    assert file_hashes(small_index.root) == before
    assert file_hashes(staging)['leaf_indexes.json.zst'] != before['leaf_indexes.json.zst']


def test_counts_grow_by_exactly_the_new_documents(small_index, grown, new_docs):
    old, new = small_index.manifest, grown.manifest
    texts = new_docs[1]
    windows = make_windows(small_index.tokenizer, texts, old['options']['window'])
    assert new['totals']['documents_indexed'] == old['totals']['documents_indexed'] + len(texts)
    assert new['totals']['documents_rejected'] == old['totals']['documents_rejected'] + 1
    assert new['totals']['windows'] == old['totals']['windows'] + len(windows.lengths)
    assert new['totals']['tokens'] == old['totals']['tokens'] + int(windows.lengths.sum())
    for level, info in enumerate(new['tree']['levels']):
        nodes = info['nodes']
        assert sum(n['windows'] for n in nodes) == new['totals']['windows']
        assert sum(n['samples'] for n in nodes) == new['totals']['samples']
        assert [n['parent'] for n in nodes] == [n['parent'] for n in old['tree']['levels'][level]['nodes']]
    # Each leaf's growth is the windows that `place` (the old index's own path) sends to it.
    placed = np.bincount(small_index.place(texts).nodes[:, -1], minlength=small_index.num_leaves)
    grew = grown.counts(len(grown.levels) - 1) - small_index.counts(len(small_index.levels) - 1)
    assert grew.tolist() == placed.tolist() and placed.sum() == len(windows.lengths)
    assert new['history'][-1]['fingerprint'] == small_index.fingerprint != grown.fingerprint
    assert new['inputs'][-1]['path'] == new_docs[0] and new['inputs'][-1]['rejected'] == 1
    with open(os.path.join(grown.root, 'rejects.jsonl'), encoding='utf-8') as handle:
        rejects = [json.loads(line) for line in handle]
    assert [(r['file'], r['line']) for r in rejects][-1] == (new_docs[0], 3)


def test_grown_leaves_keep_their_samples_and_append_the_new_windows(small_index, grown, new_docs):
    seq_len, eos = grown.manifest['options']['seq_len'], grown.tokenizer.eos_id
    placement = small_index.place(new_docs[1])
    windows = make_windows(small_index.tokenizer, new_docs[1], grown.manifest['options']['window'])
    old_leaves, new_leaves = read_leaves(small_index), read_leaves(grown)
    for leaf, (count, samples) in new_leaves.items():
        old_count, old_samples = old_leaves[leaf]
        assert all(np.array_equal(a, b) for a, b in zip(samples[:old_count], old_samples))
        rows = np.flatnonzero(placement.nodes[:, -1] == leaf)
        stream = [t for r in rows for t in list(windows.tokens[windows.starts[r]:][:windows.lengths[r]]) + [eos]]
        added = np.concatenate(samples[old_count:]) if count > old_count else np.zeros(0, int)
        assert len(added) == -(-len(stream) // seq_len) * seq_len
        assert added[:len(stream)].tolist() == stream and set(added[len(stream):].tolist()) <= {eos}


def test_old_weights_are_refused_with_the_command_to_recompute(small_index, grown, small_corpus, tmp_path):
    path = str(tmp_path / 'old.weights.json')
    write_weights(compute_weights(small_index, [(small_corpus.files[:1], 1.0)], WeightOptions(level=0)), path)
    with pytest.raises(ValueError, match='earlier version of .*cis-stream add.*cis-stream weights --index'):
        ClusteredImportanceDataset(grown.root, path, batch_size=4, num_canonical_nodes=1)
    fresh = str(tmp_path / 'new.weights.json')
    write_weights(compute_weights(grown, [(small_corpus.files[:1], 1.0)], WeightOptions(level=0)), fresh)
    dataset = ClusteredImportanceDataset(grown.root, fresh, batch_size=4, num_canonical_nodes=1)
    assert dataset.num_samples == grown.manifest['totals']['samples']


def test_inspect_summarises_a_grown_index(grown):
    """It read the build's total time, which a grown index does not have (KeyError)."""
    text = summary(inspect_index(grown.root))
    t = grown.manifest['totals']
    assert f"indexed {t['documents_indexed']:,} of {t['documents_read']:,} documents" in text
    assert 'grown by cis-stream add' in text


def test_adding_a_file_twice_is_refused(grown, new_docs):
    with pytest.raises(InputError, match='already in .*duplicate'):
        add_to_index(grown.root, [new_docs[0]], progress=False)


def test_add_command_replaces_the_index_in_place(small_index, new_docs, tmp_path):
    root = str(tmp_path / 'index')
    subprocess.run(['cp', '-r', small_index.root, root], check=True)
    result = subprocess.run([sys.executable, '-m', 'cis_stream.cli', 'add', '--index', root, new_docs[0]],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f'added {len(new_docs[1])} documents from 1 file(s)' in result.stdout
    with open(os.path.join(root, 'cis_index.json'), encoding='utf-8') as handle:
        manifest = json.load(handle)
    assert manifest['history'][0]['fingerprint'] == small_index.fingerprint
    assert sorted(os.listdir(tmp_path)) == ['index'], 'no staging or replaced copy left behind'
    leaf = int(np.argmax(np.asarray([n['samples'] for n in manifest['tree']['levels'][-1]['nodes']])))
    dataset = StreamingDataset(local=os.path.join(root, 'clusters', f'{leaf:05d}'), batch_size=1)
    assert len(dataset) == manifest['tree']['levels'][-1]['nodes'][leaf]['samples']


@pytest.mark.parametrize('where', ['in_place', 'out'])
@pytest.mark.parametrize('form', ['relative', 'absolute'])
def test_add_command_takes_relative_and_absolute_paths(form, where, small_index, new_docs, tmp_path, monkeypatch,
                                                       capsys):
    """The README's forms: `--index idx/` (relative, in place) failed with 'idx already exists'."""
    shutil.copytree(small_index.root, tmp_path / 'idx')
    monkeypatch.chdir(tmp_path)
    path = {'relative': lambda name: f'{name}/', 'absolute': lambda name: str(tmp_path / name)}[form]
    argv = ['add', '--index', path('idx'), new_docs[0]] + (['--out', path('v2')] if where == 'out' else [])
    assert cli.main(argv) == 0, capsys.readouterr().err
    published = 'v2' if where == 'out' else 'idx'
    assert CISIndex.open(str(tmp_path / published)).manifest['history'][0]['fingerprint'] == small_index.fingerprint
    assert sorted(os.listdir(tmp_path)) == sorted({'idx', published}), 'no staging or replaced copy left behind'
    if where == 'out':
        assert CISIndex.open(str(tmp_path / 'idx')).fingerprint == small_index.fingerprint


def test_add_is_refused_while_another_build_of_its_out_runs(small_index, new_docs, tmp_path, capsys):
    """Another job holds `<out>.building` (here this process, through a second lock): refused at once."""
    root = str(tmp_path / 'idx')
    shutil.copytree(small_index.root, root)
    with lock_staging(root):
        assert cli.main(['add', '--index', root, new_docs[0]]) == 2
        assert f'another build of {root} is running (pid {os.getpid()}' in capsys.readouterr().err
        assert not os.path.exists(root + '.building')
    assert CISIndex.open(root).fingerprint == small_index.fingerprint
    assert cli.main(['add', '--index', root, new_docs[0]]) == 0
    assert sorted(os.listdir(tmp_path)) == ['idx']


def test_add_refuses_an_out_inside_the_index(small_index, new_docs):
    with pytest.raises(ValueError, match='inside the index'):
        add_to_index(small_index.root, [new_docs[0]], os.path.join(small_index.root, 'v2'), progress=False)


def run_where_modes_bind(argv: list[str]) -> subprocess.CompletedProcess:
    """The CLI in a subprocess that file modes bind: as root (tests run as root), without the
    capabilities that override them, so a read-only folder refuses root as it would a user."""
    prefix = []
    if os.geteuid() == 0:
        if not shutil.which('setpriv'):
            pytest.skip('running as root without setpriv: read-only modes cannot be made to bind')
        caps = '-dac_override,-dac_read_search'
        prefix = ['setpriv', f'--inh-caps={caps}', f'--bounding-set={caps}']
    return subprocess.run([*prefix, sys.executable, '-m', 'cis_stream.cli', *argv], capture_output=True, text=True)


@pytest.fixture
def read_only_index(small_index, tmp_path):
    root = tmp_path / 'ro'
    shutil.copytree(small_index.root, root)
    for folder, _, names in os.walk(root):
        for name in names:
            os.chmod(os.path.join(folder, name), 0o444)
        os.chmod(folder, 0o555)
    yield str(root)
    for folder, _, _ in os.walk(root):
        os.chmod(folder, 0o755)


def test_add_from_a_read_only_index_publishes_elsewhere_and_cleans_up(read_only_index, new_docs, tmp_path):
    """Hard links keep the old files' read-only modes; the staging folders must still be writable."""
    (tmp_path / 'empty.jsonl').write_text('{"body": "no text"}\n', encoding='utf-8')
    failed = run_where_modes_bind(['add', '--index', read_only_index, str(tmp_path / 'empty.jsonl'),
                                   '--out', str(tmp_path / 'v2')])
    assert failed.returncode == 2 and 'no document could be indexed' in failed.stderr, failed.stderr
    assert sorted(os.listdir(tmp_path)) == ['empty.jsonl', 'ro'], 'a failed add leaves no staging directory'
    result = run_where_modes_bind(['add', '--index', read_only_index, new_docs[0], '--out', str(tmp_path / 'v2')])
    assert result.returncode == 0, result.stderr
    assert CISIndex.open(str(tmp_path / 'v2')).manifest['totals']['documents_indexed'] == \
        CISIndex.open(read_only_index).manifest['totals']['documents_indexed'] + len(new_docs[1])
    assert sorted(os.listdir(tmp_path)) == ['empty.jsonl', 'ro', 'v2']


# Decontaminated indexes ---------------------------------------------------------------------------

EVAL_TOPIC = 'Arts'
COPIES = {5: 3, 17: 10, 40: 15}   # line of the new file → line of the eval file it copies


@pytest.fixture(scope='module')
def screened(small_corpus, wiki_records, tmp_path_factory):
    """The small corpus indexed with --exclude (20 real Arts summaries, then two of the corpus's own
    documents, which the build excludes), and 60 new Geography summaries with exact copies of three
    eval documents planted (one upper-cased)."""
    root = tmp_path_factory.mktemp('screened')
    arts = [r['text'] for r in wiki_records if r['topic'] == EVAL_TOPIC][:20]
    evals = str(root / 'evals.jsonl')
    write_lines(evals, [json_line({'text': t}) for t in arts + small_corpus.texts[5:7]])
    index = build_index([small_corpus.root], str(root / 'index'), exclude=[evals], **SMALL_OPTIONS)
    assert index.manifest['totals']['documents_excluded'] == 2
    clean = [r['text'] for r in wiki_records if r['topic'] == NEW_TOPIC][200:260]
    lines = list(clean)
    for line, eval_line in sorted(COPIES.items()):
        lines.insert(line - 1, arts[eval_line - 1].upper() if line == 17 else arts[eval_line - 1])
    new = str(root / 'new.jsonl')
    write_lines(new, [json_line({'text': t}) for t in lines])
    return SimpleNamespace(index=index, evals=evals, arts=arts, new=new, lines=lines, clean=clean)


def excluded_entries(root: str, path: str) -> dict[int, str]:
    with open(os.path.join(root, 'excluded.jsonl'), encoding='utf-8') as handle:
        return {e['line']: e['reason'] for e in map(json.loads, handle) if e['file'] == path}


def eval_probes(screened) -> list[str]:
    """The first ten words of each copied eval document."""
    return [' '.join(words_of(screened.arts[eval_line - 1]).split()[:10]) for eval_line in COPIES.values()]


def test_add_screens_new_documents_against_the_index_eval_files(screened, tmp_path):
    old = screened.index
    grown = add_to_index(old.root, [screened.new], str(tmp_path / 'v2'), progress=False)
    assert excluded_entries(grown.root, screened.new) == {
        line: f'exact copy of evals.jsonl:{eval_line}' for line, eval_line in COPIES.items()}
    t, o = grown.manifest['totals'], old.manifest['totals']
    assert (t['documents_excluded'], t['documents_indexed']) == (
        o['documents_excluded'] + 3, o['documents_indexed'] + len(screened.clean))
    assert t['documents_read'] == t['documents_indexed'] + t['documents_rejected'] + t['documents_excluded']
    window = old.manifest['options']['window']
    assert t['windows'] == o['windows'] + len(make_windows(old.tokenizer, screened.clean, window).lengths)
    assert t['windows_excluded'] == o['windows_excluded'] + len(make_windows(
        old.tokenizer, [screened.lines[line - 1] for line in COPIES], window).lengths)
    d, before = grown.manifest['decontamination'], old.manifest['decontamination']
    assert d['files'] == before['files']
    exact = before['documents_excluded']['exact'] + 3
    assert d['documents_excluded'] == dict(before['documents_excluded'], exact=exact)
    assert grown.manifest['history'][-1]['excluded_documents'] == 3
    with open(os.path.join(old.root, 'excluded.jsonl'), 'rb') as a, open(os.path.join(grown.root, 'excluded.jsonl'),
                                                                          'rb') as b:
        assert b.read().startswith(a.read()), 'the old entries are kept, the new ones follow'
    words = indexed_words(grown)
    assert all(probe not in words for probe in eval_probes(screened))
    assert ' '.join(words_of(screened.clean[0]).split()[:10]) in words


def test_add_refuses_when_the_eval_files_are_gone_or_changed_unless_told_not_to_screen(screened, tmp_path, capsys):
    old, evals = screened.index, screened.evals
    os.rename(evals, evals + '.away')
    try:
        argv = ['add', '--index', old.root, screened.new, '--out', str(tmp_path / 'v2')]
        assert cli.main(argv) == 2
        err = capsys.readouterr().err
        assert f'{evals} is missing' in err and '--no-decontaminate' in err and 'Traceback' not in err
        with open(evals, 'w', encoding='utf-8') as handle:
            handle.write(json_line({'text': 'another eval set'}).decode())
        assert cli.main(argv) == 2
        assert f'{evals} has changed' in capsys.readouterr().err
        assert os.listdir(tmp_path) == [], 'nothing published or staged'
        assert cli.main(argv + ['--no-decontaminate']) == 0
        assert 'no longer claims decontamination' in capsys.readouterr().out
    finally:
        os.replace(evals + '.away', evals)
    grown = CISIndex.open(str(tmp_path / 'v2'))
    assert grown.manifest['decontamination'] is None
    assert grown.manifest['history'][-1]['decontamination_dropped'] == old.manifest['decontamination']
    t, o = grown.manifest['totals'], old.manifest['totals']
    assert (t['documents_excluded'], t['documents_indexed']) == (
        o['documents_excluded'], o['documents_indexed'] + len(screened.lines))
    words = indexed_words(grown)
    assert all(probe in words for probe in eval_probes(screened)), 'not screened: the claim had to go'
    assert f"{t['documents_excluded']:,} excluded" in index_summary(grown.manifest), 'read = indexed + ...'
