"""Hashed uni- and bigram counts for lsi: of token ids (the default), or of words as scikit-learn counts them.

`hashed_token_ngrams(windows, n)` counts each window's token ids and pairs of neighbouring ids, hashed
into n columns by a 64-bit multiply-xorshift hash in numpy (scikit-learn hashes strings only). The ids
are already in the spool, so this needs no second pass over the text: on 1,024-token windows it is
about 4x faster than the word counts below, whose regex, lowercasing and string hashing cost about
half as much as tokenising did (benchmarks/results/RESULTS.md).

`hashed_word_ngrams(texts, n)` (lsi's features before token ids, kept for the indexes built with them)
returns exactly what
`HashingVectorizer(n_features=n, ngram_range=(1, 2), alternate_sign=False, norm=None,
dtype=np.float32).transform(texts)` returns (tested against it on real text in many scripts and
on fuzzed Unicode), about 1.7x faster (benchmarks/perf/bench_indexer.py). Why not scikit-learn
itself: it builds every bigram as a Python string and hashes the features one call at a time,
which made lsi's `embed` the largest stage of an index build. Here each text's words (scikit-learn's
token pattern) are joined by spaces into one UTF-8 buffer, so that every unigram and bigram is a byte
slice of it, and MurmurHash3
(x86, 32-bit, seed 0: scikit-learn's hash) runs over all slices at once in numpy.
"""

from __future__ import annotations

import re

import numpy as np
import scipy.sparse

# scikit-learn's default token_pattern r'(?u)\b\w\w+\b', applied to the lowercased text as it
# does. Without the \b anchors it finds the same words (a match always takes a whole run of word
# characters), 25% faster.
WORD = re.compile(r'\w{2,}')
# Texts hashed at a time: the per-feature arrays take about 50 bytes a word, and a fit sample
# can hold millions of words.
CHUNK_TEXTS = 1024
_C1, _C2 = np.uint32(0xCC9E2D51), np.uint32(0x1B873593)


def _rotl(x: np.ndarray, r: int) -> np.ndarray:
    return (x << np.uint32(r)) | (x >> np.uint32(32 - r))


def _mix_k(k: np.ndarray) -> np.ndarray:
    return _rotl(k * _C1, 15) * _C2


