"""`ClusteredImportanceDataset`: the CRISP mixture as a drop-in Streaming dataset.

One `Stream` per leaf with non-zero draws, each with an exact per-epoch `choose` count (the
largest-remainder rounding of epoch_size × p(leaf)), so Streaming's own partitioning, shuffling,
multi-worker/multi-node ordering and resumption apply unchanged. We override `__getitem__`,
`state_dict` and `load_state_dict`, as Streaming recommends for subclasses; `prepare_shard`, to
name the leaf and file of a failure and to skip the cache lock for shards already unpacked;
`resample_streams`, to set each epoch's counts (schedules); and `_get_work`, only to start fetching a
remote epoch's first shards in parallel (prefetch.py).
"""

from __future__ import annotations

import errno
import logging
import os
import time
import warnings
from typing import Any

import numpy as np
import torch
from streaming import Stream, StreamingDataset
from streaming.base.dataset import _ShardState  # to undo Streaming's stuck state on failure

from cis_stream.format.layout import CLUSTERS_DIR, LEAF_INDEXES, NotAnIndexError, leaf_dir_name
from cis_stream.format.leaves import leaf_shard_readers, read_leaf_indexes
from cis_stream.format.store import open_index
from cis_stream.format.validate import check_leaf_shards
from cis_stream.format.verify import check_decompressed, record
from cis_stream.prefetch import DOWNLOAD_THREADS, prefetch_first_shards
from cis_stream.schedule import plan_mixture

log = logging.getLogger(__name__)

FINGERPRINT_KEY = 'cis_fingerprint'
class DamagedLeafError(NotAnIndexError):
    """A leaf's index.json or shard is missing, corrupt, unsafe or cannot be fetched."""


class UnwritableIndexError(ValueError):
    """Streaming cannot unpack a shard next to the original: the directory is read-only or full."""


UNWRITABLE = {errno.EACCES: 'is not writable', errno.EPERM: 'is not writable', errno.EROFS: 'is on a read-only '
              'file system', errno.ENOSPC: 'has no room left', errno.EDQUOT: 'is over its disk quota'}


def _unwritable(stream: _LeafStream, err: OSError) -> UnwritableIndexError:
    """The message for a shard Streaming cannot unpack: what is wrong, and the two ways out."""
    where = os.path.dirname(os.path.dirname(stream.local))
    fix = 'free space there' if err.errno in (errno.ENOSPC, errno.EDQUOT) else 'make it writable'
    if stream.remote:
        advice = f'{fix}, or choose another local cache directory (local=, train_loader.dataset.local in the YAML)'
    else:
        advice = (f"{fix}, or read the index as a remote with a local cache elsewhere: ClusteredImportanceDataset("
                  f"index={where!r}, local='/path/to/cache', ...) (train_loader.dataset.local in the YAML)")
    return UnwritableIndexError(
        f'leaf {stream.leaf}: cannot unpack a shard: {where} {UNWRITABLE[err.errno]} ({err.strerror}: {err.filename}). '
        f'The index is not damaged: Streaming decompresses each shard next to the original on its first '
        f'read, so the directory must be writable and have room. Either {advice}')


def sequences_per_sample(seq_len: int, max_seq_len: int) -> int:
    """Training sequences of `max_seq_len` cut from one index sample of `seq_len` tokens, so that no
    token is dropped; 1 (the sample is truncated) where max_seq_len does not divide seq_len."""
    return seq_len // max_seq_len if 0 < max_seq_len <= seq_len and seq_len % max_seq_len == 0 else 1


def _leaf_failure(leaf: str, stream: Stream, what: str, err: Exception) -> DamagedLeafError:
    """The message for a failed leaf: which leaf and file, why, and what to do."""
    detail = str(err).split('. To proceed anyway')[0]  # Streaming's pickle refusal offers an override: not ours
    if stream.remote:
        advice = (f'fetching from {stream.remote} failed after {stream.download_retry} attempt(s): check that '
                  f'the server is reachable and holds the whole index')
    else:
        advice = (f'the index is damaged: rebuild it with `cis-stream index ... --overwrite`, or restore '
                  f'{stream.local} from a good copy')
    return DamagedLeafError(f'leaf {leaf}: {what}: {detail} ({type(err).__name__}); {advice}')


