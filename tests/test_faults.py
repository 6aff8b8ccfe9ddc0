"""Fault injection: every fault ends in a precise message (file, leaf or line, and what to do) or
in an exact recovery with nothing lost; and the security rules (no pickle, safe YAML, checked
manifests and weights, paths confined to the index, no credentials in logs).

Covered elsewhere, not repeated here: truncated .gz/.zst and invalid UTF-8 at the reader
(test_readers.py), --strict, interrupted builds and atomic publishing (test_index.py), weights
for another index and non-normalised/negative/NaN proportions (test_weights.py,
test_dataset.py), YAML typos and kill -9 of training then auto-resume (test_train.py).
"""

from __future__ import annotations

import collections
import errno
import json
import logging
import os
import random
import re
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
import zstandard
from conftest import SMALL_OPTIONS, TESTS_DIR, Corpus, json_line, write_lines
from streaming import MDSWriter
from test_index import assert_totals_reconcile, leftovers

import cis_stream.format.leaves as leaves_module
import cis_stream.format.manifest as manifest_module
from cis_stream import cli
from cis_stream.dataset import ClusteredImportanceDataset, DamagedLeafError
from cis_stream.format.files import canonical_json, sha256_file
from cis_stream.format.layout import LEAF_INDEXES, NotAnIndexError
from cis_stream.format.reader import CISIndex
from cis_stream.index.job import build_index
from cis_stream.index.spool import WindowSpool
from cis_stream.text.readers import MAX_DOC_BYTES, Document, Reject, read_file
from cis_stream.training.train import load_config
from cis_stream.weights import read_weights

ROOT = os.path.dirname(TESTS_DIR)
COMMON = dict(batch_size=8, shuffle=False, num_canonical_nodes=1)
RAW_SHARD = re.compile(r'shard\.\d+\.mds')  # decompressed copies made by earlier reads


def copy_index(index: CISIndex, dst) -> str:
    """A pristine copy of an index: shards only in their published, compressed form."""
    shutil.copytree(index.root, dst, ignore=lambda _, names: [n for n in names if RAW_SHARD.fullmatch(n)])
    return str(dst)


def rejects_of(index: CISIndex) -> list[dict]:
    with open(os.path.join(index.root, 'rejects.jsonl'), encoding='utf-8') as handle:
        return [json.loads(line) for line in handle]


# Bad input, end to end: one messy corpus, one build, one test per fault ---------------------------

EMPTY_LINES = 100_000


