"""The per-part stages of a build (and of `cis-stream add`): read+tokenize, embed, assign, count."""

from __future__ import annotations

import json
import os
import shutil
from array import array

import numpy as np

from cis_stream.embedders import EMBED_BATCH
from cis_stream.embedders.base import Embedder
from cis_stream.format.files import replacing, write_json
from cis_stream.format.layout import REJECTS_FILE
from cis_stream.index.options import IndexOptions
from cis_stream.index.spool import WindowSpool
from cis_stream.text import decontam
from cis_stream.text.duplicates import text_hash
from cis_stream.text.readers import Document, InputError, read_file
from cis_stream.text.tokens import TokenizerHandle, make_windows
from cis_stream.tree import Tree

# Documents tokenised together (one tokenizer.encode_batch call): up to this many, and up to this
# much text, so that memory is set by the batch and not by how long the documents happen to be.
READ_BATCH_DOCS = 256


READ_BATCH_CHARS = 2_000_000


# Windows assigned down the tree per call.
ASSIGN_BATCH = 65536


# Parts (the unit of work and of resumption): about 1/64 of the corpus, within these bounds.
PARTS_WANTED = 64


PART_MIN_BYTES = 1 << 20


PART_MAX_BYTES = 64 << 20


def plan_parts(sizes: list[int], part_bytes: int | None = None) -> list[list[int]]:
    """Runs of consecutive files of about `part_bytes` each (never splitting a file).

    The default, about 1/PARTS_WANTED of the corpus, depends on the inputs alone.
    """
    target = part_bytes or min(PART_MAX_BYTES, max(PART_MIN_BYTES, sum(sizes) // PARTS_WANTED))
    parts, current, filled = [], [], 0
    for i, size in enumerate(sizes):
        current.append(i)
        filled += size
        if filled >= target:
            parts.append(current)
            current, filled = [], 0
    return parts + [current] if current else parts


def read_part(files: list[str], directory: str, options: IndexOptions, tokenizer: TokenizerHandle,
              strict: bool, eval_set: decontam.EvalSet | None = None) -> dict:
    """Read and tokenise one part's files into a spool; returns (and records) its bookkeeping.

    With an `eval_set`, documents and windows overlapping it are dropped (decontam.py).
    """
    shutil.rmtree(directory, ignore_errors=True)
    spool = WindowSpool(directory)
    inputs = {path: {'path': path, 'bytes': os.path.getsize(path), 'documents': 0, 'indexed': 0,
                     'rejected': 0, 'excluded': 0} for path in files}
    screen = decontam.Decontaminator(eval_set, os.path.join(directory, decontam.EXCLUDED_FILE)) if eval_set else None

    def exclude(doc: Document) -> None:  # an indexed document that decontamination dropped whole
        inputs[doc.path]['indexed'] -= 1
        inputs[doc.path]['excluded'] += 1
    reasons: dict[str, int] = {}
    batch: list[Document] = []
    batch_chars = 0
    hashes = array('Q')  # of every indexed document's text, to count exact duplicates
    indexed = 0

    def flush():
        nonlocal batch_chars
        windows = make_windows(tokenizer, [doc.text for doc in batch], options.window)
        if screen:
            windows = screen.screen(batch, windows, exclude)
        spool.append(windows, np.arange(indexed - len(batch), indexed))
        batch.clear()
        batch_chars = 0

    with open(os.path.join(directory, REJECTS_FILE), 'w', encoding='utf-8') as rejects:
        for path in files:
            for item in read_file(path, options.text_field, options.max_doc_bytes):
                stats = inputs[path]
                stats['documents'] += 1
                if isinstance(item, Document):
                    stats['indexed'] += 1
                    indexed += 1
                    hashes.append(text_hash(item.text))
                    batch.append(item)
                    batch_chars += len(item.text)
                    if len(batch) >= READ_BATCH_DOCS or batch_chars >= READ_BATCH_CHARS:
                        flush()
                    continue
                if strict:
                    raise InputError(f'{item.path}:{item.line}: {item.reason} (without --strict such '
                                     f'records are skipped and logged to {REJECTS_FILE})')
                stats['rejected'] += 1
                kind = item.reason.split(':')[0]
                reasons[kind] = reasons.get(kind, 0) + 1
                rejects.write(json.dumps(item.to_json(), ensure_ascii=False) + '\n')
    if batch:
        flush()
    spool.close()
    np.save(os.path.join(directory, 'hashes.npy'),
            np.frombuffer(hashes, np.uint64) if hashes else np.zeros(0, np.uint64))
    info = {'inputs': list(inputs.values()), 'reasons': reasons, 'windows': spool.count,
            'tokens': int(spool.lengths.sum()), 'decontamination': screen.close() if screen else None}
    write_json(os.path.join(directory, 'read.json'), info)
    return info


def embed_part(directory: str, embedder: Embedder) -> None:
    """Embed every window of a part into `embeddings.npy` (renamed into place when complete)."""
    spool = WindowSpool.open(directory)
    with replacing(os.path.join(directory, 'embeddings.npy')) as tmp:
        vectors = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.float32, shape=(spool.count, embedder.dim))
        for start in range(0, spool.count, EMBED_BATCH):
            rows = np.arange(start, min(start + EMBED_BATCH, spool.count))
            vectors[rows] = embedder.embed(spool.texts(rows))
        vectors.flush()
        del vectors


def assign_part(directory: str, tree: Tree) -> None:
    """Node ids at every level (of the unpruned tree) for each window of a part: `nodes.npy`."""
    vectors = np.load(os.path.join(directory, 'embeddings.npy'), mmap_mode='r')
    nodes = np.empty((len(vectors), len(tree.centroids)), dtype=np.int64)
    for start in range(0, len(vectors), ASSIGN_BATCH):
        stop = min(start + ASSIGN_BATCH, len(vectors))
        nodes[start:stop] = tree.assign(np.asarray(vectors[start:stop]))
    with replacing(os.path.join(directory, 'nodes.npy')) as tmp:
        np.save(tmp, nodes)


def part_counts(nodes: np.ndarray, spool: WindowSpool, sizes: list[int]) -> np.ndarray:
    """Windows, tokens and documents per node and level of one part: int64 [levels, 3, max size]."""
    out = np.zeros((nodes.shape[1], 3, max(sizes)), np.int64)
    docs = int(spool.doc.max()) + 1 if spool.count else 1
    for level, size in enumerate(sizes):
        node = nodes[:, level]
        out[level, 0, :size] = np.bincount(node, minlength=size)
        out[level, 1, :size] = np.bincount(node, weights=spool.lengths, minlength=size)
        out[level, 2, :size] = np.bincount(np.unique(node * docs + spool.doc) // docs, minlength=size)
    return out


def rows_by_leaf(leaves: np.ndarray):
    """(leaf, its rows in order) for each leaf present in a part's per-window leaf ids."""
    if not len(leaves):
        return
    rows = np.argsort(leaves, kind='stable')
    keys = leaves[rows]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    for start, stop in zip(starts, np.append(starts[1:], len(keys))):
        yield int(keys[start]), rows[start:stop]
