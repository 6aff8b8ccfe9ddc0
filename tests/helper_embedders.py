"""A custom embedder for the tests, passed to the indexer as 'helper_embedders:VocabEmbedder'.

It needs fitting (it learns a vocabulary of the most frequent words of the sample), stores its
fitted state as .npz, and rebuilds from (config, state_dir): everything the plug-in interface of
`cis_stream.embedders` asks of a user's class.
"""

from __future__ import annotations

import collections
import os
import re

import numpy as np

from cis_stream.embedders.base import Embedder, l2_normalise

WORD = re.compile(r'[a-z]{3,}')


class VocabEmbedder(Embedder):
    name = 'vocab'
    needs_fit = True
    # Observability for the tests: how instances came to be.
    fit_calls = 0
    loaded_from: list[str] = []

    def __init__(self, n_words: int = 48, vocab=None):
        self.n_words = n_words
        self.vocab = None if vocab is None else [str(w) for w in vocab]

    @property
    def dim(self) -> int:
        return self.n_words + 1

    def fit(self, texts: list[str], seed: int) -> None:
        type(self).fit_calls += 1
        counts = collections.Counter(w for t in texts for w in WORD.findall(t.lower()))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.vocab = [w for w, _ in ranked[:self.n_words]]
        self.vocab += [f'<unused{i}>' for i in range(self.n_words - len(self.vocab))]

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.vocab is None:
            raise RuntimeError('VocabEmbedder used before fit')
        position = {w: i for i, w in enumerate(self.vocab)}
        out = np.zeros((len(texts), self.dim), np.float32)
        out[:, -1] = 1.0  # a constant feature: no all-zero vector
        for row, text in enumerate(texts):
            for word in WORD.findall(text.lower()):
                if word in position:
                    out[row, position[word]] += 1.0
        return l2_normalise(np.log1p(out))

    def config(self) -> dict:
        return {'n_words': self.n_words}

    def save(self, state_dir: str) -> None:
        np.savez(os.path.join(state_dir, 'vocab.npz'), vocab=np.asarray(self.vocab))

    @classmethod
    def load(cls, config: dict, state_dir: str) -> 'VocabEmbedder':
        cls.loaded_from.append(state_dir)
        with np.load(os.path.join(state_dir, 'vocab.npz'), allow_pickle=False) as state:
            return cls(**config, vocab=state['vocab'].tolist())
