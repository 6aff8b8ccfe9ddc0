"""The offline indexer: text files → windows → embeddings → k-means tree → per-leaf MDS shards.

Stages (each with a progress bar and a timing in the manifest):
  read+tokenize  stream documents, cut token windows, drop eval overlap (--exclude), spool to disk
  embed          fit the embedder on a seeded sample (lsi), embed every window
  fit tree       hierarchical k-means on a seeded sample of the embeddings
  assign         every window down the tree; empty nodes pruned
  pack+write     per leaf: windows EOS-joined into fixed seq_len samples, written with MDSWriter

One process or many (`torchrun ... -m cis_stream.index`, `composer -n N -m cis_stream.index`):
the inputs are cut into *parts* (runs of consecutive files, a plan that depends on the inputs
only), which the ranks read, embed and assign, first come, first served. The embedder and the
tree are fit by rank 0 on seeded samples drawn over the global window order, and each leaf is
packed by one rank from the windows of every part, in input order. So the index (its fingerprint
included) does not depend on the number of processes.

Every finished part, fit and leaf is recorded in `<out>.building/_work`: a run that is killed and
started again with the same command skips what is done. The index is published by renaming
`<out>.building` to `<out>` only when complete; one job at a time may build it (staging.py).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import os
import shutil
import sys
import time
from array import array

import numpy as np
from streaming import MDSWriter
from tqdm.auto import tqdm

from cis_stream import decontam
from cis_stream.dist import Group, balanced_split, one_thread, share_cores
from cis_stream.duplicates import count_duplicates, text_hash
from cis_stream.embedders import Embedder, embedder_class, load_embedder, make_embedder
from cis_stream.manifest import (CLUSTERS_DIR, EMBED_BATCH, EMBEDDER_DIR, FORMAT_VERSION, LEAF_INDEXES,
                                 MANIFEST, REJECTS_FILE, TOKENIZER_FILE, TREE_FILE, CISIndex, NotAnIndexError,
                                 canonical_json, leaf_dir_name, replacing, sha256_file, write_leaf_indexes)
from cis_stream.options import IndexOptions
from cis_stream.readers import Document, InputError, InputFiles, find_inputs, read_file
from cis_stream.spool import WindowSpool
from cis_stream.staging import BuildLockedError, check_apart, lock_staging, staging_dir
from cis_stream.tokens import TokenizerHandle, load_tokenizer, make_windows
from cis_stream.tree import Tree, fit_tree

log = logging.getLogger(__name__)

# Documents tokenised together (one tokenizer.encode_batch call): up to this many, and up to this
# much text, so that memory is set by the batch and not by how long the documents happen to be.
READ_BATCH_DOCS = 256
READ_BATCH_CHARS = 2_000_000
# Windows packed per chunk.
PACK_CHUNK_WINDOWS = 1024
# Windows assigned down the tree per call.
ASSIGN_BATCH = 65536
# Default sample sizes: windows to fit the lsi embedder on, and points per leaf to fit the tree on.
# The lsi fit sample is counted in tokens, since IDF and SVD statistics come from the text, not the
# window count (and the randomized SVD's cost grows with it): random windows until 2.56M tokens
# (10,000 full windows of 256 tokens, 2,500 of 1,024), never fewer than 1,000 or more than 10,000.
EMBEDDER_FIT_TOKENS = 2_560_000
EMBEDDER_FIT_WINDOWS = (1000, 10000)
TREE_FIT_POINTS_PER_LEAF = 40
TREE_FIT_MIN_SAMPLE = 100000
# Parts (the unit of work and of resumption): about 1/64 of the corpus, within these bounds.
PARTS_WANTED = 64
PART_MIN_BYTES = 1 << 20
PART_MAX_BYTES = 64 << 20
WORK_DIR = '_work'
# Windows shorter than this (tokens) give the embedder too little text: warned about.
SHORT_WINDOW = 32
# More padding than this share of the sample tokens (too many leaves for the corpus) is warned about.
PAD_WARN_SHARE = 0.2


class _Stage:
    """Times one stage for the manifest."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.name] = round(time.perf_counter() - self.start, 3)


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


def _write_json(path: str, obj) -> None:
    """Write-then-rename, so a record is either complete or absent (it marks work as done)."""
    with replacing(path) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(obj, handle, sort_keys=True)


