"""Packing a leaf: its windows, each followed by EOS, cut into fixed-length samples with the last one
padded with EOS; written through any writer (here a fake that collects the samples, not MDS). The
windows are real text (wiki summaries, GPT-2 tokens) read back from real window spools."""

from __future__ import annotations

import numpy as np
import pytest

import cis_stream.format.leaves as leaves_module
from cis_stream.format.leaves import leaf_chunks, pack_leaf
from cis_stream.index.spool import WindowSpool
from cis_stream.text.tokens import load_tokenizer, make_windows

WINDOW = 64


class CollectingWriter:
    """Stands in for Streaming's MDSWriter: keeps what `write` receives."""

    def __init__(self):
        self.samples: list[np.ndarray] = []

    def write(self, sample: dict) -> None:
        assert set(sample) == {'tokens'}
        self.samples.append(sample['tokens'])


@pytest.fixture(scope='module')
def gpt2():
    return load_tokenizer()


@pytest.fixture(scope='module')
def spools(wiki_records, gpt2, tmp_path_factory) -> list[WindowSpool]:
    """Two parts' spools: 30 real summaries each, cut into 64-token windows."""
    out = []
    for part in range(2):
        texts = [r['text'] for r in wiki_records[30 * part:30 * (part + 1)]]
        spool = WindowSpool(str(tmp_path_factory.mktemp(f'part{part}')))
        spool.append(make_windows(gpt2, texts, WINDOW), np.arange(len(texts)))
        spool.close()
        out.append(WindowSpool.open(spool.directory))
    return out


def eos_joined(gpt2, texts: list[str]) -> np.ndarray:
    """The windows of `texts`, each followed by one EOS: the token stream a leaf of them packs."""
    windows = make_windows(gpt2, texts, WINDOW)
    pieces = []
    for start, length in zip(windows.starts, windows.lengths):
        pieces += [windows.tokens[start:start + length], [gpt2.eos_id]]
    return np.concatenate(pieces).astype(np.int32)


def pack(chunks, seq_len: int, eos_id: int, dtype=np.uint16) -> tuple[dict, list[np.ndarray]]:
    writer = CollectingWriter()
    return pack_leaf(chunks, writer, seq_len, eos_id, dtype), writer.samples


@pytest.mark.parametrize('seq_len', [96, 64, 7, 1000])
def test_a_leaf_is_its_token_stream_in_fixed_length_samples_padded_with_eos(gpt2, wiki_records, seq_len):
    stream = eos_joined(gpt2, [r['text'] for r in wiki_records[:25]])
    result, samples = pack([stream], seq_len, gpt2.eos_id)
    pad = -len(stream) % seq_len
    assert result == {'samples': -(-len(stream) // seq_len), 'pad_tokens': pad}
    assert len(samples) == result['samples']
    assert all(s.shape == (seq_len,) and s.dtype == np.uint16 for s in samples)
    packed = np.concatenate(samples)
    assert np.array_equal(packed[:len(stream)], stream), 'every token kept, in order'
    assert (packed[len(stream):] == gpt2.eos_id).all() and len(packed) == len(stream) + pad


def test_how_the_stream_is_chunked_changes_nothing(gpt2, wiki_records):
    stream = eos_joined(gpt2, [r['text'] for r in wiki_records[25:45]])
    whole = pack([stream], 96, gpt2.eos_id)
    rng = np.random.default_rng(0)
    for _ in range(5):  # cuts anywhere: empty chunks, chunks shorter than a sample, several samples long
        cuts = np.sort(rng.integers(0, len(stream), 12))
        result, samples = pack(np.split(stream, cuts), 96, gpt2.eos_id)
        assert result == whole[0]
        assert all(np.array_equal(a, b) for a, b in zip(samples, whole[1])) and len(samples) == len(whole[1])


def test_a_stream_of_whole_samples_has_no_padding():
    stream = np.arange(1, 2 * 96 + 1, dtype=np.int32)
    result, samples = pack([stream[:50], stream[50:]], 96, eos_id=0)
    assert result == {'samples': 2, 'pad_tokens': 0}
    assert np.array_equal(np.concatenate(samples), stream)
    assert pack([], 96, eos_id=0) == ({'samples': 0, 'pad_tokens': 0}, [])
    assert pack([np.zeros(0, np.int32)], 96, eos_id=0) == ({'samples': 0, 'pad_tokens': 0}, [])


def test_ids_over_uint16_keep_their_value_in_an_int32_column():
    stream = np.array([70_000, 1, 65_536, 1, 3], np.int32)
    result, samples = pack([stream], 4, eos_id=1, dtype=np.int32)
    assert result == {'samples': 2, 'pad_tokens': 3}
    assert [s.tolist() for s in samples] == [[70_000, 1, 65_536, 1], [3, 1, 1, 1]]
    assert all(s.dtype == np.int32 for s in samples)


@pytest.mark.parametrize('chunk_windows', [1024, 7, 1])
def test_leaf_chunks_join_the_windows_of_several_parts_in_order(spools, gpt2, wiki_records, monkeypatch,
                                                               chunk_windows):
    """A leaf's windows come from several parts' spools, rows in order, a chunk of windows at a time."""
    monkeypatch.setattr(leaves_module, 'PACK_CHUNK_WINDOWS', chunk_windows)
    rng = np.random.default_rng(2)
    rows = [np.sort(rng.choice(s.count, s.count // 3, replace=False)) for s in spools]
    chunks = list(leaf_chunks(list(zip(spools, rows)), gpt2.eos_id))
    assert max(len(c) for c in chunks) <= chunk_windows * (WINDOW + 1)
    texts = [[r['text'] for r in wiki_records[30 * part:30 * (part + 1)]] for part in range(2)]
    expected = []
    for part, part_rows in enumerate(rows):
        windows = make_windows(gpt2, texts[part], WINDOW)
        for row in part_rows:
            start, length = windows.starts[row], windows.lengths[row]
            expected += windows.tokens[start:start + length].tolist() + [gpt2.eos_id]
    assert np.concatenate(chunks).tolist() == expected
    result, samples = pack(chunks, 96, gpt2.eos_id)
    assert np.concatenate(samples)[:len(expected)].tolist() == expected and result['samples'] == len(samples)
