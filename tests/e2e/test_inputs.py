"""Input formats end to end: a corpus as Parquet builds the very index the same text as JSON lines
builds (same fingerprint), with totals that reconcile and bad rows counted, listed and refused under
--strict. Real Wikipedia summaries, written with pyarrow."""

from __future__ import annotations

import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cis_stream.index.job import build_index
from cis_stream.text.readers import InputError
from tests.helpers import SMALL_OPTIONS, Corpus, assert_totals_reconcile


@pytest.fixture(scope='module')
def parquet_corpus(small_corpus, tmp_path_factory) -> Corpus:
    """The small corpus as two Parquet files (row groups of 40) with more columns than the text."""
    root = tmp_path_factory.mktemp('parquet_corpus')
    halves = [small_corpus.docs[:150], small_corpus.docs[150:]]
    files, docs = [], []
    for i, half in enumerate(halves):
        path = str(root / f'part-{i}.parquet')
        pq.write_table(pa.table({'id': [d['line'] for d in half],
                                 'text': [d['text'] for d in half], 'topic': [d['topic'] for d in half]}),
                       path, row_group_size=40)
        files.append(path)
        docs += [dict(d, file=path, line=row + 1) for row, d in enumerate(half)]
    return Corpus(str(root), files, docs)


def test_parquet_gives_the_index_of_the_same_text_as_json_lines(small_corpus, small_index, parquet_corpus, tmp_path):
    # The JSON-lines corpus as one file: make it two, like the Parquet one, for the same input records.
    jsonl = tmp_path / 'jsonl'
    jsonl.mkdir()
    for i, part in enumerate([small_corpus.docs[:150], small_corpus.docs[150:]]):
        with open(jsonl / f'part-{i}.jsonl', 'w', encoding='utf-8') as handle:
            handle.writelines(json.dumps({'text': d['text']}) + '\n' for d in part)
    from_jsonl = build_index([str(jsonl)], str(tmp_path / 'from_jsonl'), **SMALL_OPTIONS)
    from_parquet = build_index([parquet_corpus.root], str(tmp_path / 'from_parquet'), **SMALL_OPTIONS)
    assert from_parquet.fingerprint == from_jsonl.fingerprint
    assert from_parquet.manifest['totals']['input_bytes'] != from_jsonl.manifest['totals']['input_bytes']
    assert_totals_reconcile(from_parquet, parquet_corpus)


def test_bad_parquet_rows_are_counted_listed_and_refused_under_strict(small_corpus, tmp_path):
    texts = [d['text'] for d in small_corpus.docs[:60]]
    column = texts[:20] + [None] + texts[20:40] + [''] + texts[40:]
    path = str(tmp_path / 'rows.parquet')
    pq.write_table(pa.table({'text': pa.array(column, pa.string())}), path, row_group_size=16)
    index = build_index([path], str(tmp_path / 'index'), **dict(SMALL_OPTIONS, levels=[2]))
    totals = index.manifest['totals']
    assert (totals['documents_read'], totals['documents_indexed'], totals['documents_rejected']) == (62, 60, 2)
    with open(os.path.join(index.root, 'rejects.jsonl'), encoding='utf-8') as handle:
        rejects = [json.loads(line) for line in handle]
    assert [(r['line'], r['reason']) for r in rejects] == [
        (21, "row 21 (row group 1, row 4): text field 'text' is null"),
        (42, 'row 42 (row group 2, row 9): empty document')]
    with pytest.raises(InputError, match=r'rows.parquet:21: row 21 \(row group 1, row 4\).*--strict'):
        build_index([path], str(tmp_path / 'strict'), strict=True, **dict(SMALL_OPTIONS, levels=[2]))


def test_an_mds_dataset_gives_the_index_of_the_same_text_as_json_lines(small_corpus, small_index, tmp_path):
    from streaming import MDSWriter
    out = tmp_path / 'inputs' / 'small_mds'
    with MDSWriter(out=str(out), columns={'text': 'str', 'topic': 'str'}, compression='zstd', hashes=['xxh64'],
                   size_limit=1 << 15) as writer:
        for doc in small_corpus.docs:
            writer.write({'text': doc['text'], 'topic': doc['topic']})
    index = build_index([str(tmp_path / 'inputs')], str(tmp_path / 'index'), **SMALL_OPTIONS)
    assert index.fingerprint == small_index.fingerprint
    assert [s['path'] for s in index.manifest['inputs']] == [str(out)]
    assert_totals_reconcile(index, Corpus(str(tmp_path), [str(out)], [dict(d, file=str(out), line=i + 1)
                                                                      for i, d in enumerate(small_corpus.docs)]))


def test_pre_tokenised_mds_is_indexed_only_with_its_tokenizer_named(small_corpus, small_tokenizer, tmp_path):
    import numpy as np
    from streaming import MDSWriter

    from cis_stream.text.tokens import load_tokenizer
    tokenizer = load_tokenizer(small_tokenizer)
    out = tmp_path / 'tokens_mds'
    with MDSWriter(out=str(out), columns={'tokens': 'ndarray:uint16'}) as writer:
        for doc in small_corpus.docs[:120]:
            writer.write({'tokens': np.asarray(tokenizer.tokenizer.encode(doc['text']).ids, np.uint16)})
    options = dict(SMALL_OPTIONS, levels=[2], text_field='tokens')
    index = build_index([str(out)], str(tmp_path / 'index'), tokenizer=small_tokenizer, **options)
    assert index.manifest['totals']['documents_indexed'] == 120
    with pytest.raises(InputError, match='holds token ids .*name it with --tokenizer'):
        build_index([str(out)], str(tmp_path / 'refused'), strict=True, **options)
