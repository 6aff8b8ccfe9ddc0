"""Shared pieces of the benchmarks: a cached real corpus, cached indexes, timing helpers.

Everything is written under benchmarks/out/ (git-ignored) and reused by later runs.
"""

from __future__ import annotations

import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time

from benchmarks import OUT
from cis_stream.demo.corpora import WIKI_LANGUAGES, load_wiki_summaries
from cis_stream.format.reader import CISIndex
from cis_stream.index.job import build_index
from cis_stream.text.readers import Document, read_documents

# Tree shapes per leaf count: the top level, then the leaves.
TREES = {64: [8, 64], 1024: [32, 1024], 16384: [128, 16384]}


def wiki_corpus() -> str:
    """All 26,227 Wikipedia summaries of the package (English, French, Spanish; 11 MB of text)."""
    path = os.path.join(OUT, 'wiki_all.jsonl')
    if not os.path.exists(path):
        os.makedirs(OUT, exist_ok=True)
        with open(path + '.tmp', 'w', encoding='utf-8') as handle:
            for language in WIKI_LANGUAGES:
                for record in load_wiki_summaries(language):
                    handle.write(json.dumps({'text': record['text'], 'lang': language}, ensure_ascii=False) + '\n')
        os.rename(path + '.tmp', path)
    return path


def split_corpus(source: str, files: int) -> str:
    """`source` (any input format) in `files` consecutive JSON-lines pieces (cached)."""
    name = os.path.basename(source).split('.')[0]
    folder = os.path.join(OUT, f'{name}_split_{files}')
    if not os.path.isdir(folder):
        lines = [json.dumps({'text': doc.text}, ensure_ascii=False) + '\n'
                 for doc in read_documents([source]) if isinstance(doc, Document)]
        tmp = folder + '.tmp'
        os.makedirs(tmp, exist_ok=True)
        step = -(-len(lines) // files)
        for i in range(files):
            with open(os.path.join(tmp, f'part{i:02d}.jsonl'), 'w', encoding='utf-8') as handle:
                handle.writelines(lines[i * step:(i + 1) * step])
        os.rename(tmp, folder)
    return folder


def bench_index(leaves: int, seq_len: int = 64) -> CISIndex:
    """An lsi index of the corpus with `leaves` leaves and 64-token windows, cached."""
    path = os.path.join(OUT, f'index_{leaves}' + (f'_seq{seq_len}' if seq_len != 64 else ''))
    if not os.path.exists(path):
        build_index([wiki_corpus()], path, embedder='lsi', levels=TREES[leaves], window=64, seq_len=seq_len,
                    seed=0)
    return CISIndex.open(path)


# `cis-stream index` on 1 process, or on 2 through torchrun.
LAUNCH = {1: [sys.executable, '-m', 'cis_stream.index'],
          2: [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2', '-m',
              'cis_stream.index']}


def launch_index(processes: int, inputs: str, out: str, *flags: str) -> dict:
    """Index `inputs` in a fresh command on `processes` processes: the wall time of the whole
    command (launcher and imports included), the cores it kept busy on average, and the manifest's
    fingerprint and stage timings (`total` is the job itself)."""
    shutil.rmtree(out, ignore_errors=True)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    result = subprocess.run(LAUNCH[processes] + [inputs, '--out', out, *flags], capture_output=True, text=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    if result.returncode:
        raise SystemExit(result.stdout[-2000:] + result.stderr[-2000:])
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    with open(os.path.join(out, 'cis_index.json'), encoding='utf-8') as handle:
        manifest = json.load(handle)
    return {'wall': wall, 'cores_busy': cpu / wall, 'fingerprint': manifest['fingerprint'], **manifest['timings']}


def timed(fn, *args, **kwargs) -> tuple[float, object]:
    start = time.perf_counter()
    result = fn(*args, **kwargs)
    return time.perf_counter() - start, result


def median(values) -> float:
    return statistics.median(values)
