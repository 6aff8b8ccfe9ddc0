"""What every reader yields: a `Document`, or a `Reject` naming its file, line (or row) and reason,
so that callers can reconcile "documents read = indexed + rejected"."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union


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


def too_long(size: int, max_bytes: int) -> str:
    return f'document too long: {size:,} bytes, over --max-doc-bytes {max_bytes:,}'


def checked_text(path: str, number: int, where: str, text: str, max_bytes: int) -> Record:
    """A row or sample's text as a Document, or a Reject if it is empty or longer than `max_bytes`
    (`where` names the row or sample in the reason)."""
    if not text.strip():
        return Reject(path, number, f'{where}: empty document')
    if len(text) > max_bytes // 4 and len(text.encode('utf-8')) > max_bytes:  # 4 bytes a character at most
        return Reject(path, number, f'{where}: {too_long(len(text.encode("utf-8")), max_bytes)}')
    return Document(f'{path}:{number}', path, number, text)
