"""Stream documents out of text files, one at a time, never loading a corpus whole.

Every document either comes out as a `Document` or is reported as a `Reject` with its file, line
and reason, so that callers can reconcile "documents read = indexed + rejected".
"""

from __future__ import annotations

import bz2
import glob
import gzip
import io
import json
import logging
import os
import re
from dataclasses import dataclass, field
from typing import Iterator

import zstandard

from cis_stream.text.mds import MDS_INDEX, is_mds_dir, read_mds
from cis_stream.text.parquet import read_parquet
from cis_stream.text.records import Document, InputError, Record, Reject, too_long
from cis_stream.text.remote import is_remote, list_remote, read_remote

log = logging.getLogger(__name__)

# Input formats, by suffix (any case): JSON lines (a `.json` file only where it is JSON lines: see
# _read_jsonl) or text (one document per file), each plain or compressed. Other files under an
# input directory are skipped, listed and counted (`InputFiles.skipped`).
JSONL_SUFFIXES = ('.jsonl', '.ndjson', '.json')
TEXT_SUFFIXES = ('.txt',)
PARQUET_SUFFIXES = ('.parquet',)
COMPRESSIONS = ('.gz', '.zst', '.bz2')
SUFFIXES_HELP = ('.jsonl, .ndjson, .json (JSON lines) or .txt, each optionally .gz, .zst or .bz2; .parquet; '
                 'or an MDS dataset directory (its index.json)')
# Longest document (a .jsonl line, or a whole .txt file) read, in bytes. Tokenising costs about
# 200 bytes of memory per byte of text (measured: a 16 MB line peaks at 3.1 GB), so a 200 MB
# single-line dump would need ~40 GB; longer documents are rejected, counted and logged instead,
# having been skipped in 1 MiB reads. Raise it (--max-doc-bytes) only with the memory to match.
MAX_DOC_BYTES = 8 << 20
_SKIP_CHUNK = 1 << 20
# A file whose first block (decompressed) is over this share of NUL, control or invalid UTF-8
# bytes is binary (an image, an archive, a compressed file without its suffix): one reject for the
# file, not one per "line". Text with a few stray NULs, or latin-1 text, stays far below it.
_SNIFF_BYTES = 1 << 16
_BINARY_SHARE = 0.3
_CONTROL_BYTES = bytes(b for b in range(32) if chr(b) not in '\t\n\r\x0b\x0c\x1b')
# Record fields named in a missing-text-field reject (enough to spot the right --text-field).
_FIELDS_SHOWN = 6
# JSON escapes can produce lone UTF-16 surrogates ("\ud800"), which are not Unicode text: no
# tokenizer takes them and UTF-8 cannot encode them.
_SURROGATE = re.compile('[\ud800-\udfff]')




def _split_name(path: str) -> tuple[str, str]:
    """The file's lower-case name without its compression suffix, and that suffix ('' if none)."""
    name = os.path.basename(path).lower()
    compression = next((c for c in COMPRESSIONS if name.endswith(c)), '')
    return name[:len(name) - len(compression)], compression


def _format(path: str) -> str | None:
    """'jsonl', 'txt' or 'parquet' by the file's suffix, or None for a file that is not an input."""
    name, compression = _split_name(path)
    if name.endswith(PARQUET_SUFFIXES):
        return None if compression else 'parquet'  # Parquet compresses inside the file
    return 'jsonl' if name.endswith(JSONL_SUFFIXES) else 'txt' if name.endswith(TEXT_SUFFIXES) else None


@dataclass
class InputFiles:
    """The files to read, sorted, and the files found under the inputs that are not read (with why)."""
    files: list[str]
    skipped: list[dict] = field(default_factory=list)  # {'path', 'reason'}

    def describe_skipped(self, shown: int = 5) -> str:
        names = ', '.join(s['path'] for s in self.skipped[:shown])
        more = f' and {len(self.skipped) - shown} more' if len(self.skipped) > shown else ''
        return f'{len(self.skipped)} file(s) under the inputs skipped, not read: {names}{more}'


