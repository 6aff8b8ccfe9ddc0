"""Loader throughput and start-up: ClusteredImportanceDataset vs a plain StreamingDataset.

    .venv/bin/python -m benchmarks.perf.bench_loader [--cases 64:64 1024:64 16384:64 64:1024] [--workers 0 2]
        [--repeats 5] [--samples 32000]

Both read the same per-leaf shards of the same index: the plain baseline is
`StreamingDataset(streams=[Stream(local=leaf) for every leaf])`, the way one would hand-write the
mixture with Streaming alone; cis_stream draws the uniform mixture (weights=None) over the same
leaves with exact per-leaf counts. Each measurement alternates baseline and cis_stream and
reports medians and ranges; the ratio is cis_stream / baseline (>= 0.95 is the target for
throughput). Throughput is the steady rate of a pass of `--samples` samples (both datasets get that
epoch size, so a small index repeats its samples), timed from its first batch: the loader workers'
start and each epoch's set-up are start-up, not throughput. (Passes of one epoch of a small index
last under a second with 2 workers, and their ratios moved between 0.81x and 0.99x from run to run.)
Start-up is the time from constructing the dataset to the first batch out of a DataLoader.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time

import numpy as np
import torch
from streaming import Stream, StreamingDataset
from torch.utils.data import DataLoader

from benchmarks.perf.common import bench_index, median, timed
from cis_stream.dataset import ClusteredImportanceDataset

BATCH = 32
OPTIONS = dict(batch_size=BATCH, shuffle=True, shuffle_seed=7, num_canonical_nodes=1)


def plain(index, epoch_size=None, dataset_class=StreamingDataset):
    return dataset_class(streams=[Stream(local=path) for path in index.leaf_paths], epoch_size=epoch_size,
                         **OPTIONS)


class PlainAsLong(StreamingDataset):
    """Plain Streaming plus the one step a trainer needs on top: tokens as an int64 tensor
    (cis_stream's items are LongTensors; uint16 -> int64 makes 4x more bytes per sample to copy
    between loader workers and the trainer)."""

    def __getitem__(self, sample_id):
        return {'input_ids': torch.from_numpy(super().__getitem__(sample_id)['tokens'].astype(np.int64))}


def plain_long(index, epoch_size=None):
    return plain(index, epoch_size, PlainAsLong)


def cis(index, epoch_size=None):
    return ClusteredImportanceDataset(index.root, None, epoch_size=epoch_size, **OPTIONS)


def steady_rate(dataset, workers: int) -> float:
    """Tokens/s of one epoch through a DataLoader, from its first batch to its last."""
    tokens, start = 0, None
    for batch in DataLoader(dataset, batch_size=BATCH, num_workers=workers, persistent_workers=False):
        if start is None:
            start = time.perf_counter()
            continue
        tokens += (batch['input_ids'] if 'input_ids' in batch else batch['tokens']).numel()
    return tokens / (time.perf_counter() - start)


def drain(dataset) -> None:
    for _ in DataLoader(dataset, batch_size=BATCH, num_workers=0):
        pass


def first_batch(build, index) -> float:
    def run():
        dataset = build(index)
        next(iter(DataLoader(dataset, batch_size=BATCH, num_workers=0)))
        return dataset
    seconds, dataset = timed(run)
    del dataset
    gc.collect()
    return seconds


def main() -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.perf.bench_loader')
    parser.add_argument('--cases', nargs='+', default=['64:64', '1024:64', '16384:64', '64:1024'],
                        help='LEAVES:SEQ_LEN index shapes (64-token samples are the worst case for '
                             'per-sample overhead; 1024 is the paper\'s sample length)')
    parser.add_argument('--workers', type=int, nargs='+', default=[0, 2], help='DataLoader workers to time')
    parser.add_argument('--repeats', type=int, default=5)
    parser.add_argument('--samples', type=int, default=32000, help='samples per throughput pass (its epoch size)')
    args = parser.parse_args()
    os.environ.setdefault('TMPDIR', tempfile.mkdtemp(prefix='cis-bench.'))
    rows = []
    for case in args.cases:
        leaves, seq_len = (int(part) for part in case.split(':'))
        index = bench_index(leaves, seq_len)
        drain(plain(index))  # warm-up: decompress every shard once (shared by both)
        gc.collect()
        for workers in args.workers:
            rates = {'plain': [], 'plain_long': [], 'cis': []}
            for _ in range(args.repeats):
                for name, build in (('plain', plain), ('plain_long', plain_long), ('cis', cis)):
                    dataset = build(index, epoch_size=args.samples)
                    rates[name].append(steady_rate(dataset, workers))
                    del dataset
                    gc.collect()
            rows.append((case, f'throughput, {workers} workers (tokens/s)', rates['plain'], rates['cis'],
                         rates['plain_long']))
            print(rows[-1], flush=True)
        starts = {'plain': [], 'cis': []}
        for _ in range(args.repeats):
            for name, build in (('plain', plain), ('cis', cis)):
                starts[name].append(first_batch(build, index))
        rows.append((case, 'start-up to first batch (s)', starts['plain'], starts['cis'], None))
        print(rows[-1], flush=True)
    print('\nMedians [min-max] of the repeats; ratios of the medians.\n\n| leaves:seq_len | measure | plain Streaming '
          '| cis_stream | ratio cis/plain | plain + int64 | ratio cis/(plain + int64) |\n|---|---|---|---|---|---|---|')
    for case, measure, base, ours, long in rows:
        extra = f'{spread(long)} | {median(ours) / median(long):.2f}' if long else '- | -'
        print(f'| {case} | {measure} | {spread(base)} | {spread(ours)} | {median(ours) / median(base):.2f} | {extra} |')
    return 0


def spread(values: list[float]) -> str:
    digits = 2 if median(values) < 100 else 0
    return f'{median(values):,.{digits}f} [{min(values):,.{digits}f}-{max(values):,.{digits}f}]'


if __name__ == '__main__':
    sys.exit(main())
