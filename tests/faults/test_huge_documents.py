"""A 200 MB single-line document: rejected with bounded memory while the rest of its file is indexed;
--max-doc-bytes is a cap users can raise."""

from __future__ import annotations

import os
import time
import tracemalloc

import pytest

from cis_stream.index.job import build_index
from cis_stream.text.readers import MAX_DOC_BYTES, Document, Reject, read_file
from tests.helpers import SMALL_OPTIONS, json_line, write_lines


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
