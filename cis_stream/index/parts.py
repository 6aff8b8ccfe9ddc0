"""The per-part stages of a build (and of `cis-stream add`): read+tokenize, embed, assign, count."""

from __future__ import annotations

import dataclasses
import json
import os
import shutil
from array import array
from dataclasses import dataclass

import numpy as np

from cis_stream.embedders import EMBED_BATCH
from cis_stream.embedders.base import Embedder
from cis_stream.format.files import read_json, replacing, write_json
from cis_stream.format.layout import REJECTS_FILE
from cis_stream.index.options import IndexOptions
from cis_stream.index.spool import WindowSpool
from cis_stream.text import decontam
from cis_stream.text.duplicates import text_hash
from cis_stream.text.inputs import input_bytes, input_origin
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
# What each stage leaves in a part's directory; its presence marks the stage done.
READ_RECORD, EMBEDDINGS_FILE, NODES_FILE, HASHES_FILE = 'read.json', 'embeddings.npy', 'nodes.npy', 'hashes.npy'


@dataclass
class PartRecord:
    """What reading one part found (its READ_RECORD): per-input counts, reject reasons, windows, tokens,
    and the decontamination screen's counts."""
    inputs: list[dict]
    reasons: dict[str, int]
    windows: int
    tokens: int
    decontamination: dict | None = None

    @classmethod
    def load(cls, directory: str) -> PartRecord:
        return cls(**read_json(os.path.join(directory, READ_RECORD)))

    def save(self, directory: str) -> None:
        write_json(os.path.join(directory, READ_RECORD), dataclasses.asdict(self))


def merged_reasons(counts) -> dict[str, int]:
    """Counts by reject reason, added up over several records, sorted by reason."""
    total: dict[str, int] = {}
    for by_reason in counts:
        for kind, n in by_reason.items():
            total[kind] = total.get(kind, 0) + n
    return dict(sorted(total.items()))


def part_totals(records: list[PartRecord], packed: list[dict], seq_len: int) -> dict[str, int]:
    """The manifest totals that read parts and packed leaves add up to: the same sums for a build and
    for what an `add` adds to its index."""
    inputs = [stats for record in records for stats in record.inputs]
    windows = sum(record.windows for record in records)
    samples = sum(result['samples'] for result in packed)
    return {'documents_read': sum(s['documents'] for s in inputs),
            'documents_indexed': sum(s['indexed'] for s in inputs),
            'documents_rejected': sum(s['rejected'] for s in inputs),
            'documents_excluded': sum(s['excluded'] for s in inputs),
            'windows': windows, 'eos_tokens': windows, 'tokens': sum(record.tokens for record in records),
            'pad_tokens': sum(result['pad_tokens'] for result in packed), 'samples': samples,
            'sample_tokens': samples * seq_len, 'input_bytes': sum(s['bytes'] for s in inputs)}


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
              strict: bool, eval_set: decontam.EvalSet | None = None) -> PartRecord:
    """Read and tokenise one part's files into a spool; returns (and records) its bookkeeping.

    With an `eval_set`, documents and windows overlapping it are dropped (decontam.py).
    """
    shutil.rmtree(directory, ignore_errors=True)
    spool = WindowSpool(directory)
    inputs = {path: {'path': path, 'bytes': input_bytes(path), **input_origin(path), 'documents': 0, 'indexed': 0,
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
        # Token ids in an MDS input are decoded only with a tokenizer the user named (text/mds.py).
        decoder = tokenizer if options.tokenizer else None
        for path in files:
            for item in read_file(path, options.text_field, options.max_doc_bytes, decoder):
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
    np.save(os.path.join(directory, HASHES_FILE),
            np.frombuffer(hashes, np.uint64) if hashes else np.zeros(0, np.uint64))
    record = PartRecord(list(inputs.values()), reasons, spool.count, int(spool.lengths.sum()),
                        screen.close() if screen else None)
    record.save(directory)
    return record


def embed_part(directory: str, embedder: Embedder) -> None:
    """Embed every window of a part into `embeddings.npy` (renamed into place when complete)."""
    spool = WindowSpool.open(directory)
    with replacing(os.path.join(directory, EMBEDDINGS_FILE)) as tmp:
        vectors = np.lib.format.open_memmap(tmp, mode='w+', dtype=np.float32, shape=(spool.count, embedder.dim))
        for start in range(0, spool.count, EMBED_BATCH):
            rows = np.arange(start, min(start + EMBED_BATCH, spool.count))
            vectors[rows] = embedder.embed(spool.windows_for(embedder, rows))
        vectors.flush()
        del vectors


def assign_part(directory: str, tree: Tree) -> None:
    """Node ids at every level (of the unpruned tree) for each window of a part: `nodes.npy`."""
    vectors = np.load(os.path.join(directory, EMBEDDINGS_FILE), mmap_mode='r')
    nodes = np.empty((len(vectors), len(tree.centroids)), dtype=np.int64)
    for start in range(0, len(vectors), ASSIGN_BATCH):
        stop = min(start + ASSIGN_BATCH, len(vectors))
        nodes[start:stop] = tree.assign(np.asarray(vectors[start:stop]))
    with replacing(os.path.join(directory, NODES_FILE)) as tmp:
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