class _LeafStream(Stream):
    """A leaf's Stream whose index.json (from the remote index's bundle, `index_text`, or the file)
    is checked as it is loaded, failures naming the leaf, and whose decompressed shards are checked
    when changed since their last verification (verify.py)."""

    def __init__(self, leaf: str, token_column: str, samples: int, index_text: str | None = None, **kwargs: Any):
        super().__init__(**kwargs)
        self.leaf, self.token_column, self.expected_samples = leaf, token_column, samples
        self.index_text = index_text

    def get_shards(self, world, allow_unsafe_types: bool) -> list:
        where = os.path.join(self.local, 'index.json')
        if self.index_text is not None:
            where = f'the leaf index bundle ({LEAF_INDEXES}), entry {self.leaf}'
        elif not self.remote and not os.path.isfile(where):
            raise DamagedLeafError(f'leaf {self.leaf}: {where} is missing: the index is damaged; rebuild it '
                                   f'with `cis-stream index ... --overwrite`, or restore the file from a good copy')
        try:
            shards = (super().get_shards(world, allow_unsafe_types) if self.index_text is None else
                      leaf_shard_readers(self.local, self.index_text, allow_unsafe_types))
        except Exception as err:
            raise _leaf_failure(self.leaf, self, f'cannot load {where}', err) from err
        check_leaf_shards(shards, f'leaf {self.leaf}: {where}', self.token_column, self.expected_samples,
                          DamagedLeafError)
        self.opened = check_decompressed(self.local, shards)
        if self.opened.damaged:
            path, problem = self.opened.damaged
            root = os.path.dirname(os.path.dirname(self.local))
            raise DamagedLeafError(
                f'leaf {self.leaf}: {path} {problem}: this decompressed copy of the shard changed after it was '
                f'made and checked. Delete it (the next read makes it again from the compressed shard, checking '
                f'that one first), and run `cis-stream verify {root}` to check the whole index')
        return shards

    def get_index_size(self) -> int:
        """Bytes of the cache the leaf's index takes: none when it came from the bundle."""
        return 0 if self.index_text is not None else super().get_index_size()

    def prepare_shard(self, shard) -> int:
        """Streaming's fetch and unpack; a decompressed file it makes from a hash-checked one is
        recorded as verified, so the next open need not hash it."""
        made = [(os.path.join(self.local, raw.basename), raw) for raw, _ in shard.file_pairs
                if not os.path.exists(os.path.join(self.local, raw.basename))]
        delta = super().prepare_shard(shard)
        if self.validate_hash == 'xxh64':
            for path, raw in made:
                record(path, raw)
        return delta


