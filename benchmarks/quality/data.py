"""The benchmark's data: the corpus, the pool minus its held-out slice, the tokenizer, the indexes
and the weights files, each made once and cached under the work folder (`--work`)."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time

import numpy as np

from cis_stream.format.reader import CISIndex
from cis_stream.index.job import build_index
from cis_stream.text.readers import read_documents

LEVELS = [16, 128, 1024]  # the pool index's tree (`--levels` replaces it)
WINDOW, SEQ_LEN, BATCH = 256, 128, 16
HOLDOUT_EVERY = 400


def log(message: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode('utf-8'), digest_size=8).digest(), 'little')


def write_jsonl(path: str, texts) -> str:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as handle:
        for text in texts:
            handle.write(json.dumps({'text': text}, ensure_ascii=False) + '\n')
    os.replace(tmp, path)
    return path


def texts_of(files: list[str]) -> list[str]:
    return [d.text for d in read_documents(files) if hasattr(d, 'text')]


def budget_tokens(steps: int) -> int:
    return steps * BATCH * SEQ_LEN


class Corpus:
    """The benchmark corpus (benchmarks/corpus/build.py) seen through its manifest."""

    def __init__(self, root: str):
        with open(os.path.join(root, 'corpus_manifest.json'), encoding='utf-8') as handle:
            self.manifest = json.load(handle)
        self.root = root
        self.domains = list(self.manifest['domains'])

    def files(self, relative: list[str] | str) -> list[str]:
        return [os.path.join(self.root, f) for f in ([relative] if isinstance(relative, str) else relative)]

    def split(self, domain: str, name: str) -> list[str]:
        return self.files(self.manifest['domains'][domain]['files'][name])


def prepare_pool(work: str, corpus: Corpus) -> tuple[list[str], str]:
    """The pool minus a held-out slice (1 document in HOLDOUT_EVERY, by a hash of its text)."""
    folder = os.path.join(work, 'pool')
    held_out = os.path.join(work, 'generalist_test.jsonl')
    files = [os.path.join(folder, os.path.basename(f).replace('.jsonl.zst', '.jsonl'))
             for f in corpus.manifest['pool']['files']]
    if os.path.exists(held_out):
        return files, held_out
    os.makedirs(folder, exist_ok=True)
    kept_out = []
    for source, target in zip(corpus.files(corpus.manifest['pool']['files']), files):
        texts = texts_of([source])
        kept_out += [t for t in texts if stable_hash(t) % HOLDOUT_EVERY == 0]
        write_jsonl(target, (t for t in texts if stable_hash(t) % HOLDOUT_EVERY))
    write_jsonl(held_out, kept_out)
    log(f'pool: {len(files)} files; {len(kept_out)} documents held out for generalist perplexity')
    return files, held_out


def pool_documents(pool: list[str]) -> tuple[list[str], np.ndarray]:
    texts = texts_of(pool)
    return texts, np.asarray([len(t) for t in texts], np.int64)


def tokenizer_path(work: str, pool: list[str]) -> str:
    from cis_stream.text.tokens import train_bpe_tokenizer
    path = os.path.join(work, 'tokenizer.json')
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        texts = [t for t in texts_of(pool) if rng.random() < 0.1]  # a 10% sample of the pool
        train_bpe_tokenizer(texts, 8192, path)
    return path


def pool_index(path: str, pool: list[str], tokenizer: str, processes: int, levels: list[int],
               embedder: str = 'lsi', lsi_features: str = 'words') -> CISIndex:
    """An index of `pool` at `path` (built once): 256-token windows, 128-token samples. lsi counts words
    unless told otherwise: every recorded run before token features was made with them."""
    if not os.path.exists(path):
        log(f'indexing {path} with {embedder} on {processes} process(es)')
        launcher = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(processes)]
                    if processes > 1 else [sys.executable])
        subprocess.run(launcher + ['-m', 'cis_stream.index', *pool, '--out', path, '--embedder', embedder,
                                   '--levels', ','.join(map(str, levels)), '--window', str(WINDOW),
                                   '--seq-len', str(SEQ_LEN), '--tokenizer', tokenizer,
                                   *(['--lsi-features', lsi_features] if embedder == 'lsi' else [])], check=True)
    return CISIndex.open(path)


def one_cluster_index(work: str, name: str, texts: list[str], tokenizer: str) -> str:
    """Selected documents as a trainable index (one cluster: the loader then draws uniformly)."""
    path = os.path.join(work, 'selected', name)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        source = write_jsonl(path + '.jsonl', texts)
        build_index([source], path, embedder='lsi', embedder_config={'dim': 8}, levels=[1], window=WINDOW,
                    seq_len=SEQ_LEN, tokenizer=tokenizer, progress=False)
    return path


def weights_file(work: str, index: CISIndex, name: str, specialist: list[str], *extra: str) -> str:
    path = os.path.join(work, 'weights', f'{name}.weights.json')
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        command = ['weights', '--index', index.root, *extra, '-o', path]
        if specialist:
            command[3:3] = ['--specialist', *specialist]
        from cis_stream.cli import main as cli
        if cli(command):
            raise SystemExit(f'cis-stream {" ".join(command)} failed')
    return path


def windows_per_doc(index: CISIndex, texts: list[str]) -> np.ndarray:
    from cis_stream.text.tokens import make_windows
    return np.bincount(make_windows(index.tokenizer, texts, WINDOW).doc_index, minlength=len(texts))
