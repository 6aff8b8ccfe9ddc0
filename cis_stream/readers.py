"""Stream documents out of text files, one at a time, never loading a corpus whole.

Every document either comes out as a `Document` or is reported as a `Reject` with its file, line
and reason, so that callers can reconcile "documents read = indexed + rejected".
"""

from __future__ import annotations

import glob
import gzip
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Iterator, Union

import zstandard

SUPPORTED_SUFFIXES = ('.jsonl', '.jsonl.gz', '.jsonl.zst', '.txt')
# Longest document (a .jsonl line, or a whole .txt file) read, in bytes. Tokenising costs about
# 200 bytes of memory per byte of text (measured: a 16 MB line peaks at 3.1 GB), so a 200 MB
# single-line dump would need ~40 GB; longer documents are rejected, counted and logged instead,
# having been skipped in 1 MiB reads. Raise it (--max-doc-bytes) only with the memory to match.
MAX_DOC_BYTES = 8 << 20
_SKIP_CHUNK = 1 << 20
# Record fields named in a missing-text-field reject (enough to spot the right --text-field).
_FIELDS_SHOWN = 6
# JSON escapes can produce lone UTF-16 surrogates ("\ud800"), which are not Unicode text: no
# tokenizer takes them and UTF-8 cannot encode them.
_SURROGATE = re.compile('[\ud800-\udfff]')


class InputError(ValueError):
    """A bad input path or a bad record under --strict: the message names what to fix."""


@dataclass(frozen=True)
class Document:
    """One document: `doc_id` is stable across runs (`<file>:<line>`, or the file for .txt)."""
    doc_id: str
    path: str
    line: int
    text: str


@dataclass(frozen=True)
class Reject:
    """One document (or file) that could not be used, and why."""
    path: str
    line: int
    reason: str

    def to_json(self) -> dict:
        return {'file': self.path, 'line': self.line, 'reason': self.reason}


Record = Union[Document, Reject]


def expand_inputs(inputs: list[str]) -> list[str]:
    """Resolve files, directories (recursively) and globs into a sorted, de-duplicated file list.

    Sorting makes the document order, and so every downstream result, independent of the
    order in which the file system lists a directory.
    """
    files: list[str] = []
    for spec in inputs:
        if os.path.isdir(spec):
            found = [
                os.path.join(root, name) for root, _, names in os.walk(spec) for name in names
                if name.endswith(SUPPORTED_SUFFIXES)
            ]
            if not found:
                raise InputError(f'{spec}: directory holds no {", ".join(SUPPORTED_SUFFIXES)} files')
            files.extend(found)
        elif os.path.isfile(spec):
            if not spec.endswith(SUPPORTED_SUFFIXES):
                raise InputError(
                    f'{spec}: unsupported file type; use one of {", ".join(SUPPORTED_SUFFIXES)}')
            files.append(spec)
        elif glob.has_magic(spec):
            found = [f for f in glob.glob(spec, recursive=True)
                     if os.path.isfile(f) and f.endswith(SUPPORTED_SUFFIXES)]
            if not found:
                raise InputError(f'{spec}: pattern matches no {", ".join(SUPPORTED_SUFFIXES)} files')
            files.extend(found)
        else:
            raise InputError(f'{spec}: no such file or directory')
    return sorted({os.path.abspath(f) for f in files})


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
    raw = open(path, 'rb')
    if path.endswith('.gz'):
        return gzip.GzipFile(fileobj=raw)
    if path.endswith('.zst'):
        return io.BufferedReader(_ZstdFrames(raw))
    return raw


def _skip_rest_of_line(handle, read: int) -> int:
    """Read past the rest of an over-long line in bounded chunks; returns the line's length."""
    while True:
        chunk = handle.readline(_SKIP_CHUNK)
        read += len(chunk)
        if not chunk or chunk.endswith(b'\n'):
            return read


def _too_long(size: int, max_bytes: int) -> str:
    return f'document too long: {size:,} bytes, over --max-doc-bytes {max_bytes:,}'


def _missing_field(text_field: str, record: dict) -> str:
    fields = ', '.join(repr(k) for k in list(record)[:_FIELDS_SHOWN]) or 'no fields'
    more = ', ...' if len(record) > _FIELDS_SHOWN else ''
    return f'missing text field {text_field!r}: the record has {fields}{more}; choose one with --text-field'


def _json_array_start(raw: bytes) -> bool:
    """A first line that opens a JSON array but is not one: a pretty-printed array file."""
    if not raw.lstrip().startswith(b'['):
        return False
    try:
        json.loads(raw)
    except ValueError:
        return True
    return False


JSON_ARRAY_HINT = ('a JSON array, not JSON lines (one object per line): convert it, '
                   'e.g. `jq -c ".[]" FILE > FILE.jsonl`')


def _read_jsonl(path: str, text_field: str, max_bytes: int) -> Iterator[Record]:
    line_no = 0
    with _open_binary(path) as handle:
        while True:
            try:
                raw = handle.readline(max_bytes + 1)
                if len(raw) > max_bytes and not raw.endswith(b'\n'):
                    yield Reject(path, line_no + 1, _too_long(_skip_rest_of_line(handle, len(raw)), max_bytes))
                    line_no += 1
                    continue
            except (OSError, EOFError, zstandard.ZstdError) as err:
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
            if line_no == 1 and _json_array_start(raw):
                # Each following line would be a fragment of the array: one reject for the file.
                yield Reject(path, 1, f'whole file skipped: {JSON_ARRAY_HINT}')
                return
            try:
                line = raw.decode('utf-8')
            except UnicodeDecodeError as err:
                yield Reject(path, line_no, f'invalid UTF-8: at byte {err.start}')
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
    size = os.path.getsize(path)
    if size > max_bytes:
        yield Reject(path, 1, _too_long(size, max_bytes))
        return
    with open(path, 'rb') as handle:
        raw = handle.read()
    try:
        text = raw.decode('utf-8')
    except UnicodeDecodeError as err:
        yield Reject(path, 1, f'invalid UTF-8: at byte {err.start}')
        return
    if not text.strip():
        yield Reject(path, 1, 'empty document')
        return
    yield Document(path, path, 1, text)


def read_file(path: str, text_field: str = 'text', max_doc_bytes: int = MAX_DOC_BYTES) -> Iterator[Record]:
    """Yield the documents and rejects of one file; an unreadable file is one reject."""
    try:
        if path.endswith('.txt'):
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
