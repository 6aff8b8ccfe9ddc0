"""Readers: every line of every supported file comes out as a Document or a Reject(file, line, reason)."""

from __future__ import annotations

import gzip
import json
import os
import random

import pytest
import zstandard

from cis_stream.text.readers import Document, InputError, Reject, expand_inputs, find_inputs, read_documents, read_file
from tests.helpers import PLANTED_BAD_LINES, json_line, write_lines

SUFFIXES = ['.jsonl', '.jsonl.gz', '.jsonl.zst', '.jsonl.bz2']


def split(records):
    docs = [r for r in records if isinstance(r, Document)]
    rejects = [r for r in records if isinstance(r, Reject)]
    return docs, rejects


@pytest.mark.parametrize('suffix', SUFFIXES)
def test_jsonl_formats_read_every_document(tmp_path, suffix):
    texts = [f'document {i}: ünïcödé text, "quotes" and\nnewlines {i * i}' for i in range(25)]
    path = str(tmp_path / f'docs{suffix}')
    write_lines(path, [json_line({'text': t, 'id': i}) for i, t in enumerate(texts)])
    docs, rejects = split(list(read_file(path)))
    assert rejects == []
    assert [d.text for d in docs] == texts
    assert [d.line for d in docs] == list(range(1, 26))
    assert all(d.path == path for d in docs)
    assert [d.doc_id for d in docs] == [f'{path}:{i}' for i in range(1, 26)]


def test_custom_text_field(tmp_path):
    path = str(tmp_path / 'docs.jsonl')
    write_lines(path, [json_line({'body': 'the body', 'text': 'not this'}), json_line({'text': 'no body'})])
    docs, rejects = split(list(read_file(path, text_field='body')))
    assert [d.text for d in docs] == ['the body']
    assert [r.line for r in rejects] == [2]
    assert rejects[0].reason.startswith("missing text field 'body': the record has 'text'; "
                                        "choose one with --text-field")


def test_txt_file_is_one_document(tmp_path):
    path = tmp_path / 'essay.txt'
    path.write_text('First line.\n\nSecond paragraph, with ünicode.\n', encoding='utf-8')
    (doc,) = list(read_file(str(path)))
    assert isinstance(doc, Document)
    assert doc.text == 'First line.\n\nSecond paragraph, with ünicode.\n'
    assert (doc.doc_id, doc.path, doc.line) == (str(path), str(path), 1)


@pytest.mark.parametrize('content, reason', [
    (b'', 'empty document'),
    (b'  \n\t\n', 'empty document'),
    (b'caf\xe9 latin-1 text', 'invalid UTF-8'),
])
def test_bad_txt_file_is_one_reject(tmp_path, content, reason):
    path = tmp_path / 'bad.txt'
    path.write_bytes(content)
    (reject,) = list(read_file(str(path)))
    assert isinstance(reject, Reject) and (reject.path, reject.line) == (str(path), 1)
    assert reject.reason.startswith(reason)
    if reason == 'invalid UTF-8':
        assert 'byte 3' in reject.reason  # where the bad byte is


@pytest.mark.parametrize('suffix', SUFFIXES)
def test_planted_bad_lines_are_rejected_with_file_line_and_reason(tmp_path, suffix):
    path = str(tmp_path / f'mixed{suffix}')
    lines, expected_docs, expected_rejects = [], [], []
    for i, (raw, reason) in enumerate(PLANTED_BAD_LINES):
        lines.append(json_line({'text': f'good document {i}'}))
        expected_docs.append((len(lines), f'good document {i}'))
        lines.append(raw)
        expected_rejects.append((len(lines), reason))
    lines.append(b'   \t \n')  # whitespace only: an empty line too
    expected_rejects.append((len(lines), 'empty line'))
    lines.append(json_line({'text': 'the last good one'}))
    expected_docs.append((len(lines), 'the last good one'))
    write_lines(path, lines)

    records = list(read_file(path))
    docs, rejects = split(records)
    assert len(records) == len(lines), 'one record per line: nothing dropped, nothing doubled'
    assert [r.line for r in records] == list(range(1, len(lines) + 1))
    assert [(d.line, d.text) for d in docs] == expected_docs
    assert [r.path for r in rejects] == [path] * len(expected_rejects)
    assert [r.line for r in rejects] == [line for line, _ in expected_rejects]
    for reject, (line, reason) in zip(rejects, expected_rejects):
        assert reject.reason.startswith(reason), (line, reject.reason)
    assert rejects[0].to_json() == {'file': path, 'line': 2, 'reason': rejects[0].reason}
    assert 'at column' in rejects[0].reason  # malformed JSON says where


