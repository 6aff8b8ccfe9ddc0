"""Read single samples of a leaf without writing into the index directory.

Streaming's MDS reader reads a shard's raw (decompressed) file. For a local zstd shard, a
`StreamingDataset` would decompress it next to the original, inside the index; an inspection
should work on a read-only index and leave it as it was. So a compressed shard is decompressed
with Streaming's own codec into a private temporary directory and read there with Streaming's
own reader (`reader_from_json`); a raw file already present (left by training) is read in place.
"""

from __future__ import annotations

import json
import os
import tempfile

import numpy as np
from streaming.base.compression import decompress
from streaming.base.format import reader_from_json

from cis_stream.format.layout import LEAF_INDEX, leaf_dir_name
from cis_stream.format.reader import CISIndex

# Shown between the EOS-separated pieces of a decoded sample (one piece per window).
EOS_MARK = ' ‖ '


class LeafSamples:
    """`with LeafSamples(index) as samples: samples.text(leaf, i)`; shards decompressed once each."""

    def __init__(self, index: CISIndex):
        self.index = index
        self._tmp = tempfile.TemporaryDirectory(prefix='cis-inspect-')
        self._shards: dict[int, tuple[list, np.ndarray]] = {}
        self._ready: set[str] = set()

    def __enter__(self) -> 'LeafSamples':
        return self

    def __exit__(self, *exc) -> None:
        self._tmp.cleanup()

    def _leaf_shards(self, leaf: int) -> tuple[list, np.ndarray]:
        if leaf not in self._shards:
            path = os.path.join(self.index.leaf_path(leaf), LEAF_INDEX)
            try:
                with open(path, encoding='utf-8') as handle:
                    shards = json.load(handle)['shards']
            except (OSError, ValueError, KeyError) as err:
                raise ValueError(f'{path}: unreadable leaf index ({err}); is the index complete?') from err
            readers = [reader_from_json(self.index.leaf_path(leaf), None, obj) for obj in shards]
            self._shards[leaf] = readers, np.cumsum([r.samples for r in readers])
        return self._shards[leaf]

    def _readable(self, leaf: int, reader) -> None:
        """Point `reader` at a raw shard file: the index's own, or one decompressed privately."""
        raw = os.path.join(self.index.leaf_path(leaf), reader.raw_data.basename)
        if os.path.isfile(raw) or reader.zip_data is None:
            return
        private = os.path.join(self._tmp.name, leaf_dir_name(leaf))
        target = os.path.join(private, reader.raw_data.basename)
        if target not in self._ready:
            os.makedirs(private, exist_ok=True)
            with open(os.path.join(self.index.leaf_path(leaf), reader.zip_data.basename), 'rb') as handle:
                data = decompress(reader.compression, handle.read())
            with open(target, 'wb') as handle:
                handle.write(data)
            self._ready.add(target)
        reader.dirname = private

    def tokens(self, leaf: int, sample: int) -> np.ndarray:
        readers, ends = self._leaf_shards(leaf)
        if not 0 <= sample < ends[-1]:
            raise IndexError(f'leaf {leaf} has {ends[-1]} samples, not {sample + 1}')
        shard = int(np.searchsorted(ends, sample, side='right'))
        reader = readers[shard]
        self._readable(leaf, reader)
        return reader.get_item(sample - (int(ends[shard - 1]) if shard else 0))['tokens']

    def text(self, leaf: int, sample: int) -> str:
        """The sample decoded with the index's tokenizer; windows joined by EOS_MARK, padding dropped."""
        ids = self.tokens(leaf, sample).astype(np.int64)
        eos = self.index.tokenizer.eos_id
        cuts = np.flatnonzero(ids == eos)
        pieces = np.split(ids, cuts)
        decode = self.index.tokenizer.tokenizer.decode
        texts = [decode(piece[piece != eos].tolist()) for piece in pieces]
        return EOS_MARK.join(t for t in texts if t.strip())