@pytest.fixture(scope='module')
def messy(tmp_path_factory, small_corpus, wiki_records):
    """A corpus with one file per fault, built once; returns (index, expected Corpus, warnings)."""
    root = tmp_path_factory.mktemp('messy')
    good = [d['text'] for d in small_corpus.docs]
    docs, rejects = [], []

    def add(name, lines, expect):
        """expect: per line, the text of a document or ('reject', reason prefix) or None (unread)."""
        path = str(root / name)
        write_lines(path, lines)
        for line, item in enumerate(expect, 1):
            if isinstance(item, tuple):
                rejects.append({'file': path, 'line': line, 'reason': item[1]})
            elif item is not None:
                docs.append({'text': item, 'topic': '', 'file': path, 'line': line})
        return path

    add('a_good.jsonl', [json_line({'text': t}) for t in good], good)
    escaped_nul = 'A NUL character \x00 escaped in valid JSON is text like any other.'
    add('b_nul.jsonl', [b'{"text": "a raw NUL \x00 inside a JSON string"}\n', json_line({'text': escaped_nul}),
                        b'\x00\x00\x00\n'],
        [('reject', 'malformed JSON: Invalid control character'), escaped_nul, ('reject', 'malformed JSON')])
    after_empty = 'The only document after a hundred thousand empty lines.'
    add('c_empty.jsonl', [b'\n'] * EMPTY_LINES + [json_line({'text': after_empty})],
        [('reject', 'empty line')] * EMPTY_LINES + [after_empty])
    array_docs = [{'text': t} for t in good[:50]]
    add('d_array.jsonl', [json.dumps(array_docs, indent=2).encode() + b'\n'],
        [('reject', 'whole file skipped: a JSON array, not JSON lines')])
    add('e_array_line.jsonl', [json.dumps(array_docs).encode() + b'\n'],
        [('reject', 'expected a JSON object per line, got list; the file may be a JSON array')])
    add('f_field.jsonl', [json_line({'id': i, 'body': t}) for i, t in enumerate(good[:5])],
        [('reject', "missing text field 'text': the record has 'id', 'body'; choose one with --text-field")] * 5)
    repeated = 'This document appears three times in one file.'
    dup_texts = good[:10] + [repeated] * 3
    add('g_dups.jsonl', [json_line({'text': t}) for t in dup_texts], dup_texts)
    geography = [r['text'] for r in wiki_records if r['topic'] == 'Geography'][:1200]  # several zstd blocks
    for name in ('h_cut.jsonl.gz', 'i_cut.jsonl.zst'):
        path = str(root / name)
        write_lines(path, [json_line({'text': t}) for t in geography])
        blob = open(path, 'rb').read()
        open(path, 'wb').write(blob[:len(blob) * 6 // 10])
        records = list(read_file(path))  # the prefix the reader recovers (exactness: test_readers.py)
        assert 100 < len(records) - 1 < 1200 and isinstance(records[-1], Reject)
        for record in records:
            if isinstance(record, Document):
                docs.append({'text': record.text, 'topic': '', 'file': path, 'line': record.line})
            else:
                rejects.append({'file': path, 'line': record.line, 'reason': 'unreadable compressed data'})

    handler = _Collect()
    logging.getLogger('cis_stream').addHandler(handler)
    try:
        started = time.perf_counter()
        index = build_index([str(root)], str(tmp_path_factory.mktemp('messy_index') / 'index'), **SMALL_OPTIONS)
        seconds = time.perf_counter() - started
    finally:
        logging.getLogger('cis_stream').removeHandler(handler)
    corpus = Corpus(str(root), sorted({d['file'] for d in docs} | {r['file'] for r in rejects}), docs, rejects)
    return index, corpus, handler.records, seconds


class _Collect(logging.Handler):
    def __init__(self):
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record):
        self.records.append(record)


def _rejects_in(index, corpus, name):
    path = os.path.join(corpus.root, name)
    logged = [r for r in rejects_of(index) if r['file'] == path]
    expected = [r for r in corpus.rejects if r['file'] == path]
    assert [r['line'] for r in logged] == [r['line'] for r in expected], name
    for entry, want in zip(logged, expected):
        assert entry['reason'].startswith(want['reason']), (name, entry, want)
    return logged


def test_messy_corpus_reconciles_exactly(messy):
    """Every line of every faulty file is indexed or rejected with its file and line: the totals,
    per file and per node, reconcile, and the indexed text is exactly the good documents."""
    index, corpus, _, _ = messy
    assert_totals_reconcile(index, corpus)
    assert [r['file'] for r in rejects_of(index)] == [r['file'] for r in corpus.rejects]


def test_nul_bytes(messy):
    index, corpus, _, _ = messy
    logged = _rejects_in(index, corpus, 'b_nul.jsonl')
    assert [r['line'] for r in logged] == [1, 3]
    # The escaped NUL is valid JSON text: indexed, and its tokens counted (reconciled above).
    assert any('\x00' in d['text'] for d in corpus.docs)


def test_hundred_thousand_empty_lines_are_counted_not_logged_one_by_one(messy):
    index, corpus, warnings, seconds = messy
    stats = {s['path']: s for s in index.manifest['inputs']}[os.path.join(corpus.root, 'c_empty.jsonl')]
    assert (stats['documents'], stats['indexed'], stats['rejected']) == (EMPTY_LINES + 1, 1, EMPTY_LINES)
    assert index.manifest['rejects']['by_reason']['empty line'] == EMPTY_LINES
    _rejects_in(index, corpus, 'c_empty.jsonl')
    # One summary warning for all rejects (and one for duplicates), never one per line.
    assert len(warnings) == 2, [r.getMessage()[:80] for r in warnings]
    assert sum('rejects.jsonl' in r.getMessage() for r in warnings) == 1
    assert seconds < 120, f'the messy build took {seconds:.0f} s'


def test_json_array_files_are_named_with_the_fix(messy):
    index, corpus, _, _ = messy
    (pretty,) = _rejects_in(index, corpus, 'd_array.jsonl')
    assert 'jq -c' in pretty['reason']
    stats = {s['path']: s for s in index.manifest['inputs']}
    # A pretty-printed array is one reject for the file, not one per fragment line.
    assert stats[os.path.join(corpus.root, 'd_array.jsonl')]['rejected'] == 1
    (one_line,) = _rejects_in(index, corpus, 'e_array_line.jsonl')
    assert 'jq -c' in one_line['reason']


def test_wrong_text_field_names_the_fields_present(messy):
    index, corpus, _, _ = messy
    assert len(_rejects_in(index, corpus, 'f_field.jsonl')) == 5
    # All five count as one kind of reject, whatever fields each record has.
    assert index.manifest['rejects']['by_reason']["missing text field 'text'"] == 5


def test_wrong_text_field_everywhere_fails_with_the_hint(tmp_path, out_dir):
    path = str(tmp_path / 'content.jsonl')
    write_lines(path, [json_line({'content': f'document {i}'}) for i in range(20)])
    with pytest.raises(ValueError) as info:
        build_index([path], out_dir, **SMALL_OPTIONS)
    assert 'no document could be indexed' in str(info.value) and "missing text field 'text'" in str(info.value)
    assert (list(read_file(path))[0].reason ==
            "missing text field 'text': the record has 'content'; choose one with --text-field")
    assert not os.path.exists(out_dir) and leftovers(out_dir) == []


def test_duplicates_are_kept_and_counted(messy):
    index, corpus, warnings, _ = messy
    # g_dups.jsonl repeats 10 documents of a_good.jsonl and one new document three times (12), and
    # the two truncated files hold the same text up to where each was cut.
    repeats = sum(n - 1 for n in collections.Counter(d['text'] for d in corpus.docs).values())
    cut = [{d['text'] for d in corpus.docs if d['file'].endswith(name)} for name in ('h_cut.jsonl.gz', 'i_cut.jsonl.zst')]
    assert repeats == 12 + len(cut[0] & cut[1]) and len(cut[0] & cut[1]) > 100
    assert index.manifest['totals']['duplicate_documents'] == repeats
    assert index.manifest['totals']['documents_indexed'] == len(corpus.docs)  # kept
    (warning,) = [r.getMessage() for r in warnings if 'repeat an earlier one exactly' in r.getMessage()]
    assert warning.startswith(f'{repeats} indexed document(s)') and 'kept' in warning


def test_truncated_compressed_inputs_are_counted_in_the_manifest(messy):
    index, corpus, _, _ = messy
    assert index.manifest['rejects']['by_reason']['unreadable compressed data after this point'] == 2
    for name in ('h_cut.jsonl.gz', 'i_cut.jsonl.zst'):
        (cut,) = _rejects_in(index, corpus, name)
        assert cut['line'] > 100


# A 200 MB single-line document -----------------------------------------------------------------------

def _write_huge_line(path: str, size: int, before: str, after: str) -> None:
    """A .jsonl with a normal document, one `size`-byte line, and another normal one (streamed)."""
    chunk = ('lorem ipsum dolor sit amet ' * 40000).encode()
    with open(path, 'wb') as handle:
        handle.write(json_line({'text': before}))
        handle.write(b'{"text": "')
        written = 12  # the line is `size` bytes plus its newline
        while written < size:
            part = chunk[:size - written]
            handle.write(part)
            written += len(part)
        handle.write(b'"}\n')
        handle.write(json_line({'text': after}))


def test_200mb_line_is_rejected_with_bounded_memory_and_the_rest_indexed(tmp_path, small_corpus, out_dir):
    size = 200 * 1000 * 1000
    path = str(tmp_path / 'huge.jsonl')
    _write_huge_line(path, size, 'Before the huge line.', 'After the huge line.')
    tracemalloc.start()
    started = time.perf_counter()
    try:
        records = list(read_file(path))
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    seconds = time.perf_counter() - started
    assert [type(r).__name__ for r in records] == ['Document', 'Reject', 'Document']
    assert [r.line for r in records] == [1, 2, 3] and records[2].text == 'After the huge line.'
    assert records[1].reason == f'document too long: {size + 1:,} bytes, over --max-doc-bytes {MAX_DOC_BYTES:,}'
    # readline(cap + 1) joins its parts: about twice the cap, whatever the line's length.
    assert peak < 2 * MAX_DOC_BYTES + (4 << 20), f'reading the 200 MB line peaked at {peak / 2**20:.0f} MiB'
    assert seconds < 30, seconds

    started = time.perf_counter()
    index = build_index([small_corpus.files[0], path], out_dir, **SMALL_OPTIONS)
    seconds = time.perf_counter() - started
    os.remove(path)
    totals = index.manifest['totals']
    assert (totals['documents_indexed'], totals['documents_rejected']) == (len(small_corpus.docs) + 2, 1)
    assert index.manifest['rejects']['by_reason'] == {'document too long': 1}
    assert index.manifest['options']['max_doc_bytes'] == MAX_DOC_BYTES
    assert seconds < 120, f'indexing past a 200 MB line took {seconds:.0f} s'


@pytest.mark.parametrize('suffix', ['.jsonl', '.jsonl.gz', '.jsonl.zst', '.txt'])
def test_max_doc_bytes_is_a_cap_users_can_raise(tmp_path, suffix):
    text = ('word ' * 600_000).strip()  # 3 MB
    path = str(tmp_path / f'long{suffix}')
    if suffix == '.txt':
        open(path, 'w', encoding='utf-8').write(text)
    else:
        write_lines(path, [json_line({'text': 'short'}), json_line({'text': text}), json_line({'text': 'end'})])
    line = 1 if suffix == '.txt' else 2
    capped = [r for r in read_file(path, max_doc_bytes=1 << 20) if isinstance(r, Reject)]
    assert [(r.line, r.reason.split(':')[0]) for r in capped] == [(line, 'document too long')]
    texts = [r.text for r in read_file(path, max_doc_bytes=4 << 20)]
    assert text in texts and all(isinstance(r, Document) for r in read_file(path, max_doc_bytes=4 << 20))


# Disk full and kill -9 while indexing ---------------------------------------------------------------------

def _no_space(path='(injected)'):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


class _FullDiskWriter(MDSWriter):
    """An MDSWriter whose second shard write finds the disk full."""
    flushed = 0

    def flush_shard(self) -> None:
        type(self).flushed += 1
        if type(self).flushed > 1:
            raise _no_space(os.path.join(self.local, 'shard.00000.mds.zstd'))
        super().flush_shard()


@pytest.mark.parametrize('where', ['spool', 'shard', 'leaf_bundle'])
def test_disk_full_publishes_nothing_and_resumes(small_corpus, small_index, out_dir, monkeypatch, where):
    if where == 'spool':
        calls = []
        original = WindowSpool.append

        def append(self, *args):
            calls.append(1)
            if len(calls) > 1:
                raise _no_space(self._tokens.name)
            original(self, *args)
        monkeypatch.setattr(WindowSpool, 'append', append)
    elif where == 'shard':
        _FullDiskWriter.flushed = 0
        monkeypatch.setattr(leaves_module, 'MDSWriter', _FullDiskWriter)
    else:
        def bundle(*args):
            raise _no_space()
        monkeypatch.setattr(manifest_module, 'write_leaf_indexes', bundle)
    with pytest.raises(OSError) as info:
        build_index([small_corpus.root], out_dir, **SMALL_OPTIONS)
    assert info.value.errno == errno.ENOSPC
    assert not os.path.exists(out_dir), 'a half-written index was published'
    assert leftovers(out_dir) == ['index.building'], 'the finished work is kept to resume'
    monkeypatch.undo()  # space freed: the same command resumes and completes
    assert build_index([small_corpus.root], out_dir, **SMALL_OPTIONS).fingerprint == small_index.fingerprint
    assert leftovers(out_dir) == []


def test_disk_full_on_the_command_line_is_one_clear_line(small_corpus, out_dir, monkeypatch, capsys):
    _FullDiskWriter.flushed = 0
    monkeypatch.setattr(leaves_module, 'MDSWriter', _FullDiskWriter)
    code = cli.main(['index', small_corpus.root, '--out', out_dir, '--window', '64', '--levels', '2,4'])
    err = capsys.readouterr().err
    assert code == 1
    assert 'No space left on device' in err and 'nothing was published' in err and 'Traceback' not in err
    assert 'run the same command again to resume' in err
    assert not os.path.exists(out_dir) and leftovers(out_dir) == ['index.building']


KILL_SCRIPT = """
import sys
from conftest import SMALL_OPTIONS
from cis_stream.index.job import build_index
build_index([sys.argv[1]], sys.argv[2], **SMALL_OPTIONS)
"""


def test_kill_9_during_indexing_publishes_nothing_and_a_rerun_resumes_to_a_clean_run(small_corpus, small_index,
                                                                                      out_dir):
    """SIGKILL at each stage (once the stage's first file appears, plus a seeded random delay); each
    run resumes from what the killed ones finished."""
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([TESTS_DIR, ROOT, os.environ.get('PYTHONPATH', '')]))
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    staging = f'{out_dir}.building'
    killed_mid_build = 0
    for marker in ('_work', 'embedder', 'clusters', 'leaf_indexes.json.zst'):
        process = subprocess.Popen([sys.executable, '-c', KILL_SCRIPT, small_corpus.root, out_dir], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline and not os.path.exists(os.path.join(staging, marker)):
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if os.path.exists(out_dir):  # it finished before the kill: then it is whole
            assert process.returncode == 0 and CISIndex.open(out_dir).fingerprint == small_index.fingerprint
            shutil.rmtree(out_dir)
        else:
            assert process.returncode == -signal.SIGKILL
            killed_mid_build += os.path.isdir(staging)
    assert killed_mid_build >= 3, 'the kills must land inside the build'

    rerun = build_index([small_corpus.root], out_dir, **SMALL_OPTIONS)
    assert rerun.fingerprint == small_index.fingerprint
    assert CISIndex.open(out_dir).fingerprint == small_index.fingerprint
    assert leftovers(out_dir) == []


# Damaged leaves: missing, corrupted or truncated shards; a deleted index.json ------------------------------

def _leaf_sample_ids(dataset, leaf: int) -> np.ndarray:
    return np.flatnonzero(dataset.leaf_of(np.arange(dataset.num_samples)) == leaf)


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
            dataset[int(_leaf_sample_ids(dataset, leaf)[0])]
    message = str(info.value)
    assert message.startswith(f'leaf {leaf:05d}: {shard} '), message
    assert ('is missing' if damage == 'missing' else 'does not match its xxh64 hash') in message
    assert 'rebuild it with `cis-stream index' in message
    if access == 'index':
        # The other leaves still read, and the failed shard is not left "being prepared" forever
        # (Streaming would make the next reader of it wait without end).
        assert len(dataset[int(_leaf_sample_ids(dataset, 6)[0])]['input_ids']) == 64
        with pytest.raises(DamagedLeafError):
            dataset[int(_leaf_sample_ids(dataset, leaf)[-1])]
    else:
        # Streaming stops a dataset whose download thread failed; it keeps saying why.
        with pytest.raises(DamagedLeafError, match=f'leaf {leaf:05d}'):
            dataset[int(_leaf_sample_ids(dataset, 6)[0])]


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


# Security: no pickle, safe YAML, checked manifests and weights, confined paths ------------------------

def test_pickle_columns_are_refused_before_anything_is_unpickled(mix_index, tmp_path):
    root = copy_index(mix_index, tmp_path / 'index')
    leaf_dir = os.path.join(root, 'clusters', '00000')
    samples = int(mix_index.leaf_samples[0])
    marker = str(tmp_path / 'unpickled')

    class Payload:
        def __reduce__(self):
            return os.mkdir, (marker,)
    shutil.rmtree(leaf_dir)
    with MDSWriter(out=leaf_dir, columns={'tokens': 'pkl'}, compression='zstd', hashes=['xxh64']) as writer:
        for _ in range(samples):
            writer.write({'tokens': Payload()})
    with pytest.raises(DamagedLeafError) as info:
        dataset = ClusteredImportanceDataset(root, None, **COMMON)
        dataset[0]
    message = str(info.value)
    assert message.startswith(f'leaf 00000: cannot load {leaf_dir}/index.json') and 'pkl' in message
    assert 'allow_unsafe_types=True' not in message  # no advice to switch the protection off
    assert not os.path.exists(marker), 'a pickle was loaded'
    with pytest.raises(ValueError, match='sets .allow_unsafe_types. itself'):
        ClusteredImportanceDataset(root, None, allow_unsafe_types=True, **COMMON)


@pytest.mark.parametrize('name', ['../../outside.mds.zstd', '/tmp/outside.mds.zstd'])
def test_shard_names_outside_the_leaf_are_not_followed(mix_index, tmp_path, name):
    root = copy_index(mix_index, tmp_path / 'index')
    path = os.path.join(root, 'clusters', '00002', 'index.json')
    leaf_index = json.load(open(path))
    leaf_index['shards'][0]['zip_data']['basename'] = name
    json.dump(leaf_index, open(path, 'w'))
    with pytest.raises(DamagedLeafError) as info:
        ClusteredImportanceDataset(root, None, **COMMON)[0]
    assert str(info.value).startswith(f'leaf 00002: {path}: shards[0]: shard file {name!r} is not a plain')


def test_remote_bundle_cannot_place_files_outside_the_cache(mix_index, tmp_path):
    remote = copy_index(mix_index, tmp_path / 'remote')
    bundle_path = os.path.join(remote, LEAF_INDEXES)
    with open(bundle_path, 'rb') as handle:
        bundle = json.loads(zstandard.ZstdDecompressor().stream_reader(handle).read())
    bundle['../../../escaped'] = bundle.pop('00001')
    with open(bundle_path, 'wb') as handle:
        handle.write(zstandard.ZstdCompressor().compress(canonical_json(bundle)))
    manifest_path = os.path.join(remote, 'cis_index.json')
    manifest = json.load(open(manifest_path))
    manifest['leaf_indexes_sha256'] = sha256_file(bundle_path)  # a consistent, malicious remote
    json.dump(manifest, open(manifest_path, 'w'))
    cache = tmp_path / 'a' / 'b' / 'cache'
    with pytest.raises(NotAnIndexError, match=r'does not hold exactly the leaves 00000\.\.'):
        ClusteredImportanceDataset(remote, None, local=str(cache), **COMMON)
    assert not list(tmp_path.rglob('escaped*')) and not (cache / 'clusters').exists()


def _edit(manifest: dict, dotted: str, value):
    node = manifest
    keys = [int(k) if k.isdigit() else k for k in re.split(r'[.\[\]]+', dotted) if k]
    for key in keys[:-1]:
        node = node[key]
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


@pytest.mark.parametrize('field, value, problem', [
    ('fingerprint', KeyError, 'missing'),
    ('options.seq_len', '64', "expected an integer, got '64'"),
    ('options.window', 0, '0 is not >= 1'),
    ('options.token_column', 'pkl', "'pkl' is not one of"),
    ('options.embedder.name', 'os.system; rm -rf', 'does not match'),
    ('tree.levels[1].nodes[3].samples', -1, '-1 is not >= 0'),
    ('tree.levels[1].nodes[3].samples', 0, 'a leaf without samples'),
    ('tree.levels[1].nodes[3].parent', 99, '99 is not a node of level 0 (8 nodes)'),
    ('tree.levels[0].nodes[0].parent', 2, '2, but top-level nodes have parent -1'),
    ('rejects.file', '../../etc/passwd', 'does not match'),
    ('leaf_indexes_sha256', '/abs/path', 'does not match'),
])
def test_hand_edited_manifest_names_the_file_and_field(mix_index, tmp_path, field, value, problem):
    root = tmp_path / 'index'
    shutil.copytree(mix_index.root, root, ignore=lambda _, names: [n for n in names if n == 'clusters'])
    path = root / 'cis_index.json'
    manifest = json.loads(path.read_text())
    _edit(manifest, field, value)
    path.write_text(json.dumps(manifest))
    with pytest.raises(NotAnIndexError) as info:
        CISIndex.open(str(root))
    message = str(info.value)
    assert message.startswith(f'{path}: field {field}: ') and problem in message, message
    assert 'rebuild the index' in message


def test_embedder_named_in_a_manifest_must_be_an_embedder_class(mix_index, tmp_path):
    root = tmp_path / 'index'
    shutil.copytree(mix_index.root, root, ignore=lambda _, names: [n for n in names if n == 'clusters'])
    path = root / 'cis_index.json'
    for name in ('os:system', 'subprocess:Popen'):
        manifest = json.loads(path.read_text())
        manifest['options']['embedder']['name'] = name
        path.write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=f"embedder '{name}' is not an embedder class"):
            CISIndex.open(str(root)).embedder


