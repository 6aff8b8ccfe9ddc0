"""Read speed of each input format on the same text: JSON lines (plain and zstd) against Parquet and
MDS (plain and zstd shards), documents per second through `read_documents`, the indexer's reader.

    .venv/bin/python -m benchmarks.perf.bench_readers [--source FILE] [--rounds 3]

The text is the benchmark corpus's 100 MB pool subset by default (`python -m benchmarks.corpus.build`),
written once in every format under benchmarks/out/readers/. The formats are read in turn, `--rounds`
times (so load on the machine falls on all of them alike); the table gives each format's median and
its ratio to plain JSON lines in the same run.
"""

from __future__ import annotations

import argparse
import json
import os

import pyarrow as pa
import pyarrow.parquet as pq
import zstandard

from benchmarks import OUT, ROOT
from benchmarks.perf.common import median, timed
from cis_stream.text.readers import Document, read_documents

DEFAULT_SOURCE = os.path.join(ROOT, 'benchmarks', 'corpus', 'cache', 'corpus', 'subsets', 'pool_100mb.jsonl.zst')


def write_formats(source: str, folder: str) -> dict[str, str]:
    """The source's documents as JSON lines, zstd JSON lines, Parquet and MDS (cached)."""
    from streaming import MDSWriter
    paths = {'jsonl': 'text.jsonl', 'jsonl.zst': 'text.jsonl.zst', 'parquet': 'text.parquet',
             'mds': 'mds', 'mds zstd': 'mds_zstd'}
    paths = {name: os.path.join(folder, path) for name, path in paths.items()}
    if all(os.path.exists(p) for p in paths.values()):
        return paths
    texts = [d.text for d in read_documents([source]) if isinstance(d, Document)]
    os.makedirs(folder, exist_ok=True)
    data = ''.join(json.dumps({'text': t}, ensure_ascii=False) + '\n' for t in texts).encode('utf-8')
    with open(paths['jsonl'], 'wb') as handle:
        handle.write(data)
    with open(paths['jsonl.zst'], 'wb') as handle:
        handle.write(zstandard.ZstdCompressor(level=3).compress(data))
    pq.write_table(pa.table({'text': texts}), paths['parquet'])  # pyarrow's defaults: snappy, 1 Mi-row groups
    for name, compression in (('mds', None), ('mds zstd', 'zstd')):
        with MDSWriter(out=paths[name], columns={'text': 'str'}, compression=compression, hashes=['xxh64']) as writer:
            for text in texts:
                writer.write({'text': text})
    return paths


def read_all(path: str) -> int:
    return sum(isinstance(d, Document) for d in read_documents([path]))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--source', default=DEFAULT_SOURCE)
    parser.add_argument('--rounds', type=int, default=3)
    args = parser.parse_args()
    paths = write_formats(args.source, os.path.join(OUT, 'readers', os.path.basename(args.source).split('.')[0]))
    times: dict[str, list[float]] = {name: [] for name in paths}
    counts = {}
    for _ in range(args.rounds):
        for name, path in paths.items():
            seconds, counts[name] = timed(read_all, path)
            times[name].append(seconds)
    assert len(set(counts.values())) == 1, f'the formats hold different documents: {counts}'
    mb = os.path.getsize(paths['jsonl']) / 1e6
    base = median(times['jsonl'])
    print(f'{counts["jsonl"]:,} documents, {mb:.1f} MB as JSON lines; median of {args.rounds} rounds')
    print(f'{"format":12s} {"seconds":>8s} {"MB/s":>7s} {"vs jsonl":>9s}')
    for name, values in times.items():
        print(f'{name:12s} {median(values):8.2f} {mb / median(values):7.1f} {base / median(values):8.2f}x')


if __name__ == '__main__':
    main()