def find_inputs(inputs: list[str], strict: bool = False) -> InputFiles:
    """Resolve files, directories (recursively) and globs into a sorted, de-duplicated file list.

    Sorting makes the document order, and so every downstream result, independent of the
    order in which the file system lists a directory. A file named explicitly must be an input
    format; other files found in a directory or by a glob, unreadable directories and links to
    directories are skipped and listed (an error with `strict`).
    """
    files: list[str] = []
    skipped: dict[str, str] = {}  # absolute path: reason
    other = f'not an input format ({SUFFIXES_HELP})'
    for spec in inputs:
        if is_remote(spec):
            found, not_inputs = list_remote(spec, lambda key: _format(key) is not None)
            if not found:
                raise InputError(f'{spec}: holds no input files ({SUFFIXES_HELP})')
            files.extend(item.url for item in found)
            skipped.update((url, other) for url in not_inputs)
        elif os.path.isdir(spec):
            found = []

            def unreadable(err: OSError) -> None:
                skipped[os.path.abspath(err.filename)] = f'unreadable directory: {err.strerror}'
            for root, dirs, names in os.walk(spec, onerror=unreadable):
                if is_mds_dir(root):  # an MDS dataset is one input: its shards are not files to read
                    found.append(root)
                    dirs.clear()
                    continue
                for name in dirs:
                    if os.path.islink(os.path.join(root, name)):
                        skipped[os.path.abspath(os.path.join(root, name))] = \
                            'a link to a directory, not followed: give its target as an input'
                for name in names:
                    path = os.path.join(root, name)
                    if _format(name):
                        found.append(path)
                    else:
                        skipped[os.path.abspath(path)] = other
            if not found:
                raise InputError(f'{spec}: directory holds no input files ({SUFFIXES_HELP})')
            files.extend(found)
        elif os.path.isfile(spec) and os.path.basename(spec) == MDS_INDEX and is_mds_dir(os.path.dirname(spec) or '.'):
            files.append(os.path.dirname(spec) or '.')
        elif os.path.isfile(spec):
            if not _format(spec):
                raise InputError(f'{spec}: unsupported file type; use {SUFFIXES_HELP}')
            files.append(spec)
        elif glob.has_magic(spec):
            matches = [f for f in glob.glob(spec, recursive=True) if os.path.isfile(f)]
            found = [f for f in matches if _format(f)]
            skipped.update((os.path.abspath(f), other) for f in matches if not _format(f))
            if not found:
                raise InputError(f'{spec}: pattern matches no input files ({SUFFIXES_HELP})')
            files.extend(found)
        else:
            raise InputError(f'{spec}: no such file or directory')
    result = InputFiles(sorted({f if is_remote(f) else os.path.abspath(f) for f in files}),
                        [{'path': path, 'reason': reason} for path, reason in sorted(skipped.items())])
    if strict and result.skipped:
        first = result.skipped[0]
        raise InputError(f"{first['path']}: {first['reason']}; --strict refuses to skip it "
                         f'({result.describe_skipped()}): move it out of the inputs or run without --strict')
    return result


def expand_inputs(inputs: list[str], strict: bool = False) -> list[str]:
    """The files of `find_inputs`; a skipped file is named in a warning."""
    found = find_inputs(inputs, strict)
    if found.skipped:
        log.warning('%s', found.describe_skipped())
    return found.files


class _ZstdFrames(io.RawIOBase):
    """Decompress concatenated zstd frames, raising EOFError if the input stops inside a frame.

    zstandard's stream_reader reports a clean end of file on truncated input, which would drop
    the rest of the file silently; this reader makes truncation an error the reader can log.
    """

    def __init__(self, raw):
        self._raw = raw
        self._decompressor = zstandard.ZstdDecompressor().decompressobj()
        self._pending = memoryview(b'')

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending:
            chunk = self._raw.read(1 << 17)
            if not chunk:
                if not self._decompressor.eof:
                    raise EOFError('zstd data ends inside a frame (truncated file)')
                return 0
            parts = []
            while chunk:
                if self._decompressor.eof:
                    self._decompressor = zstandard.ZstdDecompressor().decompressobj()
                parts.append(self._decompressor.decompress(chunk))
                chunk = self._decompressor.unused_data if self._decompressor.eof else b''
            self._pending = memoryview(b''.join(parts))
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_binary(path: str) -> io.BufferedIOBase:
    """The file's bytes, decompressed according to its suffix."""
    raw = open(path, 'rb')
    compression = _split_name(path)[1]
    if compression == '.gz':
        return gzip.GzipFile(fileobj=raw)
    if compression == '.zst':
        return io.BufferedReader(_ZstdFrames(raw))
    if compression == '.bz2':
        return bz2.BZ2File(raw)
    return raw


