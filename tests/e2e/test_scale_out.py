"""Indexing at scale: one job over several processes or nodes (torchrun, the composer launcher) gives the
same index as one process, and a build killed with SIGKILL at any point resumes to that same index."""

from __future__ import annotations

import concurrent.futures
import glob
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cis_stream.format.reader import CISIndex
from cis_stream.index.job import IndexJob
from cis_stream.index.options import IndexOptions
from tests.helpers import WIKI_LEVELS, WIKI_WINDOW

BIN = os.path.dirname(sys.executable)
# Each wiki file becomes a part of its own (the default plan makes one part of all three).
PART_BYTES = 100_000


def index_args(corpus, out) -> list[str]:
    return [corpus.root, '--out', out, '--embedder', 'lsi', '--levels', ','.join(map(str, WIKI_LEVELS)),
            '--window', str(WIKI_WINDOW), '--seed', '0', '--part-bytes', str(PART_BYTES)]


LAUNCHERS = {
    'one process': [sys.executable, '-m', 'cis_stream.index'],
    'torchrun x2': [sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', '2',
                    '-m', 'cis_stream.index'],
    'composer x2': [os.path.join(BIN, 'composer'), '-n', '2', '-m', 'cis_stream.index'],
}


def start(launcher: str | list[str], args: list[str]) -> subprocess.Popen:
    """A launcher of LAUNCHERS (or a launch command) running the indexer with `args`."""
    command = LAUNCHERS[launcher] if isinstance(launcher, str) else launcher
    # A session of its own, so that a kill reaches the launcher's workers too.
    return subprocess.Popen(command + args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)


def finish(process: subprocess.Popen) -> str:
    output, _ = process.communicate(timeout=600)
    assert process.returncode == 0, output[-3000:]
    return output


@pytest.mark.parametrize('launcher', ['torchrun x2', 'composer x2'])
def test_two_processes_build_the_index_of_one(wiki_corpus, wiki_index, tmp_path, launcher):
    out = str(tmp_path / 'index')
    output = finish(start(launcher, index_args(wiki_corpus, out)))
    assert output.count('published') == 1, 'only rank 0 prints the summary'
    index = CISIndex.open(out)
    build = index.manifest['build']
    assert {k: build[k] for k in ('processes', 'parts', 'resumed')} == {'processes': 2, 'parts': 3, 'resumed': False}
    # The ranks share the parts first come, first served: each part is read once, by one rank.
    assert len(build['parts_read_by_rank']) == 2 and sum(build['parts_read_by_rank']) == 3
    one = wiki_index.manifest['build']
    assert one['processes'] == 1 and one['parts_read_by_rank'] == [one['parts']]
    # Same tree, embedder state, leaf shards (through their index.json hashes), counts and totals.
    assert index.fingerprint == wiki_index.fingerprint
    assert index.manifest['tree'] == wiki_index.manifest['tree']
    with open(os.path.join(out, 'rejects.jsonl'), 'rb') as a, open(os.path.join(wiki_index.root, 'rejects.jsonl'),
                                                                    'rb') as b:
        assert a.read() == b.read()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        return probe.getsockname()[1]


def test_two_nodes_build_the_index_of_one(wiki_corpus, wiki_index, tmp_path):
    """The multi-node launch: one torchrun agent per node (as `srun torchrun` starts them), here
    two agents on 127.0.0.1 sharing the output folder as nodes share a file system."""
    out, port = str(tmp_path / 'index'), free_port()
    # The README's Slurm command: c10d rendezvous, so which agent hosts rank 0 is up to the rendezvous.
    launch = [sys.executable, '-m', 'torch.distributed.run', '--nnodes', '2', '--nproc_per_node', '1',
              '--rdzv_backend', 'c10d', '--rdzv_endpoint', f'127.0.0.1:{port}', '-m', 'cis_stream.index']
    nodes = [start(launch, index_args(wiki_corpus, out)) for _ in range(2)]
    outputs = [finish(node) for node in nodes]
    assert sorted(output.count('published') for output in outputs) == [0, 1], 'rank 0 alone publishes'
    index = CISIndex.open(out)
    build = index.manifest['build']
    assert build['processes'] == 2 and sum(build['parts_read_by_rank']) == build['parts'] == 3
    assert index.fingerprint == wiki_index.fingerprint


def progress(out: str) -> dict:
    """What an unfinished build has recorded as done."""
    work = out + '.building/_work'
    return {'read': len(glob.glob(f'{work}/parts/*/read.json')),
            'embedded': len(glob.glob(f'{work}/parts/*/embeddings.npy')),
            'packed': len(glob.glob(f'{work}/packed/*.json'))}