def _read_json(path: str):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)


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
    _write_json(os.path.join(directory, 'read.json'), info)
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


def pack_leaf(chunks, writer, seq_len: int, eos_id: int, dtype) -> dict:
    """Write one leaf's EOS-joined token stream as fixed seq_len samples; the tail is padded with EOS.

    Padding (rather than dropping) keeps every token and guarantees no leaf is empty; the pad
    tokens are counted per leaf in the manifest.
    """
    carry = np.zeros(0, dtype=np.int32)
    samples = 0
    for chunk in chunks:
        stream = np.concatenate([carry, chunk])
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


def leaf_chunks(sources, eos_id: int):
    """A leaf's windows, EOS-joined, from (spool, rows) sources in order, a chunk at a time."""
    for spool, rows in sources:
        for start in range(0, len(rows), PACK_CHUNK_WINDOWS):
            yield spool.eos_joined_tokens(rows[start:start + PACK_CHUNK_WINDOWS], eos_id)


def write_leaf(out: str, sources, seq_len: int, tokenizer: TokenizerHandle) -> dict:
    """One MDS stream (`tokens` column, zstd, xxh64) holding a leaf's windows."""
    columns = {'tokens': tokenizer.token_dtype}
    dtype = np.dtype(columns['tokens'].split(':')[1])
    shutil.rmtree(out, ignore_errors=True)
    with MDSWriter(out=out, columns=columns, compression='zstd', hashes=['xxh64'], progress_bar=False) as writer:
        return pack_leaf(leaf_chunks(sources, tokenizer.eos_id), writer, seq_len, tokenizer.eos_id, dtype)


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


def node_records(tree: Tree, counts: np.ndarray, packed: list[dict], planned: list[int],
                 fitted: list[int]) -> list[dict]:
    """The manifest's per-level node records: counts, samples, pad tokens, parent, pruning."""
    leaf_samples = np.asarray([p['samples'] for p in packed], np.int64)
    leaf_pad = np.asarray([p['pad_tokens'] for p in packed], np.int64)
    node_of_leaf = np.arange(len(packed))
    levels = []
    for level in reversed(range(len(tree.sizes))):
        size = tree.sizes[level]
        samples = np.bincount(node_of_leaf, weights=leaf_samples, minlength=size).astype(np.int64)
        pad = np.bincount(node_of_leaf, weights=leaf_pad, minlength=size).astype(np.int64)
        windows, tokens, documents = counts[level, :, :size]
        levels.insert(0, {
            'planned': planned[level], 'fitted': fitted[level], 'pruned_empty': fitted[level] - size,
            'nodes': [{'documents': int(documents[i]), 'windows': int(windows[i]), 'tokens': int(tokens[i]),
                       'samples': int(samples[i]), 'pad_tokens': int(pad[i]),
                       'parent': int(tree.parents[level][i])} for i in range(size)]})
        node_of_leaf = tree.parents[level][node_of_leaf]
    return levels


def fingerprint(manifest: dict, root: str, num_leaves: int) -> str:
    """Hash of everything that defines the index's content (not timings or paths)."""
    digest = hashlib.sha256()
    stable = {k: manifest[k] for k in ('format_version', 'options', 'tree', 'totals')}
    # Where the tokenizer file lived is not content (its bytes are hashed below).
    stable['options'] = dict(stable['options'], tokenizer={
        k: v for k, v in manifest['options']['tokenizer'].items() if k != 'source'})
    stable['inputs'] = [{k: v for k, v in s.items() if k != 'path'} for s in manifest['inputs']]
    if manifest.get('decontamination'):  # the eval files' bytes and hashes, not where they lay
        stable['decontamination'] = dict(manifest['decontamination'], files=[
            {k: v for k, v in s.items() if k != 'path'} for s in manifest['decontamination']['files']])
    digest.update(canonical_json(stable))
    for name in (TREE_FILE, TOKENIZER_FILE):
        digest.update(sha256_file(os.path.join(root, name)).encode())
    for folder, _, names in sorted(os.walk(os.path.join(root, EMBEDDER_DIR))):
        for name in sorted(names):
            digest.update(sha256_file(os.path.join(folder, name)).encode())
    for leaf in range(num_leaves):
        digest.update(sha256_file(os.path.join(root, CLUSTERS_DIR, leaf_dir_name(leaf), 'index.json')).encode())
    return digest.hexdigest()