@pytest.mark.parametrize('field, value, problem', [
    ('index_fingerprint', KeyError, 'missing'),
    ('index_fingerprint', '../other', 'does not match'),
    ('level', -1, '-1 is not >= 0'),
    ('leaf_proportions[0]', 'a lot', "expected a number, got 'a lot'"),
    ('leaf_proportions[0]', float('nan'), 'nan (proportions must be finite and non-negative)'),
    ('leaf_proportions[7]', -0.25, '-0.25 (proportions must be finite and non-negative)'),
])
def test_hand_edited_weights_name_the_file_and_field(mix_index, mix_weights, tmp_path, field, value, problem):
    weights = json.loads(open(mix_weights).read())
    _edit(weights, field, value)
    path = tmp_path / 'edited.weights.json'
    path.write_text(json.dumps(weights))
    with pytest.raises(ValueError) as info:
        read_weights(str(path), mix_index)
    assert str(info.value).startswith(f'{path}: field {field}: ') and problem in str(info.value), str(info.value)
    assert 'recompute it with `cis-stream weights`' in str(info.value)


def test_yaml_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / 'ran'
    config = tmp_path / 'evil.yaml'
    config.write_text(f'max_duration: 1ba\nmodel: !!python/object/apply:os.mkdir ["{marker}"]\n')
    with pytest.raises(ValueError) as info:
        load_config(str(config), [])
    assert str(info.value).startswith(f'{config}: invalid YAML') and 'python/object/apply:os.mkdir' in str(info.value)
    config.write_text('max_duration: 1ba\n')
    with pytest.raises(ValueError, match="override 'model=!!python/object/apply:os.mkdir"):
        load_config(str(config), [f'model=!!python/object/apply:os.mkdir ["{marker}"]'])
    assert not marker.exists()


