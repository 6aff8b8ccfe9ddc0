"""The offline indexer: text files → windows → embeddings → k-means tree → per-leaf MDS shards.

Stages (each with a progress bar and a timing in the manifest):
  read+tokenize  stream documents, cut token windows, drop eval overlap (--exclude), spool to disk
  embed          fit the embedder on a seeded sample (lsi), embed every window
  fit tree       hierarchical k-means on a seeded sample of the embeddings
  assign         every window down the tree; empty nodes pruned
  pack+write     per leaf: windows EOS-joined into fixed seq_len samples, written with MDSWriter
The index is built in `<out>.building-<pid>` and renamed into place only when complete.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from dataclasses import dataclass, field

import numpy as np
from streaming import MDSWriter
from tqdm.auto import tqdm

from cis_stream.decontam import DEFAULT_NGRAM, EXCLUDED_FILE, Decontaminator, excluded_totals, load_eval_set
from cis_stream.embedders import make_embedder
from cis_stream.manifest import (CLUSTERS_DIR, EMBED_BATCH, EMBEDDER_DIR, FORMAT_VERSION, LEAF_INDEXES,
                                 MANIFEST, REJECTS_FILE, TOKENIZER_FILE, TREE_FILE, CISIndex,
                                 canonical_json, leaf_dir_name, sha256_file, write_leaf_indexes)
from cis_stream.readers import Document, InputError, expand_inputs, read_documents
from cis_stream.spool import WindowSpool
from cis_stream.tokens import load_tokenizer, make_windows
from cis_stream.tree import check_levels, fit_tree

log = logging.getLogger(__name__)

# Documents tokenised together (one tokenizer.encode_batch call); windows packed per chunk.
READ_BATCH_DOCS = 256
PACK_CHUNK_WINDOWS = 1024
# Windows assigned down the tree per call.
ASSIGN_BATCH = 65536
# Default sample sizes: windows to fit the lsi embedder on, and points per leaf to fit the tree on.
# 10,000 windows fit 128 LSI dimensions well; the randomized SVD's cost grows with the sample.
EMBEDDER_FIT_SAMPLE = 10000
TREE_FIT_POINTS_PER_LEAF = 40
TREE_FIT_MIN_SAMPLE = 100000


@dataclass
class IndexOptions:
    """Every option that shapes an index; all of it is recorded in the manifest."""
    embedder: str = 'lsi'
    embedder_config: dict = field(default_factory=dict)
    levels: list[int] = field(default_factory=lambda: [16, 256])
    window: int = 1024
    seq_len: int | None = None
    tokenizer: str | None = None
    eos_token: str | None = None
    text_field: str = 'text'
    seed: int = 0
    embedder_fit_sample: int = EMBEDDER_FIT_SAMPLE
    tree_fit_sample: int | None = None
    # Decontamination (decontam.py): eval files whose text must not be indexed.
    exclude: list[str] = field(default_factory=list)
    exclude_ngram: int = DEFAULT_NGRAM

    def validate(self) -> None:
        check_levels(self.levels)
        if self.window < 1:
            raise ValueError(f'--window {self.window}: must be a positive number of tokens')
        if self.seq_len is not None and self.seq_len < 1:
            raise ValueError(f'--seq-len {self.seq_len}: must be a positive number of tokens')
        if self.exclude_ngram < 1:
            raise ValueError(f'--exclude-ngram {self.exclude_ngram}: must be a positive number of words')


class _Stage:
    """Times one stage for the manifest."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.name] = round(time.perf_counter() - self.start, 3)


