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
import importlib
import json
import logging
import os
import shutil
import time

import numpy as np
from tqdm.auto import tqdm

from cis_stream.format.files import canonical_json, read_json, replacing, write_json
from cis_stream.format.layout import (
    CLUSTERS_DIR,
    EMBEDDER_DIR,
    FORMAT_VERSION,
    MANIFEST,
    REJECTS_FILE,
    TOKENIZER_FILE,
    TREE_FILE,
    NotAnIndexError,
    leaf_dir_name,
    staging_dir,
)
from cis_stream.format.leaves import write_leaf
from cis_stream.format.manifest import finish_manifest, node_records
from cis_stream.format.publish import BuildLockedError, check_apart, lock_staging, publish
from cis_stream.format.reader import CISIndex
from cis_stream.index.dist import Group
from cis_stream.index.fits import fit_embedder, fit_tree_on_sample
from cis_stream.index.options import IndexOptions, build_request
from cis_stream.index.parts import (
    EMBEDDINGS_FILE,
    HASHES_FILE,
    NODES_FILE,
    READ_RECORD,
    PartRecord,
    assign_part,
    embed_part,
    merged_reasons,
    part_counts,
    part_totals,
    plan_parts,
    read_part,
    rows_by_leaf,
)
from cis_stream.index.spool import WindowSpool
from cis_stream.index.upload import build_and_upload
from cis_stream.index.work import WORK_DIR, PartWork, StageTimer
from cis_stream.text import decontam
from cis_stream.text.duplicates import count_duplicates
from cis_stream.text.inputs import input_bytes, input_stamp
from cis_stream.text.readers import InputError, InputFiles, find_inputs
from cis_stream.text.remote import is_remote
from cis_stream.text.tokens import load_tokenizer
from cis_stream.tree import Tree

log = logging.getLogger(__name__)

# Windows shorter than this (tokens) give the embedder too little text: warned about.
SHORT_WINDOW = 32
# More padding than this share of the sample tokens (too many leaves for the corpus) is warned about.
PAD_WARN_SHARE = 0.2


def build_index(inputs: list[str], out: str, options: IndexOptions | None = None, *, strict: bool = False,
                overwrite: bool = False, restart: bool = False, part_bytes: int | None = None,
                progress: bool = True, staging: str | None = None, **option_values) -> CISIndex:
    """Index `inputs` (files, directories, globs) into a published index at `out`.

    An `s3://` `out` is built locally in `staging` (default: a folder named after the URL under
    $TMPDIR/cis_stream_publish), then uploaded, manifest last (format/upload.py); the local copy is
    returned and kept, so that a killed upload resumes where it stopped when the command is rerun.

    Options are an `IndexOptions` or its fields as keywords. Run by several processes (WORLD_SIZE
    in the environment), they share the work, `part_bytes` of input at a time. An unfinished build
    of the same inputs and options is resumed unless `restart`. Raises `InputError` for bad paths,
    and on the first bad record or skipped file with `strict=True`; `ValueError` for an `out` that
    is, holds or lies inside an input; `FileExistsError` for an existing `out`, unless `overwrite`
    and it is an index; `BuildLockedError` while another job builds `out` (staging.py).
    """
    options = options or IndexOptions(**option_values)
    options.validate()
    if is_remote(out):
        return build_and_upload(build_index, inputs, out, options, staging, strict=strict, overwrite=overwrite,
                                restart=restart, part_bytes=part_bytes, progress=progress)
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
            job = IndexJob(found.files, out, options, strict, progress, group, restart, part_bytes, found.skipped)
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


def _import_streaming() -> None:
    """Import Streaming (for the pack stage's MDS writer) before the fits, never after them.

    Its import (torch, torchvision, transformers) changes the fits' floating-point results in the
    last bits (measured: another fingerprint for the same build), so an index must not depend on
    whether its caller had imported Streaming already. The import takes seconds, so it is not done
    at start-up, where a bad option or path should fail at once. (On a thread while reading, it made
    reading 2-3x slower: the two take turns at the GIL.)"""
    importlib.import_module('streaming')


