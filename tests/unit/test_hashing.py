"""lsi's hashed n-grams: of token ids (counted as a plain loop would), and of words (exactly scikit-learn's
HashingVectorizer counts), computed in numpy."""

from __future__ import annotations

import collections
import os

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32 as sklearn_murmurhash3_32

from cis_stream.embedders.hashing import _K1, _K2, hashed_token_ngrams, hashed_word_ngrams, murmurhash3_32
from cis_stream.text.tokens import load_tokenizer, make_windows
from tests.helpers import fuzz_texts

MASK = (1 << 64) - 1


def token_column(first: int, second: int | None, n_features: int) -> int:
    """The column of an id (second None) or an id pair, computed one feature at a time in Python ints."""
    key = ((first + 1) * int(_K1)) & MASK
    if second is not None:
        key ^= ((second + 1) * int(_K2)) & MASK
    key ^= key >> 29
    key = (key * int(_K2)) & MASK
    key ^= key >> 32
    return key % n_features


@pytest.mark.parametrize('n_features', [1 << 16, 1000, 7, 1 << 22])
def test_hashed_token_ngrams_count_each_windows_ids_and_id_pairs(wiki_records, n_features):
    texts = [r['text'] for r in wiki_records[:150]] + fuzz_texts(50, ('x', '  ', '\n\n'))
    windows = make_windows(load_tokenizer(), texts, 64).token_windows()
    windows += [np.zeros(0, np.int64), np.asarray([7]), np.asarray([5, 5, 5, 5])]  # empty, one id, repeats
    ours = hashed_token_ngrams(windows, n_features)
    assert ours.shape == (len(windows), n_features) and ours.dtype == np.float32
    for row, ids in enumerate(windows):
        ids = ids.tolist()
        expected = collections.Counter(token_column(a, None, n_features) for a in ids)
        expected.update(token_column(a, b, n_features) for a, b in zip(ids, ids[1:]))
        start, stop = ours.indptr[row], ours.indptr[row + 1]
        assert ours.indices[start:stop].tolist() == sorted(expected), f'window {row}'
        assert ours.data[start:stop].tolist() == [expected[c] for c in sorted(expected)]
    # Every id and every pair counted once; real counts, not a trivial case.
    assert ours.data.sum() == sum(2 * len(ids) - 1 for ids in windows if len(ids)) > 10_000
    assert ours.data.max() > 5
    # More windows than one chunk of CHUNK_TEXTS: the same rows.
    assert (hashed_token_ngrams(windows * 6, n_features)[len(windows):2 * len(windows)] != ours).nnz == 0


def test_murmurhash3_of_byte_slices_is_scikit_learns():
    rng = np.random.default_rng(0)
    buffer = rng.integers(0, 256, 5000, dtype=np.uint8).tobytes()
    starts = rng.integers(0, 4900, 3000)
    lengths = rng.integers(0, 100, 3000)  # every tail length, and slices of 0 to 24 blocks
    ours = murmurhash3_32(buffer, starts, lengths)
    assert ours.dtype == np.int32
    assert ours.tolist() == [sklearn_murmurhash3_32(buffer[s:s + n], seed=0) for s, n in zip(starts, lengths)]


@pytest.mark.parametrize('n_features', [1 << 16, 1000, 7])
def test_hashed_word_ngrams_equal_scikit_learns_hashing_vectorizer(wiki_records, n_features):
    stdlib = os.path.dirname(os.__file__)
    code = [open(os.path.join(stdlib, name), encoding='utf-8').read() for name in ('os.py', 'difflib.py')]
    # Underscores are word characters; 'İ' lowercases to two code points; a lone surrogate is no
    # word character; texts without words (empty, one letter, punctuation) have empty rows.
    texts = ([r['text'] for r in wiki_records[:2000]] + code
             + fuzz_texts(2000, ('_', 'snake_case', 'İSTANBUL', 'ẞ', 'x', '\udc80', 'a' * 37))
             + ['', 'x', '?!', 'A b', 'word', ''])
    reference = HashingVectorizer(n_features=n_features, ngram_range=(1, 2), alternate_sign=False, norm=None,
                                  dtype=np.float32).transform(texts)
    ours = hashed_word_ngrams(texts, n_features)
    assert ours.shape == reference.shape and ours.dtype == reference.dtype == np.float32
    assert np.array_equal(ours.indptr, reference.indptr)
    assert np.array_equal(ours.indices, reference.indices)
    assert np.array_equal(ours.data, reference.data)
    assert reference.nnz > 20_000 and reference.data.max() > 10  # real counts, not a trivial case


def test_no_texts_give_an_empty_matrix():
    assert hashed_token_ngrams([], 16).shape == (0, 16)
    assert hashed_token_ngrams([np.zeros(0, np.int32)] * 2, 16).nnz == 0
    assert hashed_word_ngrams([], 16).shape == (0, 16)
    assert hashed_word_ngrams(['', '.'], 16).nnz == 0
