"""Count exact duplicate documents with 8 bytes of memory per document.

The rule (README, "Bad input"): duplicates are kept and counted, not dropped. The index accounts
for every input document, and deduplication is a corpus-preparation choice made before indexing;
the count in the manifest (`totals.duplicate_documents`) says whether it is worth making. A
64-bit hash of the exact text stands for the text; with 10^8 documents a false match has a
chance of about 3 in 10,000.
"""

from __future__ import annotations

import hashlib

import numpy as np


def text_hash(text: str) -> int:
    """64-bit hash of a document's exact text."""
    digest = hashlib.blake2b(text.encode('utf-8', 'surrogatepass'), digest_size=8).digest()
    return int.from_bytes(digest, 'little')


def count_duplicates(hashes: np.ndarray) -> int:
    """How many documents repeat an earlier one exactly (their text hashes are given)."""
    return int(len(hashes) - len(np.unique(hashes)))