def test_no_pickle_or_unsafe_loading_in_the_code():
    """Source scan of everything that ships: nothing that unpickles or loads YAML unsafely."""
    forbidden = re.compile(r'\bimport (c?pickle|dill|joblib|shelve)\b|allow_pickle\s*=\s*True|torch\.load\(|'
                           r'yaml\.(unsafe_)?load\(|yaml\.(Unsafe|Full)?Loader\b|allow_unsafe_types\s*=\s*True')
    found = []
    for folder in ('cis_stream', '.'):
        for name in sorted(os.listdir(os.path.join(ROOT, folder))):
            if name.endswith('.py'):
                for number, line in enumerate(open(os.path.join(ROOT, folder, name), encoding='utf-8'), 1):
                    if forbidden.search(line):
                        found.append(f'{folder}/{name}:{number}: {line.strip()}')
    assert found == []
    assert os.path.isfile(os.path.join(ROOT, 'cis_stream', 'dataset.py'))  # the scan saw the package


# A remote S3 server that goes away mid-run ---------------------------------------------------------

def _port_outside_ephemeral_range() -> int:
    """A free port below Linux's ephemeral range (32768-60999): while the gate is down, no outgoing
    connection can be given its number, so it can always listen again."""
    for port in random.Random(os.getpid()).sample(range(20000, 30000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(('127.0.0.1', port))
                return port
            except OSError:
                continue
    raise RuntimeError('no free port in 20000-30000')


class _Gate:
    """A TCP forwarder in front of the S3 server. Stopping it is, for the client, the server going
    away (connection refused); moto keeps its objects only in memory, so the server itself stays up."""

    def __init__(self, target: int):
        self.target = target
        self.port = _port_outside_ephemeral_range()
        self._listener = None
        self._open: list[socket.socket] = []

    def start(self) -> None:
        self._listener = socket.create_server(('127.0.0.1', self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self) -> None:
        self._listener.close()
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._open.clear()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(('127.0.0.1', self.target))
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def s3_server(monkeypatch):
    pytest.importorskip('moto', reason='the remote tests need moto[server] (pip install -e .[test])')
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'moto_server'), '-H', '127.0.0.1',
                               '-p', str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        secret = 'fake-secret-' + 'Zq9' * 10
        monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'cis-test-key')
        monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', secret)
        monkeypatch.setenv('AWS_DEFAULT_REGION', 'us-east-1')
        monkeypatch.setenv('AWS_MAX_ATTEMPTS', '1')  # botocore's own retries off: Streaming's are under test
        yield port, secret
    finally:
        server.kill()
        server.wait()


def test_remote_server_down_mid_run_retries_then_fails_clearly_without_leaking_secrets(
        mix_index, tmp_path, s3_server, monkeypatch, caplog, capfd):
    import boto3
    port, secret = s3_server
    client = boto3.client('s3', endpoint_url=f'http://127.0.0.1:{port}')
    client.create_bucket(Bucket='cis')
    root = copy_index(mix_index, tmp_path / 'upload')
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            client.upload_file(path, 'cis', f'idx/{os.path.relpath(path, root)}')
    gate = _Gate(port)
    gate.start()
    monkeypatch.setenv('S3_ENDPOINT_URL', f'http://127.0.0.1:{gate.port}')
    reference = ClusteredImportanceDataset(mix_index.root, None, **COMMON)

    with caplog.at_level(logging.DEBUG):
        dataset = ClusteredImportanceDataset('s3://cis/idx', None, local=str(tmp_path / 'cache'),
                                             download_retry=3, **COMMON)
        first, second, third = (int(_leaf_sample_ids(dataset, leaf)[0]) for leaf in (1, 2, 3))
        assert np.array_equal(dataset[first]['input_ids'], reference[first]['input_ids'])

        gate.stop()  # the server goes away mid-run, and comes back 1 s later
        threading.Timer(1.0, gate.start).start()
        started = time.perf_counter()
        assert np.array_equal(dataset[second]['input_ids'], reference[second]['input_ids'])
        assert time.perf_counter() - started >= 1.0, 'the first download attempts must have failed'

        gate.stop()  # gone for good
        started = time.perf_counter()
        with pytest.raises(DamagedLeafError) as info:
            dataset[third]
        seconds = time.perf_counter() - started
    message = str(info.value)
    assert message.startswith('leaf 00003: shard ') and 'Could not connect to the endpoint URL' in message
    assert 'fetching from s3://cis/idx/clusters/00003 failed after 3 attempt(s)' in message
    assert seconds < 30
    out, err = capfd.readouterr()
    for text in (message, repr(info.value.__cause__), caplog.text, out, err):
        assert secret not in text
    assert any(r.name.startswith('botocore') for r in caplog.records), 'the S3 client\'s debug logs were captured'