class ClusteredImportanceDataset(StreamingDataset):
    """Draw fixed-length token samples from an index's leaves in the weights' proportions.

    Args:
        index: an index directory, or with `local` set, a remote (s3://..., gs://..., or a
            directory) that Streaming downloads from into `local`.
        weights: a `*.weights.json` made for this index, or None for the uniform generalist
            baseline (each leaf in proportion to its size), through the same code. If the weights
            mix in the specialist sample (`--specialist-repeats`), its stream is read from beside
            the weights file, as leaf number `cis_index.num_leaves`.
        schedule: instead of weights, phases drawn one after another, each a list entry
            `{weights: FILE or None, tokens: N}` (or `samples: N`; the last may leave its length
            out and runs until training ends). Each phase is a whole number of epochs of one size
            (see schedule.py); `phase_of(epoch)` says which is drawn. A phase with `adapt:`
            has its proportions measured at its start (adaptive.py), written to `adapt_dir`.
        epoch_size: samples per epoch (default: the index's total samples; with a schedule, the
            greatest common divisor of the phase lengths).
        max_seq_len: tokens per training sequence (default: the index's seq_len). Where it divides
            seq_len, each item holds all seq_len / max_seq_len sequences of a sample, shape
            [k, max_seq_len] (`collate_causal_lm` flattens them), so no token is dropped; otherwise,
            or with split_samples=False, the sample is truncated, with a warning.
        local: local cache directory for a remote index.
        max_repeat: cap on passes over any leaf per epoch; the excess goes to other leaves.
        allow_mixture_change: let `load_state_dict` resume a run made with other weights.
        sample_ids: add each item's global sample id (for order logs). Off by default: with
            loader workers every extra tensor in a batch costs a shared-memory transfer (~15%).
        split_samples: cut samples into max_seq_len sequences where that divides (see max_seq_len).
        download_threads: for a remote index, threads that fetch the shards of each worker's first
            `predownload` samples of an epoch at once (prefetch.py); 0: Streaming's one at a time.
        **kwargs: StreamingDataset options (batch_size, shuffle, shuffle_seed,
            num_canonical_nodes, ...). Streams, epoch_size and allow_unsafe_types are ours;
            validate_hash defaults to 'xxh64' (each shard is checked once, when first unpacked).

    A missing, corrupt or unreachable leaf, or a sample that cannot be decoded or holds a token
    outside the vocabulary, raises `DamagedLeafError` naming the leaf and file (and sample). A
    directory Streaming cannot unpack shards into raises `UnwritableIndexError`.
    """

    def __init__(self, index: str, weights: str | None = None, epoch_size: int | None = None,
                 max_seq_len: int | None = None, local: str | None = None,
                 max_repeat: float | None = None, allow_mixture_change: bool = False,
                 sample_ids: bool = False, split_samples: bool = True, schedule: list | None = None,
                 adapt_dir: str | None = None, download_threads: int = DOWNLOAD_THREADS, **kwargs: Any):
        for key in ('streams', 'remote', 'epoch_size', 'allow_unsafe_types'):
            if key in kwargs:
                raise ValueError(f'ClusteredImportanceDataset sets {key!r} itself; do not pass it')
        opened = open_index(index, local)
        self.cis_index = opened
        self.seq_len = seq_len = opened.manifest['options']['seq_len']
        self.max_seq_len = max_seq_len or seq_len
        if self.max_seq_len > seq_len:
            raise ValueError(f'max_seq_len {self.max_seq_len} exceeds the index samples of {seq_len} tokens')
        if self.max_seq_len < 1:
            raise ValueError(f'max_seq_len {self.max_seq_len}: a training sequence needs at least 1 token')
        self.sequences_per_sample = sequences_per_sample(seq_len, self.max_seq_len) if split_samples else 1
        if self.sequences_per_sample * self.max_seq_len < seq_len:
            dropped = seq_len - self.max_seq_len
            reason = f'it does not divide {seq_len}' if split_samples else 'split_samples=False'
            warnings.warn(f'max_seq_len {self.max_seq_len} is shorter than the index samples of {seq_len} tokens '
                          f'and {reason}: every sample is truncated, dropping {dropped:,} of its {seq_len:,} tokens '
                          f'({dropped / seq_len:.1%} of the data). Use a max_seq_len that divides {seq_len}: each '
                          f'sample then gives seq_len / max_seq_len training sequences and no token is dropped',
                          stacklevel=2)
        # Every sample read is checked against these (cheap: one max() over its tokens): a decompressed
        # shard damaged after it was verified still decodes, into tokens the model cannot embed.
        self.vocab_size = opened.manifest['options']['tokenizer']['vocab_size']
        self._unsigned = np.uint16 if opened.manifest['options']['token_column'] == 'ndarray:uint16' else np.uint32
        self.mixture = plan_mixture(opened, weights, schedule, epoch_size, max_repeat,
                                    self.sequences_per_sample * self.max_seq_len, adapt_dir)
        self.cis_weights = self.mixture.weights[0]
        # A specialist stream the weights mix in is source number num_leaves (leaf_of says so).
        self.specialist = self.mixture.specialists[0] if self.mixture.specialists else None
        self.leaf_counts = self.mixture.phase_counts[0]
        self.stream_leaves = self.mixture.streamed_sources
        self.allow_mixture_change = allow_mixture_change
        self.sample_ids = sample_ids
        self.cis_fingerprint = self.mixture.fingerprint
        token_column = opened.manifest['options']['token_column']
        sizes = self.mixture.source_samples
        bundle = read_leaf_indexes(local, opened.manifest) if local else {}
        streams = [_LeafStream(leaf_dir_name(leaf), token_column, int(sizes[leaf]), local=opened.leaf_path(leaf),
                               remote=f'{index}/{CLUSTERS_DIR}/{leaf_dir_name(leaf)}' if local else None,
                               choose=int(self.leaf_counts[leaf]), index_text=bundle.get(leaf_dir_name(leaf)))
                   if leaf < opened.num_leaves else
                   _LeafStream(f'specialist ({self.mixture.specialists[leaf - opened.num_leaves].root})',
                               token_column, int(sizes[leaf]), choose=int(self.leaf_counts[leaf]),
                               local=self.mixture.specialists[leaf - opened.num_leaves].leaf_path(0))
                   for leaf in self.stream_leaves]
        self._leaf_error: DamagedLeafError | UnwritableIndexError | None = None
        self.download_threads = download_threads if local else 0
        kwargs.setdefault('validate_hash', 'xxh64')
        super().__init__(streams=streams, epoch_size=None, allow_unsafe_types=False, **kwargs)
        self._unpacked = np.zeros(self.num_shards, bool)  # per process: see prepare_shard
        hashed = sum(stream.opened.hashed for stream in streams)
        unrecorded = sum(stream.opened.unrecorded for stream in streams)
        if hashed:
            log.info('verified %d decompressed shard(s) new or changed since their last check', hashed)
        if unrecorded:
            warnings.warn(f'{unrecorded} decompressed shard(s) verified, but the verification cannot be recorded '
                          f'(read-only index): they are hashed again at every open', stacklevel=2)

    def phase_of(self, epoch: int) -> int:
        """The schedule phase an epoch draws from (0 without a schedule)."""
        return self.mixture.phase_of(epoch)

    def resample_streams(self, epoch: int, stream_id: int | None = None):
        """Streaming's draw of an epoch, with the counts of the epoch's phase: only the counts change
        between phases; the partitioning and shuffling of the drawn ids stay Streaming's."""
        counts = self.mixture.counts(epoch)
        for stream, source, samples in zip(self.streams, self.stream_leaves, self.samples_per_stream):
            stream.choose = int(counts[source])
            stream.repeat = stream.choose / int(samples)  # what the per-stream batching methods read
            stream.proportion = stream.choose / self.epoch_size
        return super().resample_streams(epoch, stream_id)

    def _get_work(self, epoch: int, sample_in_epoch: int) -> np.ndarray:
        """Streaming's part of the epoch for this worker, unchanged; from a remote index, the shards
        its first samples need start downloading in parallel."""
        sample_ids = super()._get_work(epoch, sample_in_epoch)
        if self.download_threads:
            prefetch_first_shards(self, sample_ids, self.download_threads)
        return sample_ids

    def leaf_of(self, sample_ids: np.ndarray) -> np.ndarray:
        """The leaf each global sample id is drawn from (num_leaves: the specialist stream)."""
        shards = np.asarray([self.spanner[int(i)][0] for i in np.atleast_1d(sample_ids)], dtype=np.int64)
        return self.stream_leaves[np.asarray(self.stream_per_shard)[shards]]

    def __getitem__(self, sample_id: int) -> dict[str, Any]:
        """{'input_ids': LongTensor[max_seq_len]}, or [k, max_seq_len] for a sample split into k
        sequences; plus 'sample_id' if asked for (an int, or k copies of it as a LongTensor[k]).

        Kept lean: on short samples Streaming's own read is ~30 us, so every microsecond shows.
        """
        try:
            tokens = super().__getitem__(sample_id)['tokens']
        except (DamagedLeafError, UnwritableIndexError):
            raise
        except RuntimeError:
            # Streaming reports a failed background download only as "Background thread failed".
            if self._leaf_error is not None:
                raise self._leaf_error from None
            raise
        except Exception as err:  # Streaming's MDS decoder, on bytes damaged after they were verified
            if not -self.num_samples <= sample_id < self.num_samples:
                raise  # a wrong sample id, not a damaged shard
            raise self._damaged_sample(sample_id % self.num_samples,
                                       f'cannot be decoded ({type(err).__name__}: {err})') from err
        # int32: a negative token becomes a huge one. max(), not argmax(): argmax releases the GIL whatever the
        # length, and taking it back from Streaming's download threads made a 64-token sample's read 1.9x slower.
        if len(tokens) != self.seq_len or tokens.view(self._unsigned).max() >= self.vocab_size:
            raise self._damaged_sample(sample_id, self._token_problem(tokens))
        k = self.sequences_per_sample
        if k == 1 and self.max_seq_len < self.seq_len:
            tokens = tokens[:self.max_seq_len]
        input_ids = torch.from_numpy(tokens.astype(np.int64))
        item = {'input_ids': input_ids.view(k, self.max_seq_len) if k > 1 else input_ids}
        if self.sample_ids:
            item['sample_id'] = torch.full((k,), int(sample_id)) if k > 1 else sample_id
        return item

    def _token_problem(self, tokens: np.ndarray) -> str:
        if len(tokens) != self.seq_len:
            return f'has {len(tokens):,} tokens, not {self.seq_len:,}'
        bad = np.flatnonzero(tokens.view(self._unsigned) >= self.vocab_size)
        return (f'holds {len(bad)} token(s) outside the vocabulary of {self.vocab_size:,} (first: '
                f'{int(tokens[bad[0]])} at position {bad[0]})')

    def _damaged_sample(self, sample_id: int, problem: str) -> DamagedLeafError:
        """A sample that fails to decode or holds impossible tokens: its leaf, shard file and position."""
        shard_id, index = self.spanner[sample_id]
        stream = self.streams[self.stream_per_shard[shard_id]]
        path = os.path.join(stream.local, self.shards[shard_id].file_pairs[0][0].basename)
        root = os.path.dirname(os.path.dirname(stream.local))
        return DamagedLeafError(
            f'leaf {stream.leaf}: sample {index} of {path} {problem}: the decompressed shard is damaged. '
            f'Delete it (the next read makes it again from the compressed shard, checking that one first) '
            f'and run `cis-stream verify {root}` to check the whole index')

    def prepare_shard(self, shard_id: int, blocking: bool = True) -> None:
        """Streaming's download/verify/unpack of a shard, with failures naming the leaf and file.

        Streaming's download thread calls this for every sample (blocking=False), and each call takes the
        cache's FileLock, whose Python held the GIL for about a third of a 0-worker loader's time, even
        for a shard unpacked long ago. A shard this process has seen unpacked is only touched; one that
        went missing since still takes the full path, from the read's FileNotFoundError (blocking=True).
        """
        if not blocking and self._unpacked[shard_id] and self._shard_states[shard_id] == _ShardState.LOCAL:
            self._shard_access_times[shard_id] = time.time_ns()
            return
        try:
            super().prepare_shard(shard_id, blocking)
            self._unpacked[shard_id] = self._shard_states[shard_id] == _ShardState.LOCAL
        except Exception as err:
            # Streaming leaves a failed shard PREPARING, and every later reader of it (other loader
            # workers too) would then wait forever: mark it not yet fetched, so they retry and fail loudly.
            if self._shard_states[shard_id] == _ShardState.PREPARING:
                self._shard_states[shard_id] = _ShardState.REMOTE
            stream = self.streams[self.stream_per_shard[shard_id]]
            names = [info.basename for pair in self.shards[shard_id].file_pairs for info in pair if info]
            path = os.path.join(stream.local, names[-1])
            if isinstance(err, OSError) and err.errno in UNWRITABLE:
                self._leaf_error = _unwritable(stream, err)
            else:
                if not stream.remote and not any(os.path.exists(os.path.join(stream.local, n)) for n in names):
                    what = f'{path} is missing'
                elif 'Checksum failure' in str(err):
                    what = f'{path} does not match its xxh64 hash in index.json (corrupt or truncated)'
                else:
                    what = f'shard {path}'
                self._leaf_error = _leaf_failure(stream.leaf, stream, what, err)
            if hasattr(self, '_event'):
                # Mid-epoch, stop the epoch now, whichever thread failed first: Streaming only does
                # that when its own threads fail, so a failure first met by the reading thread would
                # leave the dataset half running (other leaves readable, the epoch not ended).
                self._event.set()
            raise self._leaf_error from err

    def __iter__(self):
        # A shard that fails in Streaming's download thread ends the epoch early and silently:
        # never let a short epoch pass for a whole one.
        yield from super().__iter__()
        if self._leaf_error is not None:
            raise self._leaf_error

    def state_dict(self, num_samples: int, from_beginning: bool) -> dict[str, Any]:
        """Streaming's resume state. `num_samples` counts training sequences, as Composer's
        sample_in_epoch does: with samples split into k sequences, that is k per index sample."""
        state = super().state_dict(num_samples // self.sequences_per_sample, from_beginning)
        state[FINGERPRINT_KEY] = self.cis_fingerprint
        return state

    def load_state_dict(self, obj: dict[str, Any]) -> None:
        saved = obj.get(FINGERPRINT_KEY)
        if saved != self.cis_fingerprint and not self.allow_mixture_change:
            raise ValueError(
                f'cannot resume: the checkpoint was drawn from mixture {saved}, but this dataset is '
                f'{self.cis_fingerprint} (index {self.cis_index.fingerprint[:16]}, other weights, epoch '
                f'size or cap). Use the original index and weights, or pass allow_mixture_change=True '
                f'to continue on the new mixture on purpose.')
        super().load_state_dict({k: v for k, v in obj.items() if k != FINGERPRINT_KEY})