class _Inputs:
    """Per-file bookkeeping for the manifest's `inputs` and the rejects log."""

    def __init__(self, files: list[str], rejects_path: str, strict: bool):
        self.stats = {path: {'path': path, 'bytes': os.path.getsize(path), 'documents': 0,
                             'indexed': 0, 'rejected': 0, 'excluded': 0} for path in files}
        self.rejects = open(rejects_path, 'w', encoding='utf-8')
        self.strict = strict
        self.reasons: dict[str, int] = {}

    def record(self, item) -> None:
        stats = self.stats[item.path]
        stats['documents'] += 1
        if isinstance(item, Document):
            stats['indexed'] += 1
            return
        if self.strict:
            raise InputError(f'{item.path}:{item.line}: {item.reason} '
                             f'(without --strict such records are skipped and logged to {REJECTS_FILE})')
        stats['rejected'] += 1
        kind = item.reason.split(':')[0]
        self.reasons[kind] = self.reasons.get(kind, 0) + 1
        self.rejects.write(json.dumps(item.to_json(), ensure_ascii=False) + '\n')

    def exclude(self, doc: Document) -> None:
        """An indexed document that decontamination dropped whole (decontam.py logs why)."""
        self.stats[doc.path]['indexed'] -= 1
        self.stats[doc.path]['excluded'] += 1

    def close(self) -> None:
        self.rejects.close()


def _read_and_tokenize(files, options, tokenizer, spool, inputs, progress, decontam) -> None:
    """Stage 1. A document's ordinal is its position among the documents read without reject."""
    indexed = 0
    batch: list[Document] = []
    total_bytes = sum(s['bytes'] for s in inputs.stats.values())

    def flush():
        windows = make_windows(tokenizer, [d.text for d in batch], options.window)
        if decontam:  # drop eval copies and windows that share an n-gram with eval text
            windows = decontam.screen(batch, windows, inputs.exclude)
        spool.append(windows, np.arange(indexed - len(batch), indexed))
        batch.clear()

    with tqdm(total=total_bytes, unit='B', unit_scale=True, desc='read+tokenize', disable=not progress) as bar:
        current = None
        for item in read_documents(files, options.text_field):
            if item.path != current:
                if current is not None:
                    bar.update(inputs.stats[current]['bytes'])
                current = item.path
            inputs.record(item)
            if isinstance(item, Document):
                indexed += 1
                batch.append(item)
                if len(batch) >= READ_BATCH_DOCS:
                    flush()
        if batch:
            flush()
        if current is not None:
            bar.update(inputs.stats[current]['bytes'])
    spool.close()


def _embed(spool, embedder, options, work, progress) -> np.ndarray:
    """Stage 2: fit (if needed) on a seeded sample, then embed every window into a memmap."""
    rng = np.random.default_rng(options.seed)
    if embedder.needs_fit:
        n = min(spool.count, options.embedder_fit_sample)
        sample = np.sort(rng.choice(spool.count, n, replace=False))
        embedder.fit(spool.texts(sample), options.seed)
    vectors = np.lib.format.open_memmap(os.path.join(work, 'embeddings.npy'), mode='w+',
                                        dtype=np.float32, shape=(spool.count, embedder.dim))
    with tqdm(total=spool.count, unit='win', desc='embed', disable=not progress) as bar:
        for start in range(0, spool.count, EMBED_BATCH):
            rows = np.arange(start, min(start + EMBED_BATCH, spool.count))
            vectors[rows] = embedder.embed(spool.texts(rows))
            bar.update(len(rows))
    vectors.flush()
    return vectors


def _assign(tree, vectors, progress) -> np.ndarray:
    nodes = np.empty((len(vectors), len(tree.centroids)), dtype=np.int64)
    with tqdm(total=len(vectors), unit='win', desc='assign', disable=not progress) as bar:
        for start in range(0, len(vectors), ASSIGN_BATCH):
            stop = min(start + ASSIGN_BATCH, len(vectors))
            nodes[start:stop] = tree.assign(np.asarray(vectors[start:stop]))
            bar.update(stop - start)
    return nodes


