"""Count exact duplicate documents with 8 bytes of memory per document.

The rule (README, "Bad input"): duplicates are kept and counted, not dropped. The index accounts
for every input document, and deduplication is a corpus-preparation choice made before indexing;
the count in the manifest (`totals.duplicate_documents`) says whether it is worth making. A
64-bit hash of the exact text stands for the text; with 10^8 documents a false match has a
chance of about 3 in 10,000.
"""

from __future__ import annotations

import hashlib
from array import array

import numpy as np


class DuplicateCounter:
    """`add` every document's text; `count` how many repeat an earlier one exactly."""

    def __init__(self):
        self._hashes = array('Q')

    def add(self, text: str) -> None:
        digest = hashlib.blake2b(text.encode('utf-8', 'surrogatepass'), digest_size=8).digest()
        self._hashes.append(int.from_bytes(digest, 'little'))

    def count(self) -> int:
        hashes = np.frombuffer(self._hashes, dtype=np.uint64) if len(self._hashes) else np.zeros(0, np.uint64)
        return int(len(hashes) - len(np.unique(hashes)))
