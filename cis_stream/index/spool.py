"""On-disk spool of token windows, so indexing streams through a corpus of any size.

The read/tokenise stage appends windows here; the embed stage reads their texts back in batches
and the pack stage reads their tokens back leaf by leaf. Memory stays bounded by one batch.
A closed spool is a directory of three files, reopened with `WindowSpool.open` by any process
(the pack stage of a distributed build reads every part's spool).
"""

from __future__ import annotations

import os

import numpy as np

from cis_stream.embedders import reads_tokens
from cis_stream.text.tokens import Windows

TOKENS, TEXTS, TABLE = 'tokens.bin', 'texts.bin', 'table.npy'


class WindowSpool:
    """Append-only files: tokens (int32), UTF-8 texts, and a per-window table."""

    def __init__(self, directory: str):
        os.makedirs(directory, exist_ok=True)
        self.directory = directory
        self._tokens = open(os.path.join(directory, TOKENS), 'wb')
        self._texts = open(os.path.join(directory, TEXTS), 'wb')
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
        """Finish writing: the table is saved last, so a spool with a table is complete."""
        self._tokens.close()
        self._texts.close()
        table = np.concatenate(self._table) if self._table else np.zeros((0, 5), np.int64)
        np.save(os.path.join(self.directory, TABLE), table)
        self._attach(table)

    @classmethod
    def open(cls, directory: str) -> 'WindowSpool':
        """A closed spool, read-only."""
        spool = cls.__new__(cls)
        spool.directory = directory
        spool._attach(np.load(os.path.join(directory, TABLE), allow_pickle=False))
        return spool

    def _attach(self, table: np.ndarray) -> None:
        self.table = table
        self.count = len(table)

    def _read(self, name: str, itemsize: int, spans) -> list[bytes]:
        """The (start, count) item spans of file `name`, each as bytes.

        Plain reads, opened per call: a memory map kept open per part would hold a file handle each
        (a large build has thousands of parts) and keep every page it touched counted in the
        process's RSS until the end of the build.
        """
        with open(os.path.join(self.directory, name), 'rb', buffering=0) as handle:
            fd = handle.fileno()
            return [os.pread(fd, int(n) * itemsize, int(s) * itemsize) for s, n in spans]

    @property
    def doc(self) -> np.ndarray:
        return self.table[:, 0]

    @property
    def lengths(self) -> np.ndarray:
        return self.table[:, 2]

    def texts(self, rows: np.ndarray) -> list[str]:
        return [data.decode('utf-8') for data in self._read(TEXTS, 1, self.table[rows][:, 3:5])]

    def token_windows(self, rows: np.ndarray) -> list[np.ndarray]:
        """The token ids of each of `rows` (int32)."""
        return [np.frombuffer(data, np.int32) for data in self._read(TOKENS, 4, self.table[rows][:, 1:3])]

    def windows_for(self, embedder, rows: np.ndarray) -> list:
        """`rows` as `embedder` takes them: token ids or texts."""
        return self.token_windows(rows) if reads_tokens(embedder) else self.texts(rows)

    def eos_joined_tokens(self, rows: np.ndarray, eos_id: int) -> np.ndarray:
        """The tokens of `rows` in order, each window followed by one EOS token."""
        eos = np.int32(eos_id).tobytes()
        windows = self._read(TOKENS, 4, self.table[rows][:, 1:3])
        return np.frombuffer(eos.join(windows) + eos, dtype=np.int32) if windows else np.zeros(0, np.int32)
