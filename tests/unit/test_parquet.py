"""Parquet input: real Wikipedia summaries written with pyarrow, read row group by row group; every bad
row and bad file is a reject that names its row (and row group) or lists the file's columns."""

from __future__ import annotations

import re

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cis_stream.text.readers import Document, InputError, Reject, find_inputs, read_documents

TEXTS = 120


@pytest.fixture(scope='module')
def texts(wiki_records) -> list[str]:
    return [r['text'] for r in wiki_records[:TEXTS]]


def _write(path, columns: dict, row_group_size: int = 32) -> str:
    pq.write_table(pa.table(columns), str(path), row_group_size=row_group_size)
    return str(path)


def test_every_row_is_a_document_in_order_across_row_groups(tmp_path, texts):
    path = _write(tmp_path / 'wiki.parquet', {'id': list(range(len(texts))), 'text': texts})
    assert pq.ParquetFile(path).num_row_groups == 4
    docs = list(read_documents([path]))
    assert [d.text for d in docs] == texts
    assert [d.line for d in docs] == list(range(1, TEXTS + 1))
    assert docs[40].doc_id == f'{path}:41'


def test_a_struct_field_is_read_by_its_dotted_path(tmp_path, texts):
    path = _write(tmp_path / 'nested.parquet', {'meta': [{'body': t, 'words': len(t.split())} for t in texts]})
    assert [d.text for d in read_documents([path], 'meta.body')] == texts


@pytest.mark.parametrize('field, reason', [
    ('body', "no column 'body'; the file has id \\(int64\\), text \\(string\\), meta \\(struct\\), meta.body"),
    ('id', "column 'id' is int64, not a string column"),
    ('meta', "column 'meta' is a struct: name its text field with a dotted path \\(meta.body, meta.words\\)"),
    ('meta.title', "no field 'title' in 'meta'"),
    ('text.x', "column 'text' is string, not a struct"),
])
def test_a_wrong_text_field_is_one_reject_listing_the_columns(tmp_path, texts, field, reason):
    path = _write(tmp_path / 'cols.parquet', {'id': list(range(3)), 'text': texts[:3],
                                              'meta': [{'body': t, 'words': 1} for t in texts[:3]]})
    (reject,) = list(read_documents([path], field))
    assert isinstance(reject, Reject) and reject.line == 0
    assert reject.reason.startswith('whole file skipped: ')
    assert re.search(reason, reject.reason), reject.reason


def test_null_empty_and_too_long_rows_are_rejects_naming_row_and_row_group(tmp_path, texts):
    limit = max(len(t.encode('utf-8')) for t in texts[:10])
    column = texts[:5] + [None, '   ', 'é' * limit] + texts[5:10]
    path = _write(tmp_path / 'bad_rows.parquet', {'text': pa.array(column, pa.string())}, row_group_size=4)
    records = list(read_documents([path], max_doc_bytes=limit))
    assert [d.text for d in records if isinstance(d, Document)] == texts[:10]
    rejects = [(r.line, r.reason) for r in records if isinstance(r, Reject)]
    assert rejects == [(6, "row 6 (row group 1, row 1): text field 'text' is null"),
                       (7, 'row 7 (row group 1, row 2): empty document'),
                       (8, f'row 8 (row group 1, row 3): document too long: {2 * limit:,} bytes, over '
                           f'--max-doc-bytes {limit:,}')]


def test_a_truncated_file_or_a_csv_named_parquet_is_one_reject(tmp_path, texts):
    whole = (tmp_path / 'whole.parquet')
    _write(whole, {'text': texts})
    cut = tmp_path / 'cut.parquet'
    cut.write_bytes(whole.read_bytes()[:whole.stat().st_size // 2])
    csv = tmp_path / 'table.parquet'
    csv.write_text('text,id\nhello,1\n')
    for path in (cut, csv):
        (reject,) = list(read_documents([str(path)]))
        assert isinstance(reject, Reject) and 'not a readable Parquet file' in reject.reason
        assert 'whole file is skipped' in reject.reason


def test_directories_and_globs_find_parquet_files(tmp_path, texts):
    (tmp_path / 'data').mkdir()
    for i in range(2):
        _write(tmp_path / 'data' / f'part-{i}.parquet', {'text': texts[i * 10:(i + 1) * 10]})
    (tmp_path / 'data' / 'part-9.parquet.gz').write_bytes(b'')
    found = find_inputs([str(tmp_path / 'data')])
    assert [p.rsplit('/', 1)[1] for p in found.files] == ['part-0.parquet', 'part-1.parquet']
    assert [s['path'].rsplit('/', 1)[1] for s in found.skipped] == ['part-9.parquet.gz']
    assert find_inputs([str(tmp_path / 'data' / '*.parquet')]).files == found.files
    with pytest.raises(InputError, match='unsupported file type'):
        find_inputs([str(tmp_path / 'data' / 'part-9.parquet.gz')])
