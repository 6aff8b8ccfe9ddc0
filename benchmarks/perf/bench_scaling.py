"""Indexer scaling and memory: time and peak RSS at 3 corpus sizes and 2 tree sizes (issue 5).

    .venv/bin/python -m benchmarks.perf.bench_scaling [--sizes 30 100 300] [--trees 16,256 64,4096]
        [--tokenizers gpt2 neox llama3] [--baselines tiktoken tokenizers]

The corpora are the 30/100/300 MB subsets of the quality benchmark's generalist pool
(`python -m benchmarks.corpus.build`), each cut into files of about 8 MB, as a real corpus would
come. Each `cis-stream index` (default options: lsi, 1024-token windows) runs in its own process;
its wall time, stage timings (from the manifest) and peak RSS (VmHWM) are recorded.
In the same run, the baseline: the bare tokenizer over the same documents in its own process, through
the tiktoken encoder the indexer itself uses, with no offsets or windows (the floor any indexer
that makes training tokens pays; linear in the text), and `tokenizers` alone (one `encode` a
document) for comparison (`--baselines tiktoken` leaves it out: it takes 5-7x as long).
Tokenizers (`--tokenizers`): GPT-2 BPE (the default), and byte-level BPEs
of the GPT-NeoX kind (NFC, GPT-2's split; 50,257 ids) and the Llama-3 kind (its split regex;
100,000 ids), trained on the first 30 MB subset (cached under benchmarks/out/).
The exponent b of time = a * MB^b is fitted by least squares on the log-log points.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np

from benchmarks import OUT, ROOT
from benchmarks.perf.common import split_corpus

SUBSETS = os.path.join(ROOT, 'benchmarks', 'corpus', 'cache', 'corpus', 'subsets')
FILE_MB = 8
POLL = 0.05  # seconds between peak-RSS readings
STAGES = ('read_tokenize', 'fit_embedder', 'embed', 'fit_tree', 'assign', 'pack_write', 'total')

# The baseline, run as `python -c`: tokenise every document of the files, one thread, as the
# indexer does on one process.
TOKENIZE_ONLY = '''
import json, sys
from cis_stream.text.tokens import load_tokenizer
handle = load_tokenizer(None if sys.argv[2] == "gpt2" else sys.argv[2])
encode = handle.fast.encoding.encode_ordinary if sys.argv[1] == "tiktoken" else handle.tokenizer.encode
for path in sys.argv[3:]:
    with open(path, encoding="utf-8") as lines:
        for line in lines:
            encode(json.loads(line)["text"])
'''
VOCAB = {'neox': 50257, 'llama3': 100000}


def tokenizer_path(name: str) -> str:
    """'gpt2', or the tokenizer.json of a trained `name`-style BPE (cached)."""
    if name == 'gpt2':
        return name
    path = os.path.join(OUT, f'tokenizer_{name}_{VOCAB[name]}.json')
    if not os.path.exists(path):
        from cis_stream.text.readers import read_documents
        from cis_stream.text.tokens import train_bpe_tokenizer
        texts = (doc.text for doc in read_documents([os.path.join(SUBSETS, 'pool_30mb.jsonl.zst')]))
        train_bpe_tokenizer(texts, VOCAB[name], path + '.tmp', style=name)
        os.rename(path + '.tmp', path)
    return path


def peak_rss_mb(pid: int) -> float | None:
    """The process's own high-water RSS (VmHWM), or None once it has exited."""
    try:
        with open(f'/proc/{pid}/status', encoding='ascii') as handle:
            for line in handle:
                if line.startswith('VmHWM:'):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return None