def finish_manifest(manifest: dict, root: str, num_leaves: int) -> dict:
    """Bundle the leaf indexes, fingerprint the content and write the manifest into `root`."""
    write_leaf_indexes(root, num_leaves)
    manifest['leaf_indexes_sha256'] = sha256_file(os.path.join(root, LEAF_INDEXES))
    manifest['fingerprint'] = fingerprint(manifest, root, num_leaves)
    with replacing(os.path.join(root, MANIFEST)) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
    return manifest


def publish(staging: str, out: str) -> None:
    """Rename the finished build into place; an old index (with --overwrite) goes only after."""
    old = None
    if os.path.exists(out):
        old = f'{out}.replaced-{os.getpid()}'
        os.rename(out, old)
    os.rename(staging, out)
    if old:
        shutil.rmtree(old)


def build_index(inputs: list[str], out: str, options: IndexOptions | None = None, *, strict: bool = False,
                overwrite: bool = False, restart: bool = False, part_bytes: int | None = None,
                progress: bool = True, **option_values) -> CISIndex:
    """Index `inputs` (files, directories, globs) into a published index at `out`.

    Options are an `IndexOptions` or its fields as keywords. Run by several processes (WORLD_SIZE
    in the environment), they share the work, `part_bytes` of input at a time. An unfinished build
    of the same inputs and options is resumed unless `restart`. Raises `InputError` for bad paths,
    and on the first bad record or skipped file with `strict=True`; `ValueError` for an `out` that
    is, holds or lies inside an input; `FileExistsError` for an existing `out`, unless `overwrite`
    and it is an index; `BuildLockedError` while another job builds `out` (staging.py).
    """
    options = options or IndexOptions(**option_values)
    options.validate()
    found = find_inputs(inputs, strict)
    out = os.path.abspath(out)
    check_apart(out, inputs)
    check_apart(out, options.exclude, '--exclude file')
    group = Group()
    try:
        if group.leader:
            _warn_before(options, found)
        with _job_lock(group, out):
            _check_replaceable(out, overwrite)
            job = _Job(found.files, out, options, strict, progress, group, restart, part_bytes, found.skipped)
            try:
                manifest = job.run()
            except ValueError:
                # Bad input or options: nothing worth resuming (and the inputs will change).
                if group.world == 1:
                    shutil.rmtree(job.staging, ignore_errors=True)
                raise
            except BaseException:
                if group.leader and os.path.isdir(job.staging):
                    log.warning('indexing stopped; the work done is kept in %s: run the same command again '
                                'to resume (or pass --restart to start over)', job.staging)
                raise
            group.barrier()  # every rank returns once the index is published
    finally:
        group.close()
    return CISIndex(out, manifest) if manifest else CISIndex.open(out)


def _warn_before(options: IndexOptions, found: InputFiles) -> None:
    if found.skipped:
        log.warning('%s; each is listed in the manifest (skipped_files); pass --strict to make this an error',
                    found.describe_skipped())
    if options.window < SHORT_WINDOW:
        log.warning('--window %d: windows of %d token(s) give the embedder almost no text to place them by (the '
                    'paper uses 1,024; 128 or more is usual): use a larger --window', options.window, options.window)


@contextlib.contextmanager
def _job_lock(group: Group, out: str):
    """Rank 0 holds the staging lock for the whole job (staging.py); every rank learns if it got it."""
    with contextlib.ExitStack() as stack:
        refused = None
        if group.leader:
            try:
                stack.enter_context(lock_staging(out))
            except BuildLockedError as err:
                refused = err
        if group.sum(np.asarray([refused is not None], np.int64))[0]:
            raise refused or BuildLockedError(f'another build of {out} is running (rank 0 found it locked)')
        yield