def murmurhash3_32(buffer: bytes, starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Signed MurmurHash3_x86_32 (seed 0) of each byte slice buffer[start:start + length]."""
    padded = np.frombuffer(bytes(buffer) + b'\0\0\0', np.uint8)
    # The little-endian uint32 at every byte offset (an unaligned, overlapping view: no copy).
    word_at = np.ndarray(shape=(len(padded) - 3,), dtype='<u4', buffer=padded, strides=(1,))
    blocks = lengths // 4
    h = np.zeros(len(starts), np.uint32)
    todo = np.flatnonzero(blocks)
    block = 0
    while len(todo):  # one 4-byte block of every slice that still has one
        k = _mix_k(word_at[starts[todo] + 4 * block])
        h[todo] = _rotl(h[todo] ^ k, 13) * np.uint32(5) + np.uint32(0xE6546B64)
        block += 1
        todo = todo[blocks[todo] > block]
    tail = lengths & 3
    todo = np.flatnonzero(tail)  # the last 1-3 bytes: the low bytes of the uint32 there
    keep = (np.uint32(1) << (8 * tail[todo]).astype(np.uint32)) - np.uint32(1)
    h[todo] ^= _mix_k(word_at[starts[todo] + 4 * blocks[todo]] & keep)
    h ^= lengths.astype(np.uint32)
    h ^= h >> np.uint32(16)
    h *= np.uint32(0x85EBCA6B)
    h ^= h >> np.uint32(13)
    h *= np.uint32(0xC2B2AE35)
    h ^= h >> np.uint32(16)
    return h.view(np.int32)


_K1, _K2 = np.uint64(0x9E3779B97F4A7C15), np.uint64(0xC2B2AE3D27D4EB4F)


def hashed_token_ngrams(windows: list[np.ndarray], n_features: int) -> scipy.sparse.csr_matrix:
    """Counts of each window's hashed token ids and pairs of neighbouring ids (rows sorted by column)."""
    if len(windows) > CHUNK_TEXTS:
        return scipy.sparse.vstack([_hashed_token_ngrams(windows[i:i + CHUNK_TEXTS], n_features)
                                    for i in range(0, len(windows), CHUNK_TEXTS)], format='csr')
    return _hashed_token_ngrams(windows, n_features)


def _hashed_token_ngrams(windows: list[np.ndarray], n_features: int) -> scipy.sparse.csr_matrix:
    lengths = np.fromiter((len(w) for w in windows), np.int64, len(windows))
    ids = (np.concatenate(windows).astype(np.uint64) if len(windows) else np.zeros(0, np.uint64)) + np.uint64(1)
    # A (row, column) code in one integer; int32 where it fits, which sorts faster.
    code_type = np.int32 if len(windows) * n_features < 2 ** 31 else np.int64
    rows = np.repeat(np.arange(len(windows), dtype=code_type), lengths)
    pair = rows[:-1] == rows[1:]  # an id and the next one of the same window
    keys = np.concatenate((ids * _K1, (ids[:-1] * _K1 ^ ids[1:] * _K2)[pair]))
    keys ^= keys >> np.uint64(29)
    keys *= _K2
    keys ^= keys >> np.uint64(32)
    # One sort of the codes counts every feature of every window at once.
    codes = np.sort(np.concatenate((rows, rows[:-1][pair])) * code_type(n_features)
                    + (keys % np.uint64(n_features)).astype(code_type))
    first = np.flatnonzero(np.concatenate(([True], codes[1:] != codes[:-1]))) if len(codes) else np.zeros(0, np.int64)
    counts = np.diff(np.append(first, len(codes))).astype(np.float32)
    distinct = codes[first]
    indptr = np.concatenate(([0], np.cumsum(np.bincount(distinct // n_features, minlength=len(windows)))))
    return scipy.sparse.csr_matrix((counts, distinct % n_features, indptr), shape=(len(windows), n_features))


def hashed_word_ngrams(texts: list[str], n_features: int) -> scipy.sparse.csr_matrix:
    """Counts of each text's hashed words (2+ word characters, lowercased) and word bigrams."""
    if len(texts) > CHUNK_TEXTS:
        return scipy.sparse.vstack([_hashed_word_ngrams(texts[i:i + CHUNK_TEXTS], n_features)
                                    for i in range(0, len(texts), CHUNK_TEXTS)], format='csr')
    return _hashed_word_ngrams(texts, n_features)


def _hashed_word_ngrams(texts: list[str], n_features: int) -> scipy.sparse.csr_matrix:
    lines = [' '.join(WORD.findall(text.lower())) for text in texts]
    buffer = '\n'.join(lines).encode('utf-8')
    data = np.frombuffer(buffer, np.uint8)
    # Words hold no space or newline, so they are the runs between those bytes; an empty line
    # (a text without words) leaves a zero-length run, which is dropped.
    cuts = np.flatnonzero((data == 32) | (data == 10))
    starts = np.concatenate(([0], cuts + 1))
    ends = np.concatenate((cuts, [len(data)]))
    nonempty = ends > starts
    starts, lengths = starts[nonempty], (ends - starts)[nonempty]
    rows = np.searchsorted(np.flatnonzero(data == 10), starts)  # a word's text: the newlines before it
    pair = np.flatnonzero(rows[:-1] == rows[1:])  # a word and the next one of the same text
    # The bigram "a b" is the slice from a word's start to the next word's end.
    slice_starts = np.concatenate((starts, starts[pair]))
    slice_lengths = np.concatenate((lengths, lengths[pair] + 1 + lengths[pair + 1]))
    hashes = murmurhash3_32(buffer, slice_starts, slice_lengths).astype(np.int64)
    # scikit-learn's column: abs(h) % n, with abs(-2**31) taken as 2**31 - 1 - (n - 1) first.
    columns = np.where(hashes == -2 ** 31, 2 ** 31 - 1 - (n_features - 1), np.abs(hashes)) % n_features
    matrix = scipy.sparse.csr_matrix(
        (np.ones(len(columns), np.float32), (np.concatenate((rows, rows[pair])), columns)),
        shape=(len(texts), n_features), dtype=np.float32)
    matrix.sum_duplicates()
    return matrix