def test_invalid_utf8_reason_names_the_byte(tmp_path):
    path = str(tmp_path / 'bytes.jsonl')
    write_lines(path, [b'{"text": "abc \xff"}\n'])
    (reject,) = list(read_file(path))
    assert isinstance(reject, Reject) and (reject.path, reject.line) == (path, 1)
    assert reject.reason.startswith('invalid UTF-8') and 'byte 14' in reject.reason


def test_lone_surrogate_escapes_are_rejected_with_their_place(tmp_path):
    path = str(tmp_path / 'escapes.jsonl')
    # A valid escaped pair is one character and stays; a lone half is not text.
    write_lines(path, [b'{"text": "smile \\ud83d\\ude00 ok"}\n', b'{"text": "caf\\u00e9 \\udc80 end"}\n'])
    good, bad = list(read_file(path))
    assert isinstance(good, Document) and good.text == 'smile \U0001F600 ok'
    assert isinstance(bad, Reject) and bad.line == 2
    assert bad.reason == 'invalid Unicode: lone surrogate U+DC80 at character 5 of the text (a bad JSON \\u escape)'


def _numbered_lines(n: int) -> list[bytes]:
    """Lines that compress poorly enough to span several zstd blocks and gzip reads."""
    rng = random.Random(0)
    vocab = [''.join(rng.choice('abcdefghijklmnopqrstuvwxyz') for _ in range(7)) for _ in range(3000)]
    return [json_line({'text': f'doc {i} ' + ' '.join(rng.choice(vocab) for _ in range(40))})
            for i in range(n)]


@pytest.mark.parametrize('suffix', ['.jsonl.gz', '.jsonl.zst', '.jsonl.bz2'])
@pytest.mark.parametrize('lines, keep', [(3000, 0.5), (3000, 0.97), (40, 0.7)],
                         ids=['many-blocks-half', 'many-blocks-tail', 'one-block'])
def test_truncated_compressed_file_yields_good_lines_then_one_reject(tmp_path, suffix, lines, keep):
    raw_lines = _numbered_lines(lines)
    path = str(tmp_path / f'cut{suffix}')
    write_lines(path, raw_lines)
    with open(path, 'rb') as handle:
        blob = handle.read()
    with open(path, 'wb') as handle:
        handle.write(blob[:int(len(blob) * keep)])

    records = list(read_file(path))
    docs, rejects = split(records)
    # The good lines: a prefix of the file, each exactly as written.
    assert [d.line for d in docs] == list(range(1, len(docs) + 1))
    assert [d.text for d in docs] == [json.loads(raw)['text'] for raw in raw_lines[:len(docs)]]
    assert len(docs) < lines
    # Then exactly one reject, last, at the line where reading stopped, saying the data is cut.
    # (A truncated file must never vanish silently, nor pass its cut line off as bad JSON.)
    assert len(rejects) == 1 and records[-1] is rejects[0], (
        f'truncated {suffix}: expected one "unreadable compressed data" reject after {len(docs)} '
        f'good lines, got {[(r.line, r.reason[:60]) for r in rejects]}')
    assert rejects[0].path == path
    assert rejects[0].line == len(docs) + 1
    assert rejects[0].reason.startswith('unreadable compressed data after this point'), (
        f'truncated {suffix}: the cut is reported as {rejects[0].reason!r}, not as unreadable '
        f'compressed data')


def test_concatenated_zstd_frames_are_all_read(tmp_path):
    first = b''.join(json_line({'text': f'first frame {i}'}) for i in range(10))
    second = b''.join(json_line({'text': f'second frame {i}'}) for i in range(10))
    compressor = zstandard.ZstdCompressor()
    path = tmp_path / 'frames.jsonl.zst'
    path.write_bytes(compressor.compress(first) + compressor.compress(second))
    docs, rejects = split(list(read_file(str(path))))
    assert rejects == [] and len(docs) == 20 and docs[-1].text == 'second frame 9'


