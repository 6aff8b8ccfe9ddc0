"""Remote start-up: s3:// index on a real S3-compatible server (moto) on 127.0.0.1.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m benchmarks.perf.bench_remote [--leaves 1024 16384] [--baseline-max 1024] \
        [--threads 4] [--predownload default] [--profile]

Time from constructing the dataset to its first batch, with empty local caches:
  * baseline: Streaming's own start-up, `StreamingDataset(streams=[Stream(remote=s3://.../leaf,
    local=...)])`, which fetches every leaf's index.json one after another;
  * cis_stream: `ClusteredImportanceDataset(index='s3://...', local=...)`, which downloads the
    manifest and one bundle of all leaf indexes, then lets Streaming start from the cache, with the
    shards of the first `predownload` samples fetched on `download_threads` threads (each pair of
    --threads and --predownload values is one variant, measured on its own empty cache).
Targets: >= 10x faster than the baseline at 16,384 leaves (issue 5); <= 5 s to the first batch (issue 18).
The moto server runs on the same cores as the client, so every GET also costs local CPU.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks import OUT
from benchmarks.perf.common import bench_index, timed
from cis_stream.prefetch import DOWNLOAD_THREADS

BUCKET = 'cis-bench'
RAW_SHARD = re.compile(r'shard\.\d+\.mds$')  # decompressed copies made by local reads: not uploaded


def start_moto() -> tuple[subprocess.Popen, str]:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'moto_server'), '-H', '127.0.0.1',
                               '-p', str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(100):
        try:
            socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    else:
        server.kill()
        raise RuntimeError('moto_server did not start')
    endpoint = f'http://127.0.0.1:{port}'
    os.environ.update(AWS_ACCESS_KEY_ID='bench', AWS_SECRET_ACCESS_KEY='bench',
                      AWS_DEFAULT_REGION='us-east-1', S3_ENDPOINT_URL=endpoint)
    return server, endpoint


def upload(root: str, prefix: str, endpoint: str) -> int:
    import boto3
    client = boto3.client('s3', endpoint_url=endpoint)
    files = [os.path.join(d, f) for d, _, names in os.walk(root) for f in names if not RAW_SHARD.search(f)]
    with ThreadPoolExecutor(16) as pool:
        list(pool.map(lambda p: client.upload_file(p, BUCKET, f'{prefix}/{os.path.relpath(p, root)}'), files))
    return len(files)


def first_batch(build, profile: str | None = None) -> tuple[float, float]:
    """Seconds to construct the dataset, and from there to its first batch (cProfile of both into
    `profile`, if given)."""
    import cProfile

    from torch.utils.data import DataLoader
    profiler = cProfile.Profile() if profile else None
    if profiler:
        profiler.enable()
    construct, dataset = timed(build)
    batch, _ = timed(lambda: next(iter(DataLoader(dataset, batch_size=32, num_workers=0))))
    if profiler:
        profiler.disable()
        profiler.dump_stats(profile)
    # Streaming goes on downloading the rest of the epoch in the background; stop it (it has no
    # public stop) so it neither competes with the next measurement nor fails once the server stops.
    dataset._iterator.exit()
    dataset._executor.shutdown(wait=True)
    return construct, batch


def main() -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.perf.bench_remote')
    parser.add_argument('--leaves', type=int, nargs='+', default=[1024, 16384])
    parser.add_argument('--baseline-max', type=int, default=1024,
                        help='leaves fetched by the serial baseline; beyond, its time is scaled linearly')
    parser.add_argument('--threads', type=int, nargs='+', default=[DOWNLOAD_THREADS],
                        help='download_threads values of cis_stream to compare (0: Streaming\'s serial fetch; '
                             'default: the dataset\'s, %(default)s)')
    parser.add_argument('--predownload', type=lambda v: None if v == 'default' else int(v), nargs='+',
                        default=[None], help='predownload values (samples; default: Streaming\'s 8 x batch)')
    parser.add_argument('--profile', action='store_true',
                        help='write a cProfile of each cis_stream start-up to benchmarks/out/remote_*.prof')
    args = parser.parse_args()
    os.environ.setdefault('TMPDIR', tempfile.mkdtemp(prefix='cis-bench.'))
    server, endpoint = start_moto()
    rows = []
    try:
        import boto3
        boto3.client('s3', endpoint_url=endpoint).create_bucket(Bucket=BUCKET)
        from streaming import Stream, StreamingDataset

        from cis_stream.dataset import ClusteredImportanceDataset
        from cis_stream.format.layout import leaf_dir_name
        options = dict(batch_size=32, shuffle=True, shuffle_seed=7, num_canonical_nodes=1)
        for leaves in args.leaves:
            index = bench_index(leaves)
            remote = f's3://{BUCKET}/index_{leaves}'
            seconds, count = timed(upload, index.root, f'index_{leaves}', endpoint)
            print(f'uploaded {count} files in {seconds:.1f} s', flush=True)
            cache = os.path.join(OUT, 'remote_cache')
            shutil.rmtree(cache, ignore_errors=True)
            # Streaming's serial start-up is linear in the leaves it fetches (~0.2 s each here): past
            # --baseline-max leaves it is measured on that many and scaled up, and the table says so.
            measured = min(index.num_leaves, args.baseline_max)
            base = sum(first_batch(lambda: StreamingDataset(streams=[
                Stream(remote=f'{remote}/clusters/{leaf_dir_name(leaf)}',
                       local=f'{cache}/plain_{leaves}/{leaf_dir_name(leaf)}') for leaf in range(measured)],
                **options))) * index.num_leaves / measured
            label = leaves if measured == leaves else f'{leaves} (baseline: {measured} measured, scaled)'
            for threads in args.threads:
                for predownload in args.predownload:
                    variant = f'{threads} threads, predownload {predownload or "default"}'
                    tag = f'{leaves}_{threads}_{predownload}'
                    profile = os.path.join(OUT, f'remote_{tag}.prof') if args.profile else None
                    construct, batch = first_batch(lambda: ClusteredImportanceDataset(
                        remote, None, local=f'{cache}/cis_{tag}', download_threads=threads,
                        predownload=predownload, **options), profile)
                    rows.append((label, variant, base, construct, batch))
                    print(f'{leaves} leaves: Streaming {base:.1f} s, cis_stream ({variant}) {construct + batch:.1f} s'
                          f' ({construct:.1f} s constructing, {batch:.1f} s to the first batch)', flush=True)
                    if profile:
                        print(f'profile of that start-up: {profile} (python -m pstats)', flush=True)
    finally:
        server.kill()
    print('\n| leaves | Streaming, serial index.json fetch (s) | cis_stream, bundled leaf indexes (s) '
          '| of which constructing (s) | speed-up | cis_stream prefetch |')
    print('|---|---|---|---|---|---|')
    for leaves, variant, base, construct, batch in rows:
        total = construct + batch
        print(f'| {leaves} | {base:.1f} | {total:.1f} | {construct:.1f} | {base / total:.1f}x | {variant} |')
    return 0


if __name__ == '__main__':
    sys.exit(main())
