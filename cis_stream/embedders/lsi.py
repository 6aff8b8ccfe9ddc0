"""LSI: hashed word n-grams, TF-IDF and a truncated SVD, fit on a seeded sample of windows (fast, model-free)."""

from __future__ import annotations

import os

import numpy as np

from cis_stream.embedders.base import Embedder, l2_normalise
from cis_stream.embedders.hashing import hashed_word_ngrams


class LSIEmbedder(Embedder):
    """Latent semantic indexing, model-free and fast (the paper's LSI ablation).

    Hashed word uni- and bigram counts (those of scikit-learn's HashingVectorizer, computed by
    `hashing.hashed_word_ngrams`), sublinear TF-IDF with the IDF fit on a sample, projected on a
    truncated SVD fit on the same sample.
    """
    name = 'lsi'
    needs_fit = True

    def __init__(self, dim: int = 128, n_features: int = 1 << 16, idf=None, components=None):
        self._dim = dim
        self.n_features = n_features
        self.idf = idf
        self.components = components

    @property
    def dim(self) -> int:
        return self._dim

    def _tfidf(self, counts):
        """Sublinear TF-IDF rows, L2-normalised, from hashed counts (which it overwrites)."""
        from sklearn.preprocessing import normalize
        counts.data = 1.0 + np.log(counts.data)
        return normalize(counts.multiply(self.idf).tocsr(), norm='l2', copy=False)

    def fit(self, texts: list[str], seed: int) -> None:
        from sklearn.decomposition import TruncatedSVD
        if len(texts) <= self._dim:
            raise ValueError(f'lsi needs more than {self._dim} windows to fit {self._dim} dimensions; '
                             f'got {len(texts)}: index more text or pick a smaller dim')
        counts = hashed_word_ngrams(texts, self.n_features)
        doc_freq = np.bincount(counts.indices, minlength=self.n_features)
        self.idf = (np.log((1 + len(texts)) / (1 + doc_freq)) + 1.0).astype(np.float32)
        svd = TruncatedSVD(n_components=self._dim, algorithm='randomized', n_iter=5, random_state=seed)
        svd.fit(self._tfidf(counts))
        self.components = np.ascontiguousarray(svd.components_.T, dtype=np.float32)

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.components is None:
            raise RuntimeError('lsi embedder used before fit')
        return l2_normalise(self._tfidf(hashed_word_ngrams(texts, self.n_features)) @ self.components)

    def config(self) -> dict:
        return {'dim': self._dim, 'n_features': self.n_features}

    def save(self, state_dir: str) -> None:
        np.savez(os.path.join(state_dir, 'lsi.npz'), idf=self.idf, components=self.components)

    @classmethod
    def load(cls, config: dict, state_dir: str) -> 'LSIEmbedder':
        with np.load(os.path.join(state_dir, 'lsi.npz'), allow_pickle=False) as state:
            return cls(**config, idf=state['idf'], components=state['components'])
