"""Text embedders: the interface every embedder implements, and a helper."""

from __future__ import annotations

import numpy as np


def l2_normalise(vectors: np.ndarray) -> np.ndarray:
    vectors = np.asarray(vectors, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    return vectors / np.maximum(norms, 1e-12)


class Embedder:
    """The interface; `needs_fit` embedders get `fit` called once on a seeded sample of windows."""
    name = ''
    needs_fit = False
    # False: `fit` and `embed` get each window's text. True: its token ids (an int array each), which
    # the index holds already, so the text need not be read and parsed again.
    reads_tokens = False

    def fit(self, windows: list, seed: int) -> None:
        """Fit on a sample of windows (no-op by default)."""

    def embed(self, windows: list) -> np.ndarray:
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
