"""On-disk spool of token windows, so indexing streams through a corpus of any size.

The read/tokenise stage appends windows here; the embed stage reads their texts back in batches
and the pack stage reads their tokens back leaf by leaf. Memory stays bounded by one batch.
"""

from __future__ import annotations

import os

import numpy as np

from cis_stream.tokens import Windows


class WindowSpool:
    """Append-only files: tokens (int32), UTF-8 texts, and a per-window table."""

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._tokens = open(os.path.join(directory, 'tokens.bin'), 'wb')
        self._texts = open(os.path.join(directory, 'texts.bin'), 'wb')
        self._token_count = 0
        self._text_bytes = 0
        self._table: list[np.ndarray] = []  # rows: doc, token_start, token_len, text_start, text_len
        self.count = 0

    def append(self, windows: Windows, doc_ordinals: np.ndarray) -> None:
        if not len(windows.lengths):  # every window of the batch was excluded
            return
        encoded = [t.encode('utf-8') for t in windows.texts]
        text_lens = np.fromiter((len(b) for b in encoded), np.int64, len(encoded))
        text_starts = self._text_bytes + np.concatenate([[0], np.cumsum(text_lens)[:-1]])
        self._table.append(np.stack([doc_ordinals[windows.doc_index], self._token_count + windows.starts,
                                     windows.lengths, text_starts, text_lens], axis=1).astype(np.int64))
        self._tokens.write(windows.tokens.astype(np.int32).tobytes())
        self._texts.write(b''.join(encoded))
        self._token_count += len(windows.tokens)
        self._text_bytes += int(text_lens.sum())
        self.count += len(encoded)

    def close(self) -> None:
        self._tokens.close()
        self._texts.close()
        self.table = np.concatenate(self._table) if self._table else np.zeros((0, 5), np.int64)
        self.tokens = (np.memmap(self._tokens.name, dtype=np.int32, mode='r') if self._token_count
                       else np.zeros(0, np.int32))
        self.text_data = (np.memmap(self._texts.name, dtype=np.uint8, mode='r') if self._text_bytes
                          else np.zeros(0, np.uint8))

    @property
    def doc(self) -> np.ndarray:
        return self.table[:, 0]

    @property
    def lengths(self) -> np.ndarray:
        return self.table[:, 2]

    def texts(self, rows: np.ndarray) -> list[str]:
        return [bytes(self.text_data[s:s + n]).decode('utf-8') for s, n in self.table[rows][:, 3:5]]

    def eos_joined_tokens(self, rows: np.ndarray, eos_id: int) -> np.ndarray:
        """The tokens of `rows` in order, each window followed by one EOS token."""
        eos = np.array([eos_id], dtype=np.int32)
        starts, lens = self.table[rows, 1], self.table[rows, 2]
        return np.concatenate([part for s, n in zip(starts, lens) for part in (self.tokens[s:s + n], eos)])
