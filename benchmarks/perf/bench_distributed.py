"""Distributed indexing: the same `cis-stream index` job on 1 process and on 2 (torchrun), same run.

    .venv/bin/python -m benchmarks.perf.bench_distributed [--repeats 3] [--files 8] [--source FILE]

The corpus is all 26,227 real Wikipedia summaries (11 MB), or `--source`, cut into `--files`
files (the unit of parallel work is a run of input files). Default options: lsi, 1024-token windows, 16 -> 256
clusters. Runs alternate (1, 2, 1, 2, ...); the table reports medians of the wall time of the
whole command (launcher and imports included), of each stage and of the job itself (`total`),
and checks that both process counts publish the same fingerprint. Target (issue 6): 2 processes
on 2 cores >= 1.6x faster. Fixed costs (imports, torchrun, the fits on rank 0) take about 15 s,
so measure it on a corpus of a few hundred MB (the run in benchmarks/results/RESULTS.md):

    .venv/bin/python -m benchmarks.perf.bench_distributed --repeats 3 --files 37 \
        --source benchmarks/corpus/cache/corpus/subsets/pool_300mb.jsonl.zst

The in-run baseline is the machine's own ceiling: a fixed pure-Python CPU loop run whole by one
process, then split in halves over two processes at once, before each pair of runs. On a shared
virtual machine the second core does not always deliver a whole core.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

from benchmarks import OUT
from benchmarks.perf.common import launch_index, median, split_corpus, wiki_corpus

STAGES = ('read_tokenize', 'fit_embedder', 'embed', 'fit_tree', 'assign', 'pack_write', 'total')
CEILING_LOOP = 'import sys\ns = 0\nfor i in range(int(sys.argv[1])): s += i * i'
CEILING_ITERATIONS = 40_000_000


def ceiling(processes: int) -> float:
    """Seconds for CEILING_ITERATIONS of a CPU-bound loop, split over `processes` processes at once."""
    start = time.perf_counter()
    workers = [subprocess.Popen([sys.executable, '-c', CEILING_LOOP, str(CEILING_ITERATIONS // processes)])
               for _ in range(processes)]
    if any(worker.wait() for worker in workers):
        raise SystemExit('the ceiling loop failed')
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.perf.bench_distributed', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--files', type=int, default=8)
    parser.add_argument('--source', default=None,
                        help='corpus file to split (default: the 11 MB wiki corpus); e.g. the 30 MB subset '
                             'benchmarks/corpus/cache/corpus/subsets/pool_30mb.jsonl.zst')
    args = parser.parse_args()
    corpus = split_corpus(args.source or wiki_corpus(), args.files)
    work = tempfile.mkdtemp(prefix='bench-dist-')
    runs: dict[int, list[dict]] = {1: [], 2: []}
    for repeat in range(args.repeats):
        for processes in (1, 2):
            loop = ceiling(processes)
            runs[processes].append({**launch_index(processes, corpus, os.path.join(work, f'p{processes}')),
                                    'ceiling_loop': loop})
            print(f'repeat {repeat + 1}: {processes} process(es) {runs[processes][-1]["wall"]:.1f} s '
                  f'(ceiling loop {loop:.1f} s)', flush=True)
    shutil.rmtree(work)
    fingerprints = {r['fingerprint'] for rs in runs.values() for r in rs}
    print(f'\nsame index from 1 and 2 processes in every run: {len(fingerprints) == 1}')
    print('| seconds (median) | 1 process | 2 processes | speed-up |\n|---|---|---|---|')
    for key in ('ceiling_loop', 'wall', 'cores_busy') + STAGES:
        one, two = median([r[key] for r in runs[1]]), median([r[key] for r in runs[2]])
        print(f'| {key} | {one:.2f} | {two:.2f} | {one / two:.2f}x |')
    record = {'args': vars(args), 'runs': {str(k): v for k, v in runs.items()}}
    with open(os.path.join(OUT, f'bench_distributed_{os.path.basename(corpus)}.json'), 'w', encoding='utf-8') as handle:
        json.dump(record, handle, indent=1)


if __name__ == '__main__':
    main()