def _check_replaceable(out: str, overwrite: bool) -> None:
    """An existing `out` is replaced only with `overwrite`, and only if it is an index."""
    if not os.path.lexists(out):
        return
    if not overwrite:
        raise FileExistsError(f'{out} already exists; pass --overwrite (overwrite=True) to replace it')
    try:
        CISIndex.open(out)
    except NotAnIndexError:
        what = 'a directory but not a cis_stream index' if os.path.isdir(out) else 'a file, not an index'
        raise FileExistsError(f'{out} is {what}; --overwrite replaces only a cis_stream index (a directory with '
                              f'a valid {MANIFEST}), never other files: choose another --out, or move {out} '
                              f'away yourself') from None


class _Job:
    """One indexing run, on one rank of the process group."""

    def __init__(self, files, out, options, strict, progress, group, restart, part_bytes, skipped=()):
        self.files, self.out, self.options, self.strict, self.group = files, out, options, strict, group
        self.skipped = list(skipped)  # files under the inputs that are not read: {'path', 'reason'}
        self.progress = progress and group.leader
        self.staging = staging_dir(out)
        self.work = os.path.join(self.staging, WORK_DIR)
        self.claims = os.path.join(self.work, 'claims')
        self.sizes = [os.path.getsize(path) for path in files]
        self.parts = plan_parts(self.sizes, part_bytes)
        self.part_bytes = [sum(self.sizes[i] for i in part) for part in self.parts]
        # Parts whose counts this rank adds up (a fixed deal: each part counted once).
        self.mine = balanced_split(self.part_bytes, group.world)[group.rank]
        if group.leader and len(self.parts) < group.world:
            log.warning('%d part(s) of input for %d processes: %d process(es) will have no input to read or embed. '
                        'A part is a run of whole files, so split large inputs into more files than processes',
                        len(self.parts), group.world, group.world - len(self.parts))
        self.seq_len = options.seq_len or options.window
        self.embedder_fit_sample: int | None = None  # windows the embedder was fit on (rank 0)
        self.timings: dict[str, float] = {}
        self._open_job(restart)

    def _open_job(self, restart: bool) -> None:
        """Start the staging directory, or check that the one there holds this same job."""
        record = {'format_version': FORMAT_VERSION, 'options': dataclasses.asdict(self.options),
                  'parts': self.parts,
                  'inputs': [{'path': path, 'bytes': size, 'mtime_ns': os.stat(path).st_mtime_ns}
                             for path, size in zip(self.files, self.sizes)]}
        record = json.loads(canonical_json(record))
        path = os.path.join(self.work, 'job.json')
        if self.group.leader:
            if restart:
                shutil.rmtree(self.staging, ignore_errors=True)
            if not os.path.exists(path):
                shutil.rmtree(self.staging, ignore_errors=True)
                os.makedirs(self.work)
                _write_json(path, record)
            # Claims of an earlier, killed run: their work is redone unless its marker exists.
            shutil.rmtree(self.claims, ignore_errors=True)
            os.makedirs(self.claims)
        self.group.barrier()
        if _read_json(path) != record:
            raise FileExistsError(f'{self.staging} holds an unfinished build of other inputs or options; '
                                  f'rerun with --restart to discard it (or delete it)')
        self.resumed = os.path.exists(os.path.join(self.part_dir(0), 'read.json'))

    def part_dir(self, part: int) -> str:
        return os.path.join(self.work, 'parts', f'{part:06d}')

    def _done(self, part: int, name: str) -> bool:
        return os.path.exists(os.path.join(self.part_dir(part), name))

    def _share(self, marker: str, weights, unit: str, desc: str, work) -> int:
        """`work(part)` for every part without `marker`, shared among the ranks first come, first
        served (largest first), so that a slow core or node does less of it. Which rank does a
        part changes nothing in the result. Returns how many parts this rank did."""
        done_here = 0
        todo = sorted((p for p in range(len(self.parts)) if not self._done(p, marker)), key=lambda p: (-weights[p], p))
        with self._bar(sum(weights[p] for p in todo), unit, desc) as bar:
            shown = time.monotonic()
            for p in todo:
                if self._claim(f'{marker}-{p}'):
                    work(p)
                    done_here += 1
                if self.progress and time.monotonic() - shown > 1:  # every rank's progress, once a second
                    bar.update(sum(weights[q] for q in todo if self._done(q, marker)) - bar.n)
                    shown = time.monotonic()
            self.group.barrier()
            bar.update(bar.total - bar.n)
        return done_here

    def _claim(self, name: str) -> bool:
        """True for the one rank that creates the claim file `name` (atomic, also on NFS)."""
        if self.group.world == 1:
            return True
        try:
            os.close(os.open(os.path.join(self.claims, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def _first_rejects(self, count: int = 3) -> str:
        """The first rejects logged (file, line, reason), e.g. the fields a wrong --text-field missed."""
        first = []
        for part in range(len(self.parts)):
            with open(os.path.join(self.part_dir(part), REJECTS_FILE), encoding='utf-8') as handle:
                first += [json.loads(line) for _, line in zip(range(count - len(first)), handle)]
        return ''.join(f"\n  {r['file']}:{r['line']}: {r['reason']}" for r in first)

    def _bar(self, total, unit, desc):
        return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, disable=not self.progress)

    def run(self) -> dict:
        started = time.perf_counter()
        tokenizer = load_tokenizer(self.options.tokenizer, self.options.eos_token)
        with _Stage(self.timings, 'read_tokenize'):
            self._read(tokenizer)
        infos = [_read_json(os.path.join(self.part_dir(p), 'read.json')) for p in range(len(self.parts))]
        self.window_counts = np.asarray([info['windows'] for info in infos], np.int64)
        if self.window_counts.sum() == 0:
            rejected = {}
            for info in infos:
                for kind, n in info['reasons'].items():
                    rejected[kind] = rejected.get(kind, 0) + n
            excluded = sum(s['excluded'] for info in infos for s in info['inputs'])
            raise InputError(f'no document could be indexed from {len(self.files)} file(s): '
                             f'{sum(rejected.values())} rejected {rejected}, {excluded} excluded by --exclude; '
                             f'the first rejects:{self._first_rejects()}')
        with _Stage(self.timings, 'fit_embedder'):
            embedder = self._fit_embedder()
        with _Stage(self.timings, 'embed'):
            self._share('embeddings.npy', self.window_counts, 'win', 'embed',
                        lambda p: embed_part(self.part_dir(p), embedder))
        with _Stage(self.timings, 'fit_tree'):
            tree, tree_sample = self._fit_tree()
        with _Stage(self.timings, 'assign'):
            self._share('nodes.npy', self.window_counts, 'win', 'assign', lambda p: assign_part(self.part_dir(p), tree))
            pruned, remaps = self._prune(tree)
        with _Stage(self.timings, 'pack_write'):
            self._pack(pruned, remaps, tokenizer)
        counts = self._counts(pruned, remaps)
        if not self.group.leader:
            return {}
        manifest = self._manifest(tokenizer, embedder, pruned, tree.sizes, counts, infos, tree_sample)
        shutil.rmtree(self.work)
        self.timings['total'] = round(time.perf_counter() - started, 3)
        manifest['timings'] = self.timings
        manifest = finish_manifest(manifest, self.staging, pruned.sizes[-1])
        publish(self.staging, self.out)
        return manifest

    # Stages ---------------------------------------------------------------------------------

    def _read(self, tokenizer) -> None:
        options = self.options
        self.eval_set = (decontam.load_eval_set(options.exclude, options.exclude_ngram, options.text_field, self.strict)
                         if options.exclude else None)
        read_here = self._share('read.json', self.part_bytes, 'B', 'read+tokenize',
                                lambda p: read_part([self.files[i] for i in self.parts[p]], self.part_dir(p), options,
                                                    tokenizer, self.strict, self.eval_set))
        self.parts_read_by_rank = self.group.sum(np.bincount([self.group.rank], minlength=self.group.world) * read_here)

    def _global_rows(self, rows: np.ndarray):
        """(part, local rows) for sorted global window numbers (windows numbered in input order)."""
        offsets = np.concatenate([[0], np.cumsum(self.window_counts)])
        owner = np.searchsorted(offsets, rows, side='right') - 1
        for part in np.unique(owner):
            yield int(part), rows[owner == part] - offsets[part]

    def _fit_embedder(self) -> Embedder:
        """Rank 0 fits on a seeded sample of windows and saves the state; every rank loads it."""
        options, path = self.options, os.path.join(self.staging, EMBEDDER_DIR)
        fitted = None
        needs_fit = embedder_class(options.embedder).needs_fit
        if self.group.leader and needs_fit:
            sample = self._embedder_fit_rows()  # cheap: recomputed when resuming, for the manifest
            self.embedder_fit_sample = len(sample)
        if self.group.leader and not os.path.exists(path):
            fitted = make_embedder(options.embedder, **options.embedder_config)
            if needs_fit:
                texts = [text for part, rows in self._global_rows(sample)
                         for text in WindowSpool.open(self.part_dir(part)).texts(rows)]
                # One step, but its line shows what the build is doing meanwhile, and then how long it took.
                with self._bar(1, 'fit', f'fit embedder on {len(texts):,} windows') as bar, one_thread():
                    fitted.fit(texts, options.seed)
                    bar.update(1)
            with replacing(path) as tmp:
                os.makedirs(tmp)
                fitted.save(tmp)
        self.group.barrier()
        return fitted or load_embedder(options.embedder, options.embedder_config, path)

    def _embedder_fit_rows(self) -> np.ndarray:
        """Sorted global window numbers of the embedder's seeded fit sample (see EMBEDDER_FIT_TOKENS)."""
        total = int(self.window_counts.sum())
        rng = np.random.default_rng(self.options.seed)
        if self.options.embedder_fit_sample:
            return np.sort(rng.choice(total, min(total, self.options.embedder_fit_sample), replace=False))
        low, high = EMBEDDER_FIT_WINDOWS
        candidates = rng.choice(total, min(total, high), replace=False)  # in random order
        rows = np.sort(candidates)
        lengths = np.concatenate([WindowSpool.open(self.part_dir(part)).lengths[local]
                                  for part, local in self._global_rows(rows)])[np.searchsorted(rows, candidates)]
        count = max(low, int(np.searchsorted(np.cumsum(lengths), EMBEDDER_FIT_TOKENS)) + 1)
        return np.sort(candidates[:count])

    def _fit_tree(self) -> tuple[Tree, int]:
        """Rank 0 fits the tree on a seeded sample of embeddings; every rank loads it."""
        options, path = self.options, os.path.join(self.work, 'tree_fitted.npz')
        total = int(self.window_counts.sum())
        wanted = options.tree_fit_sample or max(TREE_FIT_MIN_SAMPLE, TREE_FIT_POINTS_PER_LEAF * options.levels[-1])
        rows = np.sort(np.random.default_rng(options.seed + 1).choice(total, min(total, wanted), replace=False))
        if self.group.leader and not os.path.exists(path):
            sample = np.concatenate([np.load(os.path.join(self.part_dir(part), 'embeddings.npy'),
                                             mmap_mode='r')[local] for part, local in self._global_rows(rows)])
            with one_thread(), replacing(path) as tmp:
                fit_tree(sample, options.levels, options.seed, self.progress).save(tmp)
        self.group.barrier()
        return Tree.load(path), len(rows)

    def _sum_over_parts(self, per_part, shape: tuple) -> np.ndarray:
        """Sum of the int64 arrays per_part(part) over this rank's parts, then over ranks."""
        total = np.zeros(shape, np.int64)
        for part in self.mine:
            total += per_part(part)
        return self.group.sum(total)

    def _nodes(self, part: int) -> np.ndarray:
        return np.load(os.path.join(self.part_dir(part), 'nodes.npy'))

    def _prune(self, tree: Tree) -> tuple[Tree, list[np.ndarray]]:
        """Drop the nodes no window reached (the same on every rank: counts are summed first)."""
        width = max(tree.sizes)

        def windows(part):
            nodes = self._nodes(part)
            return np.stack([np.bincount(nodes[:, level], minlength=width) for level in range(nodes.shape[1])])
        counts = self._sum_over_parts(windows, (len(tree.sizes), width))
        return tree.prune([counts[level, :size] for level, size in enumerate(tree.sizes)])

    def _pack(self, tree: Tree, remaps, tokenizer) -> None:
        """This rank's leaves (every world-th), each from the windows of all parts in input order."""
        world, rank = self.group.world, self.group.rank
        packed_dir = os.path.join(self.work, 'packed')
        os.makedirs(packed_dir, exist_ok=True)
        mine = [leaf for leaf in range(rank, tree.sizes[-1], world)
                if not os.path.exists(os.path.join(packed_dir, f'{leaf}.json'))]
        sources: dict[int, list] = {leaf: [] for leaf in mine}
        if mine:
            for part in range(len(self.parts)):
                spool = None
                for leaf, rows in rows_by_leaf(remaps[-1][self._nodes(part)[:, -1]]):
                    if leaf in sources:
                        spool = spool or WindowSpool.open(self.part_dir(part))
                        sources[leaf].append((spool, rows))
        for leaf in tqdm(mine, unit='leaf', desc='pack+write', disable=not self.progress):
            out = os.path.join(self.staging, CLUSTERS_DIR, leaf_dir_name(leaf))
            result = write_leaf(out, sources.pop(leaf), self.seq_len, tokenizer)
            _write_json(os.path.join(packed_dir, f'{leaf}.json'), result)
        self.group.barrier()

    def _counts(self, tree: Tree, remaps) -> np.ndarray:
        def counts(part):
            nodes = self._nodes(part)
            nodes = np.stack([remaps[level][nodes[:, level]] for level in range(nodes.shape[1])], axis=1)
            return part_counts(nodes, WindowSpool.open(self.part_dir(part)), tree.sizes)
        return self._sum_over_parts(counts, (len(tree.sizes), 3, max(tree.sizes)))

    def _manifest(self, tokenizer, embedder, tree, fitted_sizes, counts, infos, tree_sample) -> dict:
        options, staging = self.options, self.staging
        with replacing(os.path.join(staging, TOKENIZER_FILE)) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
            handle.write(tokenizer.to_json())
        with replacing(os.path.join(staging, TREE_FILE)) as tmp:
            tree.save(tmp)
        packed = [_read_json(os.path.join(self.work, 'packed', f'{leaf}.json')) for leaf in range(tree.sizes[-1])]
        levels = node_records(tree, counts, packed, options.levels, fitted_sizes)
        inputs = [stats for info in infos for stats in info['inputs']]
        reasons: dict[str, int] = {}
        for info in infos:
            for kind, n in info['reasons'].items():
                reasons[kind] = reasons.get(kind, 0) + n
        self._join_logs(REJECTS_FILE)
        decontamination = None
        if self.eval_set:
            self._join_logs(decontam.EXCLUDED_FILE)
            decontamination = decontam.record(self.eval_set, [info['decontamination'] for info in infos])
        samples = sum(p['samples'] for p in packed)
        windows = int(self.window_counts.sum())
        totals = {
            'documents_read': sum(s['documents'] for s in inputs),
            'documents_indexed': sum(s['indexed'] for s in inputs),
            'documents_rejected': sum(s['rejected'] for s in inputs),
            'documents_excluded': sum(s['excluded'] for s in inputs),
            'windows_excluded': decontamination['windows_excluded'] if decontamination else 0,
            'tokens_excluded': decontamination['tokens_excluded'] if decontamination else 0,
            'windows': windows, 'tokens': sum(info['tokens'] for info in infos), 'eos_tokens': windows,
            'pad_tokens': sum(p['pad_tokens'] for p in packed), 'samples': samples,
            'sample_tokens': samples * self.seq_len, 'input_bytes': sum(s['bytes'] for s in inputs),
            'duplicate_documents': count_duplicates(np.concatenate(
                [np.load(os.path.join(self.part_dir(p), 'hashes.npy')) for p in range(len(self.parts))])),
        }
        if totals['duplicate_documents']:
            log.warning('%d indexed document(s) repeat an earlier one exactly: kept, and counted in the manifest '
                        '(totals.duplicate_documents); deduplicate the inputs first to drop them',
                        totals['duplicate_documents'])
        if totals['documents_rejected']:
            log.warning('%d record(s) skipped %s; each is listed with file, line and reason in %s',
                        totals['documents_rejected'], dict(sorted(reasons.items())), REJECTS_FILE)
        pad, sample_tokens = totals['pad_tokens'], totals['sample_tokens']
        if pad > PAD_WARN_SHARE * sample_tokens:
            enough = max(1, (totals['tokens'] + windows) // (10 * self.seq_len))  # ~10 samples per leaf
            log.warning(f'{pad:,} of the {sample_tokens:,} sample tokens ({100 * pad / sample_tokens:.0f}%) are '
                        f'padding: each of the {tree.sizes[-1]} leaves pads its last sample to --seq-len '
                        f'{self.seq_len}, and they hold only {windows:,} windows; use fewer leaves (a last --levels '
                        f'of about {enough} or less) or a shorter --seq-len')
        options_record = {
            'embedder': {'name': options.embedder, 'config': embedder.config()},
            'tokenizer': tokenizer.spec, 'window': options.window, 'seq_len': self.seq_len,
            'levels': list(options.levels), 'seed': options.seed, 'text_field': options.text_field,
            'embedder_fit_sample': self.embedder_fit_sample, 'tree_fit_sample': int(tree_sample),
            'token_column': tokenizer.token_dtype, 'max_doc_bytes': options.max_doc_bytes,
        }
        return {
            'format_version': FORMAT_VERSION, 'options': options_record, 'tree': {'levels': levels},
            'totals': totals, 'rejects': {'file': REJECTS_FILE, 'count': totals['documents_rejected'],
                                          'by_reason': dict(sorted(reasons.items()))},
            'inputs': inputs, 'skipped_files': self.skipped, 'decontamination': decontamination,
            'build': {'processes': self.group.world, 'parts': len(self.parts), 'resumed': self.resumed,
                      'parts_read_by_rank': self.parts_read_by_rank.tolist()},
        }

    def _join_logs(self, name: str) -> None:
        """The parts' logs called `name`, in input order, as one file of the index."""
        with replacing(os.path.join(self.staging, name)) as tmp, open(tmp, 'wb') as joined:
            for part in range(len(self.parts)):
                with open(os.path.join(self.part_dir(part), name), 'rb') as handle:
                    shutil.copyfileobj(handle, joined)


def rows_by_leaf(leaves: np.ndarray):
    """(leaf, its rows in order) for each leaf present in a part's per-window leaf ids."""
    if not len(leaves):
        return
    rows = np.argsort(leaves, kind='stable')
    keys = leaves[rows]
    starts = np.flatnonzero(np.concatenate([[True], keys[1:] != keys[:-1]]))
    for start, stop in zip(starts, np.append(starts[1:], len(keys))):
        yield int(keys[start]), rows[start:stop]


def summary(manifest: dict) -> str:
    """The closing summary printed after indexing."""
    t = manifest['totals']
    seconds = manifest['timings'].get('total')  # absent after `cis-stream add`, whose time is timings.add
    # Also after `add --no-decontaminate`, which drops the decontamination record but not the counts.
    excluded = (f"; {t['documents_excluded']:,} excluded and {t['windows_excluded']:,} windows "
                f"({t['tokens_excluded']:,} tokens) dropped for overlap with eval text, see {decontam.EXCLUDED_FILE}"
                if manifest.get('decontamination') or t.get('documents_excluded') else '')
    skipped = manifest.get('skipped_files')
    skipped = f'; {len(skipped):,} file(s) skipped, not read, see skipped_files in {MANIFEST}' if skipped else ''
    # A resumed run's time covers only what it redid, so a rate over all the input would be false.
    took = ('grown by cis-stream add' if seconds is None else
            f'{seconds:.1f} s, resumed' if manifest.get('build', {}).get('resumed') else
            f"{seconds:.1f} s, {t['input_bytes'] / 1e6 / max(seconds, 1e-9):.2f} MB/s")
    return (f"indexed {t['documents_indexed']:,} of {t['documents_read']:,} documents "
            f"({t['documents_rejected']:,} rejected, see {manifest['rejects']['file']}{excluded}{skipped}): "
            f"{t['windows']:,} windows, {t['tokens']:,} tokens, {t['samples']:,} samples in "
            f"{[len(l['nodes']) for l in manifest['tree']['levels']]} clusters per level; "
            f"{took}; fingerprint {manifest['fingerprint'][:16]}")


def main(argv: list[str] | None = None) -> int:
    """`torchrun ... -m cis_stream.index` / `composer -n N -m cis_stream.index`: `cis-stream index` flags."""
    share_cores()
    from cis_stream.cli import main as cli_main
    return cli_main(['index', *(sys.argv[1:] if argv is None else argv)])


if __name__ == '__main__':
    sys.exit(main())