def test_gzip_with_trailing_garbage_is_reported(tmp_path):
    path = tmp_path / 'garbage.jsonl.gz'
    path.write_bytes(gzip.compress(json_line({'text': 'fine'})) + b'not gzip at all')
    docs, rejects = split(list(read_file(str(path))))
    assert [d.text for d in docs] == ['fine']
    assert len(rejects) == 1 and rejects[0].line == 2
    assert rejects[0].reason.startswith('unreadable compressed data')


# expand_inputs ----------------------------------------------------------------------------------

@pytest.fixture
def tree_of_inputs(tmp_path):
    """root/a.jsonl, root/sub/b.jsonl.gz, root/sub/deeper/c.jsonl.zst, root/sub/d.txt, plus noise."""
    root = tmp_path / 'root'
    (root / 'sub' / 'deeper').mkdir(parents=True)
    files = {
        'a.jsonl': [json_line({'text': 'alpha'})],
        'sub/b.jsonl.gz': [json_line({'text': 'beta'})],
        'sub/deeper/c.jsonl.zst': [json_line({'text': 'gamma'})],
    }
    for name, lines in files.items():
        write_lines(str(root / name), lines)
    (root / 'sub' / 'd.txt').write_text('delta', encoding='utf-8')
    (root / 'README.md').write_text('not an input')
    (root / 'sub' / 'data.csv').write_text('text\nnot an input either\n')
    return root


def test_directory_is_walked_recursively_sorted_and_filtered(tree_of_inputs):
    root = tree_of_inputs
    files = expand_inputs([str(root)])
    assert files == sorted(files)
    assert files == [str(root / 'a.jsonl'), str(root / 'sub' / 'b.jsonl.gz'), str(root / 'sub' / 'd.txt'),
                     str(root / 'sub' / 'deeper' / 'c.jsonl.zst')]
    assert all(os.path.isabs(f) for f in files)
    texts = [r.text for r in read_documents(files)]
    assert texts == ['alpha', 'beta', 'delta', 'gamma']


def test_globs_and_duplicates(tree_of_inputs, monkeypatch):
    root = tree_of_inputs
    assert expand_inputs([str(root / '**' / '*.jsonl*')]) == [
        str(root / 'a.jsonl'), str(root / 'sub' / 'b.jsonl.gz'), str(root / 'sub' / 'deeper' / 'c.jsonl.zst')]
    assert expand_inputs([str(root / 'sub' / '*.txt')]) == [str(root / 'sub' / 'd.txt')]
    # Same file named three ways (file, glob, directory): listed once.
    monkeypatch.chdir(root)
    assert expand_inputs(['a.jsonl', str(root / 'a*.jsonl'), str(root)]) == expand_inputs([str(root)])


@pytest.mark.parametrize('make, message', [
    (lambda root: str(root / 'missing.jsonl'), 'no such file or directory'),
    (lambda root: str(root / 'README.md'), 'unsupported file type'),
    (lambda root: str(root / 'sub' / 'data.csv'), 'unsupported file type'),
    (lambda root: str((root / 'empty').mkdir() or root / 'empty'), 'directory holds no'),
    (lambda root: str((root / 'only_md').mkdir() or (root / 'only_md' / 'x.md').write_text('x')
                      and root / 'only_md'), 'directory holds no'),
    (lambda root: str(root / 'nothing-*.jsonl'), 'pattern matches no'),
    (lambda root: str(root / '**' / '*.parquet'), 'pattern matches no'),
], ids=['missing', 'unsupported-md', 'unsupported-csv', 'empty-dir', 'dir-without-inputs',
        'glob-no-match', 'recursive-glob-no-match'])
def test_expand_inputs_errors_name_the_path(tree_of_inputs, make, message):
    spec = make(tree_of_inputs)
    with pytest.raises(InputError) as info:
        expand_inputs([str(tree_of_inputs / 'a.jsonl'), spec])
    assert str(info.value).startswith(f'{spec}:'), str(info.value)
    assert message in str(info.value)
    assert isinstance(info.value, ValueError)


