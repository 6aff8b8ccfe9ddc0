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
