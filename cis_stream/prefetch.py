"""Parallel download of the shards an epoch begins with, for a remote index.

Streaming's download thread fetches one shard at a time, and a CIS index is one stream per leaf:
a shuffled first batch touches a shard in about as many leaves as it has samples, so the first
batch of a remote 16,384-leaf index waited on some 33 GETs one after another (benchmarks/results/
RESULTS.md, "Remote start-up"). Here the shards of a worker's first `predownload` samples are
fetched on a thread pool, in order of need, through the dataset's own `prepare_shard` (Streaming's
cross-process shard states and cache lock: its download thread skips a shard being fetched here,
and its ready thread waits for it), so nothing about the order or the cache changes.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor

import numpy as np

log = logging.getLogger(__name__)

# 4, not more: each thread runs boto3's Python (signing, parsing), and more threads starve the main
# thread of the GIL while it reads the first batch. 16,384 remote leaves on a loopback S3 server:
# 15 s to the first batch with 4 threads, 23-28 s with 16 (benchmarks/results/RESULTS.md).
DOWNLOAD_THREADS = 4


def prefetch_first_shards(dataset, sample_ids: np.ndarray, threads: int) -> None:
    """Start fetching, on `threads` threads, the shards of the first `dataset.predownload` samples
    of `sample_ids` (this worker's part of the epoch); returns at once."""
    first = sample_ids[:dataset.predownload or len(sample_ids)]
    shard_ids = dict.fromkeys(int(dataset.spanner[int(s)][0]) for s in first[first >= 0])
    pool = ThreadPoolExecutor(max(1, threads), thread_name_prefix='cis-prefetch')
    for shard_id in shard_ids:
        # A failure is the dataset's: prepare_shard records it (naming the leaf) and ends the
        # epoch, which then raises it; nothing is left for the future to report.
        pool.submit(_prepare, dataset, shard_id)
    pool.shutdown(wait=False)
    log.debug('prefetching %d shard(s) on %d thread(s)', len(shard_ids), threads)


def _prepare(dataset, shard_id: int) -> None:
    try:
        dataset.prepare_shard(shard_id, False)
    except Exception:  # noqa: BLE001 - recorded by prepare_shard, raised by the epoch
        pass