class IndexJob(PartWork):
    """One indexing run, on one rank of the process group (public so that tests and tools can drive
    ranks as threads; `build_index` is the entry point)."""

    def __init__(self, files, out, options, strict, progress, group, restart, part_bytes, skipped=()):
        self.files, self.out, self.options, self.strict = files, out, options, strict
        self.skipped = list(skipped)  # files under the inputs that are not read: {'path', 'reason'}
        self.staging = staging_dir(out)
        self.sizes = [input_bytes(path) for path in files]
        self.parts = plan_parts(self.sizes, part_bytes)
        self.part_bytes = [sum(self.sizes[i] for i in part) for part in self.parts]
        super().__init__(os.path.join(self.staging, WORK_DIR), self.part_bytes, group, progress)
        if group.leader and len(self.parts) < group.world:
            log.warning('%d part(s) of input for %d processes: %d process(es) will have no input to read or embed. '
                        'A part is a run of whole files, so split large inputs into more files than processes',
                        len(self.parts), group.world, group.world - len(self.parts))
        self.seq_len = options.seq_len or options.window
        self.timings: dict[str, float] = {}
        self._open_job(restart)

    def _open_job(self, restart: bool) -> None:
        """Start the staging directory, or check that the one there holds this same job."""
        record = {'format_version': FORMAT_VERSION, 'options': dataclasses.asdict(self.options),
                  'parts': self.parts,
                  'inputs': [{'path': path, 'bytes': size, 'stamp': input_stamp(path)}
                             for path, size in zip(self.files, self.sizes)]}
        record = json.loads(canonical_json(record))
        path = os.path.join(self.work, 'job.json')
        if self.group.leader:
            if restart:
                shutil.rmtree(self.staging, ignore_errors=True)
            if not os.path.exists(path):
                shutil.rmtree(self.staging, ignore_errors=True)
                os.makedirs(self.work)
                write_json(path, record)
            # Claims of an earlier, killed run: their work is redone unless its marker exists.
            shutil.rmtree(self.claims, ignore_errors=True)
            os.makedirs(self.claims)
        self.group.barrier()
        if read_json(path) != record:
            raise FileExistsError(f'{self.staging} holds an unfinished build of other inputs or options; '
                                  f'rerun with --restart to discard it (or delete it)')
        self.resumed = os.path.exists(os.path.join(self.part_dir(0), READ_RECORD))

    def _first_rejects(self, count: int = 3) -> str:
        """The first rejects logged (file, line, reason), e.g. the fields a wrong --text-field missed."""
        first = []
        for part in range(self.num_parts):
            with open(os.path.join(self.part_dir(part), REJECTS_FILE), encoding='utf-8') as handle:
                first += [json.loads(line) for _, line in zip(range(count - len(first)), handle)]
        return ''.join(f"\n  {r['file']}:{r['line']}: {r['reason']}" for r in first)

    def run(self) -> dict:
        started = time.perf_counter()
        tokenizer = load_tokenizer(self.options.tokenizer, self.options.eos_token)
        with StageTimer(self.timings, 'read_tokenize'):
            self._read(tokenizer)
        _import_streaming()
        records = [PartRecord.load(self.part_dir(p)) for p in range(self.num_parts)]
        self.window_counts = np.asarray([record.windows for record in records], np.int64)
        if self.window_counts.sum() == 0:
            rejected = merged_reasons(record.reasons for record in records)
            excluded = sum(s['excluded'] for record in records for s in record.inputs)
            raise InputError(f'no document could be indexed from {len(self.files)} file(s): '
                             f'{sum(rejected.values())} rejected {rejected}, {excluded} excluded by --exclude; '
                             f'the first rejects:{self._first_rejects()}')
        with StageTimer(self.timings, 'fit_embedder'):
            embedder, self.embedder_fit_sample = fit_embedder(
                self, self.window_counts, self.options, os.path.join(self.staging, EMBEDDER_DIR))
        with StageTimer(self.timings, 'embed'):
            self.share(EMBEDDINGS_FILE, self.window_counts, 'win', 'embed',
                        lambda p: embed_part(self.part_dir(p), embedder))
        with StageTimer(self.timings, 'fit_tree'):
            tree, tree_sample = fit_tree_on_sample(
                self, self.window_counts, self.options, os.path.join(self.work, 'tree_fitted.npz'))
        with StageTimer(self.timings, 'assign'):
            self.share(NODES_FILE, self.window_counts, 'win', 'assign', lambda p: assign_part(self.part_dir(p), tree))
            pruned, remaps = self._prune(tree)
        with StageTimer(self.timings, 'pack_write'):
            self._pack(pruned, remaps, tokenizer)
        counts = self._counts(pruned, remaps)
        if not self.group.leader:
            return {}
        manifest = self._manifest(tokenizer, embedder, pruned, tree.sizes, counts, records, tree_sample)
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
        read_here = self.share(READ_RECORD, self.part_bytes, 'B', 'read+tokenize',
                                lambda p: read_part([self.files[i] for i in self.parts[p]], self.part_dir(p), options,
                                                    tokenizer, self.strict, self.eval_set))
        self.parts_read_by_rank = self.group.sum(np.bincount([self.group.rank], minlength=self.group.world) * read_here)

    def _nodes(self, part: int) -> np.ndarray:
        return np.load(os.path.join(self.part_dir(part), NODES_FILE))

    def _prune(self, tree: Tree) -> tuple[Tree, list[np.ndarray]]:
        """Drop the nodes no window reached (the same on every rank: counts are summed first)."""
        width = max(tree.sizes)

        def windows(part):
            nodes = self._nodes(part)
            return np.stack([np.bincount(nodes[:, level], minlength=width) for level in range(nodes.shape[1])])
        counts = self.sum_over_parts(windows, (len(tree.sizes), width))
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
            for part in range(self.num_parts):
                spool = None
                for leaf, rows in rows_by_leaf(remaps[-1][self._nodes(part)[:, -1]]):
                    if leaf in sources:
                        spool = spool or WindowSpool.open(self.part_dir(part))
                        sources[leaf].append((spool, rows))
        for leaf in tqdm(mine, unit='leaf', desc='pack+write', disable=not self.progress):
            out = os.path.join(self.staging, CLUSTERS_DIR, leaf_dir_name(leaf))
            result = write_leaf(out, sources.pop(leaf), self.seq_len, tokenizer)
            write_json(os.path.join(packed_dir, f'{leaf}.json'), result)
        self.group.barrier()

    def _counts(self, tree: Tree, remaps) -> np.ndarray:
        def counts(part):
            nodes = self._nodes(part)
            nodes = np.stack([remaps[level][nodes[:, level]] for level in range(nodes.shape[1])], axis=1)
            return part_counts(nodes, WindowSpool.open(self.part_dir(part)), tree.sizes)
        return self.sum_over_parts(counts, (len(tree.sizes), 3, max(tree.sizes)))

    def _manifest(self, tokenizer, embedder, tree, fitted_sizes, counts, records, tree_sample) -> dict:
        options, staging = self.options, self.staging
        with replacing(os.path.join(staging, TOKENIZER_FILE)) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
            handle.write(tokenizer.to_json())
        with replacing(os.path.join(staging, TREE_FILE)) as tmp:
            tree.save(tmp)
        packed = [read_json(os.path.join(self.work, 'packed', f'{leaf}.json')) for leaf in range(tree.sizes[-1])]
        levels = node_records(tree, counts, packed, options.levels, fitted_sizes)
        reasons = merged_reasons(record.reasons for record in records)
        self._join_logs(REJECTS_FILE)
        decontamination = None
        if self.eval_set:
            self._join_logs(decontam.EXCLUDED_FILE)
            decontamination = decontam.record(self.eval_set, [record.decontamination for record in records])
        windows = int(self.window_counts.sum())
        totals = part_totals(records, packed, self.seq_len) | {
            'windows_excluded': decontamination['windows_excluded'] if decontamination else 0,
            'tokens_excluded': decontamination['tokens_excluded'] if decontamination else 0,
            'duplicate_documents': count_duplicates(np.concatenate(
                [np.load(os.path.join(self.part_dir(p), HASHES_FILE)) for p in range(self.num_parts)])),
        }
        if totals['duplicate_documents']:
            log.warning('%d indexed document(s) repeat an earlier one exactly: kept, and counted in the manifest '
                        '(totals.duplicate_documents); deduplicate the inputs first to drop them',
                        totals['duplicate_documents'])
        if totals['documents_rejected']:
            log.warning('%d record(s) skipped %s; each is listed with file, line and reason in %s',
                        totals['documents_rejected'], reasons, REJECTS_FILE)
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
                                          'by_reason': reasons},
            'inputs': [stats for record in records for stats in record.inputs], 'skipped_files': self.skipped,
            'decontamination': decontamination,
            'build': {'processes': self.group.world, 'parts': len(self.parts), 'resumed': self.resumed,
                      'request': build_request(self.files, self.options),
                      'parts_read_by_rank': self.parts_read_by_rank.tolist()},
        }

    def _join_logs(self, name: str) -> None:
        """The parts' logs called `name`, in input order, as one file of the index."""
        with replacing(os.path.join(self.staging, name)) as tmp, open(tmp, 'wb') as joined:
            for part in range(self.num_parts):
                with open(os.path.join(self.part_dir(part), name), 'rb') as handle:
                    shutil.copyfileobj(handle, joined)