def kill_when(process: subprocess.Popen, out: str, condition) -> dict:
    """SIGKILL the whole launch as soon as `condition(progress)` holds; returns the progress then."""
    while process.poll() is None:
        state = progress(out)
        if condition(state):
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
            return state
        time.sleep(0.02)
    raise AssertionError(f'the build ended before the kill point: {process.stdout.read()[-2000:]}')


def test_sigkilled_builds_resume_to_the_same_index(wiki_corpus, wiki_index, tmp_path):
    out = str(tmp_path / 'index')
    args = index_args(wiki_corpus, out)
    # Killed mid-read on two processes, then mid-embed on one, then at a random moment: each
    # run continues from the parts the previous ones finished, whatever the process count.
    state = kill_when(start('torchrun x2', args), out, lambda s: s['read'] >= 1)
    assert 1 <= state['read'] < 3 and not os.path.exists(out)
    state = kill_when(start('one process', args), out, lambda s: s['embedded'] >= 1)
    assert state['read'] == 3 and state['embedded'] < 3
    process = start('one process', args)
    time.sleep(np.random.default_rng(0).uniform(2, 6))
    os.killpg(process.pid, signal.SIGKILL)
    process.wait()

    if not os.path.exists(out):
        finish(start('one process', args))
    index = CISIndex.open(out)
    assert index.fingerprint == wiki_index.fingerprint, 'a resumed build must equal an uninterrupted one'
    totals = index.manifest['totals']
    assert totals == wiki_index.manifest['totals']
    assert totals['documents_read'] == totals['documents_indexed'] + totals['documents_rejected']
    with open(os.path.join(out, 'rejects.jsonl'), encoding='utf-8') as handle:
        rejects = [json.loads(line) for line in handle]
    assert len(rejects) == len({(r['file'], r['line']) for r in rejects}) == totals['documents_rejected']
    assert not os.path.exists(out + '.building')


class ThreadRank:
    """A rank of a 2-rank group made of threads: the claims are the real files, the barrier a thread barrier."""

    def __init__(self, rank: int, barrier: threading.Barrier):
        self.rank, self.world, self._barrier = rank, 2, barrier

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        self._barrier.wait(timeout=60)


def test_a_slow_rank_does_fewer_parts_and_each_part_is_done_once(wiki_records, tmp_path):
    files = []
    for i, rows in enumerate(np.array_split(np.arange(480), 24)):
        path = tmp_path / f'in-{i:02d}.jsonl'
        path.write_text(''.join(json.dumps({'text': wiki_records[j]['text']}) + '\n' for j in rows))
        files.append(str(path))
    barrier = threading.Barrier(2)
    done: dict[int, list[int]] = {0: [], 1: []}

    def run_rank(rank: int, seconds_per_part: float) -> IndexJob:
        job = IndexJob(files, str(tmp_path / 'index'), IndexOptions(), strict=False, progress=False,
                   group=ThreadRank(rank, barrier), restart=False, part_bytes=1)  # one part per file

        def work(part: int) -> None:
            time.sleep(seconds_per_part)
            done[rank].append(part)
        assert job.share('test.json', job.part_bytes, 'B', 'test', work) == len(done[rank])
        return job

    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        fast, slow = pool.submit(run_rank, 0, 0.01), pool.submit(run_rank, 1, 0.25)
        fast_job, slow_job = fast.result(), slow.result()
    assert len(fast_job.parts) == 24 and sorted(done[0] + done[1]) == list(range(24))
    # The old fixed deal by bytes gave each rank 12 parts; first come, first served lets the
    # fast rank take the parts the slow one has not reached.
    assert len(slow_job.mine) == 12 and 1 <= len(done[1]) <= 4, done


def test_fewer_parts_than_processes_is_named(wiki_records, tmp_path, caplog):
    """One input file cannot be shared: the leader says so, and how to fix it."""
    path = tmp_path / 'one.jsonl'
    path.write_text(''.join(json.dumps({'text': r['text']}) + '\n' for r in wiki_records[:50]))
    barrier = threading.Barrier(2)
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        ranks = [pool.submit(IndexJob, [str(path)], str(tmp_path / 'index'), IndexOptions(), strict=False,
                             progress=False, group=ThreadRank(rank, barrier), restart=False, part_bytes=None)
                 for rank in (0, 1)]
        assert [len(rank.result().parts) for rank in ranks] == [1, 1]
    warnings = [r.getMessage() for r in caplog.records if 'part(s) of input' in r.getMessage()]
    assert warnings == ['1 part(s) of input for 2 processes: 1 process(es) will have no input to read or embed. '
                        'A part is a run of whole files, so split large inputs into more files than processes']
