"""A full disk (at the spool, a shard or the leaf bundle) and kill -9 while indexing: nothing is
published, the finished work is kept, and the same command resumes to the index of a clean run.

Interrupted builds (KeyboardInterrupt) and atomic publishing: e2e/test_index.py; kill -9 of a
multi-process build: e2e/test_scale_out.py; kill -9 of training: e2e/test_train.py.
"""

from __future__ import annotations

import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time

import pytest
import streaming
from streaming import MDSWriter

import cis_stream.format.manifest as manifest_module
from cis_stream import cli
from cis_stream.format.reader import CISIndex
from cis_stream.index.job import build_index
from cis_stream.index.spool import WindowSpool
from tests.helpers import REPO_ROOT, SMALL_OPTIONS, leftovers


def _no_space(path='(injected)'):
    return OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), path)


class _FullDiskWriter(MDSWriter):
    """An MDSWriter whose second shard write finds the disk full."""
    flushed = 0

    def flush_shard(self) -> None:
        type(self).flushed += 1
        if type(self).flushed > 1:
            raise _no_space(os.path.join(self.local, 'shard.00000.mds.zstd'))
        super().flush_shard()


@pytest.mark.parametrize('where', ['spool', 'shard', 'leaf_bundle'])
def test_disk_full_publishes_nothing_and_resumes(small_corpus, small_index, out_dir, monkeypatch, where):
    if where == 'spool':
        calls = []
        original = WindowSpool.append

        def append(self, *args):
            calls.append(1)
            if len(calls) > 1:
                raise _no_space(self._tokens.name)
            original(self, *args)
        monkeypatch.setattr(WindowSpool, 'append', append)
    elif where == 'shard':
        _FullDiskWriter.flushed = 0
        monkeypatch.setattr(streaming, 'MDSWriter', _FullDiskWriter)  # write_leaf imports it when called
    else:
        def bundle(*args):
            raise _no_space()
        monkeypatch.setattr(manifest_module, 'write_leaf_indexes', bundle)
    with pytest.raises(OSError) as info:
        build_index([small_corpus.root], out_dir, **SMALL_OPTIONS)
    assert info.value.errno == errno.ENOSPC
    assert not os.path.exists(out_dir), 'a half-written index was published'
    assert leftovers(out_dir) == ['index.building'], 'the finished work is kept to resume'
    monkeypatch.undo()  # space freed: the same command resumes and completes
    assert build_index([small_corpus.root], out_dir, **SMALL_OPTIONS).fingerprint == small_index.fingerprint
    assert leftovers(out_dir) == []


def test_disk_full_on_the_command_line_is_one_clear_line(small_corpus, out_dir, monkeypatch, capsys):
    _FullDiskWriter.flushed = 0
    monkeypatch.setattr(streaming, 'MDSWriter', _FullDiskWriter)  # write_leaf imports it when called
    code = cli.main(['index', small_corpus.root, '--out', out_dir, '--window', '64', '--levels', '2,4'])
    err = capsys.readouterr().err
    assert code == 1
    assert 'No space left on device' in err and 'nothing was published' in err and 'Traceback' not in err
    assert 'run the same command again to resume' in err
    assert not os.path.exists(out_dir) and leftovers(out_dir) == ['index.building']


KILL_SCRIPT = """
import sys
from tests.helpers import SMALL_OPTIONS
from cis_stream.index.job import build_index
build_index([sys.argv[1]], sys.argv[2], **SMALL_OPTIONS)
"""


def test_kill_9_during_indexing_publishes_nothing_and_a_rerun_resumes_to_a_clean_run(small_corpus, small_index,
                                                                                      out_dir):
    """SIGKILL at each stage (once the stage's first file appears, plus a seeded random delay); each
    run resumes from what the killed ones finished."""
    rng = random.Random(7)
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([REPO_ROOT, os.environ.get('PYTHONPATH', '')]))
    os.makedirs(os.path.dirname(out_dir), exist_ok=True)
    staging = f'{out_dir}.building'
    killed_mid_build = 0
    for marker in ('_work', 'embedder', 'clusters', 'leaf_indexes.json.zst'):
        process = subprocess.Popen([sys.executable, '-c', KILL_SCRIPT, small_corpus.root, out_dir], env=env,
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while process.poll() is None and time.time() < deadline and not os.path.exists(os.path.join(staging, marker)):
            time.sleep(0.002)
        time.sleep(rng.uniform(0, 0.05))
        process.send_signal(signal.SIGKILL)
        process.wait()
        if os.path.exists(out_dir):  # it finished before the kill: then it is whole
            assert process.returncode == 0 and CISIndex.open(out_dir).fingerprint == small_index.fingerprint
            shutil.rmtree(out_dir)
        else:
            assert process.returncode == -signal.SIGKILL
            killed_mid_build += os.path.isdir(staging)
    assert killed_mid_build >= 3, 'the kills must land inside the build'

    rerun = build_index([small_corpus.root], out_dir, **SMALL_OPTIONS)
    assert rerun.fingerprint == small_index.fingerprint
    assert CISIndex.open(out_dir).fingerprint == small_index.fingerprint
    assert leftovers(out_dir) == []
