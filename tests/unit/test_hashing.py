"""lsi's hashed word n-grams: exactly scikit-learn's HashingVectorizer counts, computed in numpy."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.feature_extraction.text import HashingVectorizer
from sklearn.utils import murmurhash3_32 as sklearn_murmurhash3_32

from cis_stream.embedders.hashing import hashed_word_ngrams, murmurhash3_32
from tests.helpers import fuzz_texts


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
    assert hashed_word_ngrams([], 16).shape == (0, 16)
    assert hashed_word_ngrams(['', '.'], 16).nnz == 0