# A truncated or corrupt compressed stream raises one of these while it is read.
_STREAM_ERRORS = (OSError, EOFError, zstandard.ZstdError)


def _binary(path: str) -> str | None:
    """Why the file is binary rather than text (see _BINARY_SHARE), or None."""
    try:
        with _open_binary(path) as handle:
            block = handle.read(_SNIFF_BYTES)
    except _STREAM_ERRORS:
        return None  # reported by the reader, where reading stops
    if not block:
        return None
    invalid = block.decode('utf-8', 'replace').count('\ufffd') - block.decode('utf-8', 'ignore').count('\ufffd')
    strange = invalid + len(block) - len(block.translate(None, _CONTROL_BYTES))
    if strange <= _BINARY_SHARE * len(block):
        return None
    return (f'binary file, not text: {strange / len(block):.0%} of its first {len(block):,} bytes are NUL, control '
            f'or invalid UTF-8 bytes; the whole file is skipped (a compressed file needs its suffix, e.g. '
            f'.jsonl.gz; inputs are {SUFFIXES_HELP})')


def _invalid_utf8(err: UnicodeDecodeError) -> str:
    return (f'invalid UTF-8: at byte {err.start}; the file is likely latin-1 or cp1252, not UTF-8: convert it, '
            f'e.g. `iconv -f latin1 -t utf-8 FILE > UTF8_FILE`')


def _skip_rest_of_line(handle, read: int) -> int:
    """Read past the rest of an over-long line in bounded chunks; returns the line's length."""
    while True:
        chunk = handle.readline(_SKIP_CHUNK)
        read += len(chunk)
        if not chunk or chunk.endswith(b'\n'):
            return read


def _missing_field(text_field: str, record: dict) -> str:
    fields = ', '.join(repr(k) for k in list(record)[:_FIELDS_SHOWN]) or 'no fields'
    more = ', ...' if len(record) > _FIELDS_SHOWN else ''
    return f'missing text field {text_field!r}: the record has {fields}{more}; choose one with --text-field'


def _spread_json(raw: bytes, whole_json: bool) -> str | None:
    """What a first line that does not parse but opens a JSON document spread over lines is: a
    pretty-printed array (any suffix) or, in a `.json` file, any pretty-printed JSON."""
    start = raw.lstrip()[:1]
    if start != b'[' and not (whole_json and start == b'{'):
        return None
    try:
        json.loads(raw)
    except ValueError:
        return JSON_ARRAY_HINT if start == b'[' else JSON_DOCUMENT_HINT
    return None


JSON_ARRAY_HINT = ('a JSON array, not JSON lines (one object per line): convert it, '
                   'e.g. `jq -c ".[]" FILE > FILE.jsonl`')
JSON_DOCUMENT_HINT = ('a JSON document spread over lines, not JSON lines (one object per line): convert it, '
                      'e.g. `jq -c . FILE > FILE.jsonl`')