def _pack_leaf(rows, spool, writer, seq_len, eos_id, dtype) -> dict:
    """Write one leaf's windows as EOS-joined seq_len samples; the tail is padded with EOS.

    Padding (rather than dropping) keeps every token and guarantees no leaf is empty; the pad
    tokens are counted per leaf in the manifest.
    """
    carry = np.zeros(0, dtype=np.int32)
    samples = 0
    for start in range(0, len(rows), PACK_CHUNK_WINDOWS):
        stream = np.concatenate([carry, spool.eos_joined_tokens(rows[start:start + PACK_CHUNK_WINDOWS], eos_id)])
        full = len(stream) // seq_len
        for i in range(full):
            writer.write({'tokens': stream[i * seq_len:(i + 1) * seq_len].astype(dtype)})
        samples += full
        carry = stream[full * seq_len:]
    pad = (seq_len - len(carry)) % seq_len
    if len(carry):
        writer.write({'tokens': np.concatenate([carry, np.full(pad, eos_id, np.int32)]).astype(dtype)})
        samples += 1
    return {'samples': samples, 'pad_tokens': int(pad)}


def _pack(leaves, spool, staging, seq_len, tokenizer, progress) -> list[dict]:
    order = np.argsort(leaves, kind='stable')
    bounds = np.searchsorted(leaves[order], np.arange(leaves.max() + 2))
    columns = {'tokens': tokenizer.token_dtype}
    dtype = np.dtype(columns['tokens'].split(':')[1])
    packed = []
    for leaf in tqdm(range(leaves.max() + 1), unit='leaf', desc='pack+write', disable=not progress):
        rows = order[bounds[leaf]:bounds[leaf + 1]]
        out = os.path.join(staging, CLUSTERS_DIR, leaf_dir_name(leaf))
        with MDSWriter(out=out, columns=columns, compression='zstd',
                       hashes=['xxh64'], progress_bar=False) as writer:
            packed.append(_pack_leaf(rows, spool, writer, seq_len, tokenizer.eos_id, dtype))
    return packed


