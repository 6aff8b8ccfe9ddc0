"""LSI: hashed token (or word) n-grams, TF-IDF and a truncated SVD, fit on a seeded sample of windows
(fast, model-free)."""

from __future__ import annotations

import os

import numpy as np

from cis_stream.embedders.base import Embedder, l2_normalise
from cis_stream.embedders.hashing import hashed_token_ngrams, hashed_word_ngrams

# What lsi counts: the window's token ids and id pairs (the default), or its words and word pairs as
# scikit-learn's HashingVectorizer does (every lsi index built before token features: their saved
# state names no `features`, so that is what they load with).
FEATURES = ('tokens', 'words')


class LSIEmbedder(Embedder):
    """Latent semantic indexing, model-free and fast (the paper's LSI ablation).

    Hashed uni- and bigram counts (hashing.py), sublinear TF-IDF with the IDF fit on a sample,
    projected on a truncated SVD fit on the same sample.
    """
    name = 'lsi'
    needs_fit = True

    def __init__(self, dim: int = 128, n_features: int = 1 << 16, features: str = 'tokens', idf=None,
                 components=None):
        if features not in FEATURES:
            raise ValueError(f'lsi features {features!r}: use one of {", ".join(FEATURES)}')
        self._dim = dim
        self.n_features = n_features
        self.features = features
        self.idf = idf
        self.components = components

    @property
    def dim(self) -> int:
        return self._dim

    @property
    def reads_tokens(self) -> bool:
        return self.features == 'tokens'

    def _counts(self, windows):
        hashed = hashed_token_ngrams if self.reads_tokens else hashed_word_ngrams
        return hashed(windows, self.n_features)

    def _tfidf(self, counts):
        """Sublinear TF-IDF rows, L2-normalised, from hashed counts (which it overwrites)."""
        from sklearn.preprocessing import normalize
        counts.data = 1.0 + np.log(counts.data)
        return normalize(counts.multiply(self.idf).tocsr(), norm='l2', copy=False)

    def fit(self, windows: list, seed: int) -> None:
        from sklearn.decomposition import TruncatedSVD
        if len(windows) <= self._dim:
            raise ValueError(f'lsi needs more than {self._dim} windows to fit {self._dim} dimensions; '
                             f'got {len(windows)}: index more text or pick a smaller dim')
        counts = self._counts(windows)
        doc_freq = np.bincount(counts.indices, minlength=self.n_features)
        self.idf = (np.log((1 + len(windows)) / (1 + doc_freq)) + 1.0).astype(np.float32)
        svd = TruncatedSVD(n_components=self._dim, algorithm='randomized', n_iter=5, random_state=seed)
        svd.fit(self._tfidf(counts))
        self.components = np.ascontiguousarray(svd.components_.T, dtype=np.float32)

    def embed(self, windows: list) -> np.ndarray:
        if self.components is None:
            raise RuntimeError('lsi embedder used before fit')
        return l2_normalise(self._tfidf(self._counts(windows)) @ self.components)

    def config(self) -> dict:
        return {'dim': self._dim, 'n_features': self.n_features, 'features': self.features}

    def save(self, state_dir: str) -> None:
        np.savez(os.path.join(state_dir, 'lsi.npz'), idf=self.idf, components=self.components,
                 features=np.asarray(self.features))

    @classmethod
    def load(cls, config: dict, state_dir: str) -> 'LSIEmbedder':
        """The fitted embedder; the features it was fit on come from its state."""
        with np.load(os.path.join(state_dir, 'lsi.npz'), allow_pickle=False) as state:
            features = str(state['features']) if 'features' in state.files else 'words'
            return cls(**{**config, 'features': features}, idf=state['idf'], components=state['components'])