def _read_jsonl(path: str, text_field: str, max_bytes: int) -> Iterator[Record]:
    whole_json = _split_name(path)[0].endswith('.json')
    line_no = 0
    with _open_binary(path) as handle:
        while True:
            try:
                raw = handle.readline(max_bytes + 1)
                if len(raw) > max_bytes and not raw.endswith(b'\n'):
                    yield Reject(path, line_no + 1, too_long(_skip_rest_of_line(handle, len(raw)), max_bytes))
                    line_no += 1
                    continue
            except _STREAM_ERRORS as err:
                # Truncated or corrupt compressed stream: what was read stays indexed, the rest
                # of the file is reported once, at the line where reading stopped.
                yield Reject(path, line_no + 1, f'unreadable compressed data after this point: {err}')
                return
            if not raw:
                return
            line_no += 1
            if not raw.strip():
                yield Reject(path, line_no, 'empty line')
                continue
            spread = _spread_json(raw, whole_json) if line_no == 1 else None
            if spread:
                # Each following line would be a fragment of the document: one reject for the file.
                yield Reject(path, 1, f'whole file skipped: {spread}')
                return
            try:
                line = raw.decode('utf-8')
            except UnicodeDecodeError as err:
                yield Reject(path, line_no, _invalid_utf8(err))
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as err:
                yield Reject(path, line_no, f'malformed JSON: {err.msg} at column {err.colno}')
                continue
            if not isinstance(record, dict):
                hint = f'; the file may be {JSON_ARRAY_HINT}' if isinstance(record, list) and line_no == 1 else ''
                yield Reject(path, line_no, f'expected a JSON object per line, got {type(record).__name__}{hint}')
                continue
            if text_field not in record:
                yield Reject(path, line_no, _missing_field(text_field, record))
                continue
            text = record[text_field]
            if not isinstance(text, str):
                yield Reject(path, line_no, f'text field {text_field!r} is {type(text).__name__}, not a string')
                continue
            if not text.strip():
                yield Reject(path, line_no, 'empty document')
                continue
            surrogate = None if text.isascii() else _SURROGATE.search(text)
            if surrogate:
                yield Reject(path, line_no, f'invalid Unicode: lone surrogate U+{ord(surrogate.group()):04X} at '
                                            f'character {surrogate.start()} of the text (a bad JSON \\u escape)')
                continue
            yield Document(f'{path}:{line_no}', path, line_no, text)


def _read_txt(path: str, max_bytes: int) -> Iterator[Record]:
    with _open_binary(path) as handle:
        try:
            raw = handle.read(max_bytes + 1)
            if len(raw) > max_bytes:
                size = len(raw) + sum(len(chunk) for chunk in iter(lambda: handle.read(_SKIP_CHUNK), b''))
                yield Reject(path, 1, too_long(size, max_bytes))
                return
        except _STREAM_ERRORS as err:
            yield Reject(path, 1, f'unreadable compressed data: {err}')
            return
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as err:
        yield Reject(path, 1, _invalid_utf8(err))
        return
    if not text.strip():
        yield Reject(path, 1, 'empty document')
        return
    yield Document(path, path, 1, text)


def read_file(path: str, text_field: str = 'text', max_doc_bytes: int = MAX_DOC_BYTES,
              tokenizer=None) -> Iterator[Record]:
    """Yield the documents and rejects of one input; an unreadable or binary file is one reject.

    `tokenizer` (the index's, where the user named it) decodes token-id columns of MDS datasets.
    """
    if is_remote(path):
        yield from read_remote(path, lambda local: read_file(local, text_field, max_doc_bytes, tokenizer))
        return
    try:
        if os.path.isdir(path):
            yield from read_mds(path, text_field, max_doc_bytes, tokenizer)
            return
        if _format(path) == 'parquet':
            yield from read_parquet(path, text_field, max_doc_bytes)
            return
        binary = _binary(path)
        if binary:
            yield Reject(path, 1, binary)
        elif _format(path) == 'txt':
            yield from _read_txt(path, max_doc_bytes)
        else:
            yield from _read_jsonl(path, text_field, max_doc_bytes)
    except OSError as err:
        yield Reject(path, 0, f'unreadable file: {err.strerror or err}')


def read_documents(files: list[str], text_field: str = 'text',
                   max_doc_bytes: int = MAX_DOC_BYTES) -> Iterator[Record]:
    """Yield every record of every file, in order."""
    for path in files:
        yield from read_file(path, text_field, max_doc_bytes)