def _node_counts(nodes, spool, packed) -> list[dict]:
    """Per-node documents, windows, tokens and samples at every level, plus pruning records."""
    num_levels = nodes.shape[1]
    leaf_samples = np.asarray([p['samples'] for p in packed], np.int64)
    leaf_pad = np.asarray([p['pad_tokens'] for p in packed], np.int64)
    out = []
    for level in range(num_levels):
        node = nodes[:, level]
        size = int(node.max()) + 1
        windows = np.bincount(node, minlength=size)
        tokens = np.bincount(node, weights=spool.lengths, minlength=size).astype(np.int64)
        pairs = np.unique(node * (int(spool.doc.max()) + 1) + spool.doc)
        documents = np.bincount(pairs // (int(spool.doc.max()) + 1), minlength=size)
        leaf_to_node = np.zeros(len(leaf_samples), np.int64)
        leaf_to_node[nodes[:, -1]] = node
        samples = np.bincount(leaf_to_node, weights=leaf_samples, minlength=size).astype(np.int64)
        pad = np.bincount(leaf_to_node, weights=leaf_pad, minlength=size).astype(np.int64)
        out.append({'nodes': [{'documents': int(documents[i]), 'windows': int(windows[i]),
                               'tokens': int(tokens[i]), 'samples': int(samples[i]),
                               'pad_tokens': int(pad[i])} for i in range(size)]})
    return out


def _fingerprint(manifest: dict, staging: str, num_leaves: int) -> str:
    """Hash of everything that defines the index's content (not timings or paths)."""
    digest = hashlib.sha256()
    stable = {k: manifest[k] for k in ('format_version', 'options', 'tree', 'totals')}
    # Where the tokenizer file lived is not content (its bytes are hashed below).
    stable['options'] = dict(stable['options'], tokenizer={
        k: v for k, v in manifest['options']['tokenizer'].items() if k != 'source'})
    stable['inputs'] = [{k: v for k, v in s.items() if k != 'path'} for s in manifest['inputs']]
    if manifest['decontamination']:  # the eval files' bytes and hashes, not where they lay
        stable['decontamination'] = dict(manifest['decontamination'], files=[
            {k: v for k, v in s.items() if k != 'path'} for s in manifest['decontamination']['files']])
    digest.update(canonical_json(stable))
    for name in (TREE_FILE, TOKENIZER_FILE):
        digest.update(sha256_file(os.path.join(staging, name)).encode())
    for root, _, names in sorted(os.walk(os.path.join(staging, EMBEDDER_DIR))):
        for name in sorted(names):
            digest.update(sha256_file(os.path.join(root, name)).encode())
    for leaf in range(num_leaves):
        digest.update(sha256_file(os.path.join(staging, CLUSTERS_DIR, leaf_dir_name(leaf), 'index.json')).encode())
    return digest.hexdigest()


def _publish(staging: str, out: str) -> None:
    """Rename the finished build into place; an old index (with --overwrite) goes only after."""
    old = None
    if os.path.exists(out):
        old = f'{out}.replaced-{os.getpid()}'
        os.rename(out, old)
    os.rename(staging, out)
    if old:
        shutil.rmtree(old)


def build_index(inputs: list[str], out: str, options: IndexOptions | None = None, *, strict: bool = False,
                overwrite: bool = False, progress: bool = True, **option_values) -> CISIndex:
    """Index `inputs` (files, directories, globs) into a published index at `out`.

    Options are an `IndexOptions` or its fields as keywords. Raises `InputError` for bad paths,
    and on the first bad record with `strict=True`.
    """
    options = options or IndexOptions(**option_values)
    options.validate()
    files = expand_inputs(inputs)
    out = os.path.abspath(out)
    if os.path.exists(out) and not overwrite:
        raise FileExistsError(f'{out} already exists; pass --overwrite (overwrite=True) to replace it')
    staging = f'{out}.building-{os.getpid()}'
    shutil.rmtree(staging, ignore_errors=True)
    os.makedirs(staging)
    try:
        manifest = _build(files, staging, options, strict, progress)
        _publish(staging, out)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return CISIndex(out, manifest)


def _build(files, staging, options, strict, progress) -> dict:
    started = time.perf_counter()
    timings: dict[str, float] = {}
    work = os.path.join(staging, '_work')
    tokenizer = load_tokenizer(options.tokenizer, options.eos_token)
    with open(os.path.join(staging, TOKENIZER_FILE), 'w', encoding='utf-8') as handle:
        handle.write(tokenizer.to_json())
    embedder = make_embedder(options.embedder, **options.embedder_config)
    seq_len = options.seq_len or options.window
    decontam = (Decontaminator(load_eval_set(options.exclude, options.exclude_ngram, options.text_field, strict),
                               os.path.join(staging, EXCLUDED_FILE)) if options.exclude else None)
    inputs = _Inputs(files, os.path.join(staging, REJECTS_FILE), strict)
    spool = WindowSpool(work)
    try:
        with _Stage(timings, 'read_tokenize'):
            _read_and_tokenize(files, options, tokenizer, spool, inputs, progress, decontam)
    finally:
        inputs.close()
        if decontam:
            decontam.close()
    if spool.count == 0:
        raise InputError(f'no document could be indexed from {len(files)} file(s): '
                         f'{sum(inputs.reasons.values())} rejected {inputs.reasons}, '
                         f'{sum(s["excluded"] for s in inputs.stats.values())} excluded by --exclude')
    with _Stage(timings, 'embed'):
        vectors = _embed(spool, embedder, options, work, progress)
    os.makedirs(os.path.join(staging, EMBEDDER_DIR))
    embedder.save(os.path.join(staging, EMBEDDER_DIR))
    with _Stage(timings, 'fit_tree'):
        wanted = options.tree_fit_sample or max(TREE_FIT_MIN_SAMPLE, TREE_FIT_POINTS_PER_LEAF * options.levels[-1])
        rows = np.sort(np.random.default_rng(options.seed + 1).choice(
            spool.count, min(spool.count, wanted), replace=False))
        tree = fit_tree(np.asarray(vectors[rows]), options.levels, options.seed, progress)
    with _Stage(timings, 'assign'):
        nodes = _assign(tree, vectors, progress)
        counts = [np.bincount(nodes[:, l], minlength=n) for l, n in enumerate(tree.sizes)]
        planned_sizes = tree.sizes
        tree, remaps = tree.prune(counts)
        nodes = np.stack([remaps[l][nodes[:, l]] for l in range(nodes.shape[1])], axis=1)
        tree.save(os.path.join(staging, TREE_FILE))
    with _Stage(timings, 'pack_write'):
        packed = _pack(nodes[:, -1], spool, staging, seq_len, tokenizer, progress)
    levels = _node_counts(nodes, spool, packed)
    for level, info in enumerate(levels):
        info['planned'] = options.levels[level]
        info['fitted'] = planned_sizes[level]
        info['pruned_empty'] = planned_sizes[level] - len(info['nodes'])
        for node, parent in zip(info['nodes'], tree.parents[level]):
            node['parent'] = int(parent)
    samples = sum(p['samples'] for p in packed)
    pad = sum(p['pad_tokens'] for p in packed)
    totals = {
        'documents_read': sum(s['documents'] for s in inputs.stats.values()),
        'documents_indexed': sum(s['indexed'] for s in inputs.stats.values()),
        'documents_rejected': sum(s['rejected'] for s in inputs.stats.values()),
        'documents_excluded': sum(s['excluded'] for s in inputs.stats.values()), **excluded_totals(decontam),
        'windows': int(spool.count), 'tokens': int(spool.lengths.sum()), 'eos_tokens': int(spool.count),
        'pad_tokens': int(pad), 'samples': int(samples), 'sample_tokens': int(samples * seq_len),
        'input_bytes': sum(s['bytes'] for s in inputs.stats.values()),
    }
    if totals['documents_rejected']:
        log.warning('%d record(s) skipped %s; each is listed with file, line and reason in %s',
                    totals['documents_rejected'], dict(sorted(inputs.reasons.items())), REJECTS_FILE)
    del vectors
    shutil.rmtree(work)
    options_record = {
        'embedder': {'name': options.embedder, 'config': embedder.config()},
        'tokenizer': tokenizer.spec, 'window': options.window, 'seq_len': seq_len,
        'levels': list(options.levels), 'seed': options.seed, 'text_field': options.text_field,
        'embedder_fit_sample': options.embedder_fit_sample, 'tree_fit_sample': int(len(rows)),
        'token_column': tokenizer.token_dtype,
    }
    manifest = {
        'format_version': FORMAT_VERSION, 'options': options_record, 'tree': {'levels': levels},
        'totals': totals, 'rejects': {'file': REJECTS_FILE, 'count': totals['documents_rejected'],
                                      'by_reason': dict(sorted(inputs.reasons.items()))},
        'inputs': list(inputs.stats.values()),
        'decontamination': decontam.record() if decontam else None,
    }
    write_leaf_indexes(staging, len(packed))
    manifest['leaf_indexes_sha256'] = sha256_file(os.path.join(staging, LEAF_INDEXES))
    manifest['fingerprint'] = _fingerprint(manifest, staging, len(packed))
    timings['total'] = round(time.perf_counter() - started, 3)
    manifest['timings'] = timings
    with open(os.path.join(staging, MANIFEST), 'w', encoding='utf-8') as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
    return manifest


def summary(manifest: dict) -> str:
    """The closing summary printed after indexing."""
    t = manifest['totals']
    seconds = manifest['timings']['total']
    excluded = manifest.get('decontamination')
    excluded = (f"; {t['documents_excluded']:,} excluded and {t['windows_excluded']:,} windows "
                f"({t['tokens_excluded']:,} tokens) dropped for overlap with eval text, see {excluded['log']}"
                if excluded else '')
    return (f"indexed {t['documents_indexed']:,} of {t['documents_read']:,} documents "
            f"({t['documents_rejected']:,} rejected, see {manifest['rejects']['file']}{excluded}): "
            f"{t['windows']:,} windows, {t['tokens']:,} tokens, {t['samples']:,} samples in "
            f"{[len(l['nodes']) for l in manifest['tree']['levels']]} clusters per level; "
            f"{seconds:.1f} s, {t['input_bytes'] / 1e6 / max(seconds, 1e-9):.2f} MB/s; "
            f"fingerprint {manifest['fingerprint'][:16]}")