def test_other_files_under_the_inputs_are_listed_as_skipped(tree_of_inputs, caplog):
    root = tree_of_inputs
    (root / 'linked').symlink_to(root / 'sub', target_is_directory=True)
    found = find_inputs([str(root)])
    assert found.skipped == [
        {'path': str(root / 'README.md'), 'reason': found.skipped[0]['reason']},
        {'path': str(root / 'linked'), 'reason': 'a link to a directory, not followed: give its target as an input'},
        {'path': str(root / 'sub' / 'data.csv'), 'reason': found.skipped[0]['reason']}]
    assert found.skipped[0]['reason'].startswith('not an input format (.jsonl, .ndjson, .json (JSON lines) or .txt')
    # A glob lists what it matched and does not read; callers of expand_inputs get a warning.
    assert find_inputs([str(root / '*')]).skipped == found.skipped[:1]
    assert expand_inputs([str(root)]) == found.files
    assert [r.getMessage() for r in caplog.records] == [
        f"3 file(s) under the inputs skipped, not read: {root / 'README.md'}, {root / 'linked'}, "
        f"{root / 'sub' / 'data.csv'}"]
    with pytest.raises(InputError) as info:
        find_inputs([str(root)], strict=True)
    assert str(info.value).startswith(f"{root / 'README.md'}: not an input format")
    assert '--strict refuses to skip it (3 file(s)' in str(info.value)


@pytest.mark.parametrize('name', ['UPPER.JSONL', 'lines.json', 'lines.ndjson', 'Mixed.Jsonl.Gz', 'b.jsonl.bz2',
                                  'c.JSON.ZST'])
def test_json_lines_suffixes_in_any_case(tmp_path, name):
    path = str(tmp_path / name)
    write_lines(path, [json_line({'text': f'document {i}'}) for i in range(3)])
    assert find_inputs([str(tmp_path)]).files == [path] and find_inputs([str(tmp_path)]).skipped == []
    assert [d.text for d in read_file(path)] == ['document 0', 'document 1', 'document 2']


@pytest.mark.parametrize('name', ['essay.TXT', 'essay.txt.gz', 'essay.txt.zst', 'essay.txt.bz2'])
def test_text_files_plain_or_compressed(tmp_path, name):
    path = str(tmp_path / name)
    write_lines(path, ['Plain text, ünïcode.\nTwo lines.\n'.encode()])
    (doc,) = list(read_file(path))
    assert isinstance(doc, Document) and doc.text == 'Plain text, ünïcode.\nTwo lines.\n'


def test_compressed_text_over_the_size_cap_is_one_reject_with_its_size(tmp_path):
    path = str(tmp_path / 'big.txt.gz')
    write_lines(path, [b'word ' * 1000])
    (reject,) = list(read_file(path, max_doc_bytes=1000))
    assert reject.reason == 'document too long: 5,000 bytes, over --max-doc-bytes 1,000'


def test_pretty_printed_json_file_is_one_reject_with_the_fix(tmp_path):
    path = tmp_path / 'record.json'
    path.write_text(json.dumps({'text': 'one document', 'id': 1}, indent=2))
    (reject,) = list(read_file(str(path)))
    assert (reject.line, reject.reason) == (1, 'whole file skipped: a JSON document spread over lines, not JSON lines '
                                               '(one object per line): convert it, e.g. `jq -c . FILE > FILE.jsonl`')


@pytest.mark.parametrize('name', ['random.jsonl', 'random.txt'])
def test_binary_file_is_one_reject_for_the_whole_file(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(random.Random(0).randbytes(200_000))
    (reject,) = list(read_file(str(path)))
    assert reject.line == 1 and reject.reason.startswith('binary file, not text: ')
    assert ('of its first 65,536 bytes are NUL, control or invalid UTF-8 bytes; the whole file is skipped'
            in reject.reason)


def test_gzip_file_without_its_suffix_is_binary(tmp_path):
    path = tmp_path / 'packed.jsonl'
    path.write_bytes(gzip.compress(b''.join(_numbered_lines(2000))))
    (reject,) = list(read_file(str(path)))
    assert reject.reason.startswith('binary file') and 'needs its suffix, e.g. .jsonl.gz' in reject.reason


def test_latin1_text_is_rejected_per_line_with_the_conversion(tmp_path):
    path = tmp_path / 'latin.jsonl'
    path.write_bytes('{"text": "café au lait"}\n{"text": "naïve"}\n'.encode('latin-1'))
    rejects = list(read_file(str(path)))
    assert [r.line for r in rejects] == [1, 2]
    assert rejects[0].reason == ('invalid UTF-8: at byte 13; the file is likely latin-1 or cp1252, not UTF-8: '
                                 'convert it, e.g. `iconv -f latin1 -t utf-8 FILE > UTF8_FILE`')
