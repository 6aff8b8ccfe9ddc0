"""The `cis-stream index` command line, run as a user would (separate processes)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from cis_stream import cli
from cis_stream.format.reader import CISIndex

BIN = os.path.dirname(sys.executable)


def run(args: list[str], timeout: int = 300) -> subprocess.CompletedProcess:
    env = {**os.environ, 'HF_HUB_OFFLINE': '1'}
    return subprocess.run(args, capture_output=True, text=True, timeout=timeout, env=env)


def test_index_help():
    result = run([sys.executable, '-m', 'cis_stream.cli', 'index', '--help'])
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith('usage: cis-stream index')
    for option in ('--out', '--embedder', '--levels', '--window', '--seq-len', '--tokenizer', '--strict',
                   '--overwrite'):
        assert option in result.stdout


def test_index_command_publishes_and_summarises(small_corpus, out_dir):
    script = os.path.join(BIN, 'cis-stream')
    assert os.access(script, os.X_OK), 'the cis-stream console script is installed'
    result = run([script, 'index', small_corpus.files[0], '--out', out_dir, '--levels', '2,4',
                  '--window', '64', '--seed', '3'])
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert lines[-1] == f'published {out_dir}'
    assert lines[-2].startswith(f'indexed {len(small_corpus.docs)} of {len(small_corpus.docs)} documents '
                                f'(0 rejected, see rejects.jsonl)')
    assert 'clusters per level' in lines[-2] and 'fingerprint' in lines[-2]
    index = CISIndex.open(out_dir)
    assert index.fingerprint[:16] in lines[-2]
    assert index.manifest['options']['levels'] == [2, 4] and index.manifest['options']['seed'] == 3
    assert index.manifest['options']['window'] == 64 and index.manifest['options']['embedder']['name'] == 'lsi'


def test_missing_input_exits_2_with_a_one_line_error(tmp_path):
    missing = str(tmp_path / 'no-such-corpus.jsonl')
    result = run([sys.executable, '-m', 'cis_stream.cli', 'index', missing, '--out', str(tmp_path / 'idx')])
    assert result.returncode == 2
    assert 'Traceback' not in result.stderr
    assert 'error:' in result.stderr and missing in result.stderr
    assert result.stderr.strip() == f'cis-stream index: error: {missing}: no such file or directory'
    assert not os.path.exists(tmp_path / 'idx')


@pytest.mark.parametrize('args, message', [
    (['--levels', '16,100'], '--levels [16, 100]'),
    (['--window', '0'], '--window 0'),
])
def test_bad_options_exit_2(small_corpus, out_dir, capsys, args, message):
    assert cli.main(['index', small_corpus.files[0], '--out', out_dir, *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith('cis-stream index: error: ') and message in err
    assert not os.path.exists(out_dir)


def test_existing_out_exits_2_naming_it(small_corpus, small_index, capsys):
    assert cli.main(['index', small_corpus.files[0], '--out', small_index.root]) == 2
    err = capsys.readouterr().err
    assert 'error:' in err and small_index.root in err and '--overwrite' in err
    assert CISIndex.open(small_index.root).fingerprint == small_index.fingerprint


def test_public_api_names_import_from_the_package():
    import cis_stream
    for name in cis_stream.__all__:
        assert getattr(cis_stream, name).__name__ == name
    with pytest.raises(AttributeError):
        cis_stream.no_such_name