def measure(command: list[str]) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MB, CPU seconds: user + system) of one child process.

    The peak is polled from /proc (VmHWM never decreases, so the last reading is the peak, give or
    take the last POLL seconds). Not `wait4`'s ru_maxrss: a forked child inherits the parent's
    RSS into it, which would count this script's own memory.
    """
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    with tempfile.TemporaryFile() as log:
        start = time.perf_counter()
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=log)
        peak = 0.0
        while process.poll() is None:
            peak = max(peak, peak_rss_mb(process.pid) or 0.0)
            time.sleep(POLL)
        wall = time.perf_counter() - start
        if process.returncode:
            log.seek(0)
            raise SystemExit(f'{command[:4]} failed: {log.read().decode(errors="replace")[-3000:]}')
    after = resource.getrusage(resource.RUSAGE_CHILDREN)  # the one child just reaped (and its children)
    return wall, peak, after.ru_utime - before.ru_utime + after.ru_stime - before.ru_stime


def exponent(sizes: list[float], seconds: list[float]) -> float:
    return float(np.polyfit(np.log(sizes), np.log(seconds), 1)[0])


def main() -> None:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.perf.bench_scaling', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--sizes', type=int, nargs='+', default=[30, 100, 300])
    parser.add_argument('--trees', nargs='+', default=['16,256', '64,4096'], help='levels of each tree')
    parser.add_argument('--tokenizers', nargs='+', default=['gpt2'], choices=['gpt2', *VOCAB])
    parser.add_argument('--baselines', nargs='+', default=['tiktoken', 'tokenizers'],
                        choices=['tiktoken', 'tokenizers'])
    args = parser.parse_args()
    tokenizers = {name: tokenizer_path(name) for name in args.tokenizers}
    rows = []
    work = tempfile.mkdtemp(prefix='bench-scaling-')
    for size in args.sizes:
        source = os.path.join(SUBSETS, f'pool_{size}mb.jsonl.zst')
        if not os.path.exists(source):
            raise SystemExit(f'{source} is missing: build it with `python -m benchmarks.corpus.build`')
        folder = split_corpus(source, max(1, size // FILE_MB))
        files = sorted(os.path.join(folder, name) for name in os.listdir(folder))
        megabytes = sum(os.path.getsize(f) for f in files) / 1e6
        for name, tokenizer in tokenizers.items():
            for engine in args.baselines:
                wall, rss, cpu = measure([sys.executable, '-c', TOKENIZE_ONLY, engine, tokenizer, *files])
                rows.append({'size_mb': megabytes, 'what': f'tokenize only ({engine})', 'tokenizer': name,
                             'wall': wall, 'rss_mb': rss, 'cpu': cpu})
                print(f'{megabytes:.0f} MB, {name}: tokenize only ({engine}) {wall:.1f} s, {rss:.0f} MB RSS',
                      flush=True)
            flags = [] if name == 'gpt2' else ['--tokenizer', tokenizer]
            for tree in args.trees:
                out = os.path.join(work, 'index')
                shutil.rmtree(out, ignore_errors=True)
                wall, rss, cpu = measure([sys.executable, '-m', 'cis_stream.index', folder, '--out', out,
                                          '--levels', tree, *flags])
                with open(os.path.join(out, 'cis_index.json'), encoding='utf-8') as handle:
                    manifest = json.load(handle)
                rows.append({'size_mb': megabytes, 'what': f'index {tree}', 'tokenizer': name, 'wall': wall,
                             'rss_mb': rss, 'cpu': cpu, 'windows': manifest['totals']['windows'],
                             **manifest['timings']})
                print(f'{megabytes:.0f} MB, {name}: index {tree} {wall:.1f} s, {rss:.0f} MB RSS', flush=True)
    shutil.rmtree(work)
    with open(os.path.join(OUT, 'bench_scaling.json'), 'w', encoding='utf-8') as handle:
        json.dump(rows, handle, indent=1)
    report(rows)


def report(rows: list[dict]) -> None:
    """The runs, each with its speed as a share of the bare tiktoken tokenizer's on the same text: in wall
    time, and in CPU time (the indexer imports Streaming on a second thread while it reads)."""
    bare = {(row['size_mb'], row.get('tokenizer', 'gpt2')): row for row in rows
            if row['what'] == 'tokenize only (tiktoken)'}
    print('\n| corpus (MB) | tokenizer | run | wall (s) | MB/s | x bare tiktoken | CPU (s) | x bare tiktoken (CPU) | '
          'peak RSS (MB) | ' + ' | '.join(STAGES[:-1]) + ' |')
    print('|---|---|---|---|---|---|---|---|---|' + '---|' * (len(STAGES) - 1))
    for row in rows:
        tokenizer = row.get('tokenizer', 'gpt2')
        base = bare.get((row['size_mb'], tokenizer))
        stages = ' | '.join(f'{row[s]:.1f}' if s in row else '-' for s in STAGES[:-1])
        ratio = f"{base['wall'] / row['wall']:.2f}" if base else '-'
        cpu_ratio = f"{base['cpu'] / row['cpu']:.2f}" if base and 'cpu' in row else '-'
        print(f"| {row['size_mb']:.0f} | {tokenizer} | {row['what']} | {row['wall']:.1f} | "
              f"{row['size_mb'] / row['wall']:.2f} | {ratio} | {row.get('cpu', float('nan')):.1f} | {cpu_ratio} | "
              f"{row['rss_mb']:.0f} | {stages} |")
    print('\n| tokenizer | run | exponent b of wall = a * MB^b | exponent of total (manifest) | '
          'peak RSS, smallest -> largest (MB) |')
    print('|---|---|---|---|---|')
    for tokenizer, what in dict.fromkeys((row.get('tokenizer', 'gpt2'), row['what']) for row in rows):
        mine = [row for row in rows if row['what'] == what and row.get('tokenizer', 'gpt2') == tokenizer]
        sizes = [row['size_mb'] for row in mine]
        if len(sizes) < 2:
            continue
        total = f"{exponent(sizes, [row['total'] for row in mine]):.2f}" if 'total' in mine[0] else '-'
        print(f"| {tokenizer} | {what} | {exponent(sizes, [row['wall'] for row in mine]):.2f} | {total} | "
              f"{mine[0]['rss_mb']:.0f} -> {mine[-1]['rss_mb']:.0f} |")


if __name__ == '__main__':
    main()
