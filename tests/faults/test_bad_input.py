"""Bad input, end to end: one messy corpus (a file per fault), built once; every line of every faulty
file is indexed or rejected with its file, line and a reason that says what to do.

Truncated .gz/.zst and invalid UTF-8 at the reader itself: unit/test_readers.py; --strict, the
rejects log and its counts on clean text: e2e/test_index.py.
"""

from __future__ import annotations

import collections
import json
import logging
import os
import time

import pytest

from cis_stream.index.job import build_index
from cis_stream.text.readers import Document, Reject, read_file
from tests.helpers import SMALL_OPTIONS, Corpus, assert_totals_reconcile, json_line, leftovers, write_lines


def rejects_of(index) -> list[dict]:
    with open(os.path.join(index.root, 'rejects.jsonl'), encoding='utf-8') as handle:
        return [json.loads(line) for line in handle]


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
        records = list(read_file(path))  # the prefix the reader recovers (exactness: unit/test_readers.py)
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
    cut = [{d['text'] for d in corpus.docs if d['file'].endswith(name)}
           for name in ('h_cut.jsonl.gz', 'i_cut.jsonl.zst')]
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
