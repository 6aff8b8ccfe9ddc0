"""The `cis-stream index` command line, run as a user would (separate processes)."""

from __future__ import annotations

import os
import signal
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
    assert 'seed of every sample and k-means' in ' '.join(result.stdout.split())


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


def test_version_comes_from_the_package_metadata():
    import importlib.metadata

    import cis_stream
    result = run([os.path.join(BIN, 'cis-stream'), '--version'])
    assert result.returncode == 0
    assert result.stdout.strip() == f"cis-stream {importlib.metadata.version('cis_stream')}" == \
        f'cis-stream {cis_stream.__version__}'


# Each bad option through the real command line, then the modules the process had imported.
CHECK_IMPORTS = '''
import sys
from cis_stream.cli import main
code = main(sys.argv[1:])
heavy = sorted(m for m in ('torch', 'streaming', 'faiss', 'sklearn', 'transformers') if m in sys.modules)
print(code, heavy)
'''


@pytest.mark.parametrize('args, message', [
    (['--levels', '-4,8'], '--levels [-4, 8]: give positive cluster counts, e.g. 16,256'),
    (['--levels', '16,4'], '--levels [16, 4]: each level must be a larger multiple of the one above (4 is not a '
                           'multiple of 16 greater than it)'),
    (['--window', '-1'], '--window -1: must be a positive number of tokens'),
    (['--seq-len', '0'], '--seq-len 0: must be a positive number of tokens'),
    (['--max-doc-bytes', '0'], '--max-doc-bytes 0: must be a positive number of bytes'),
])
def test_bad_options_are_reported_before_the_slow_imports(small_corpus, out_dir, args, message):
    result = run([sys.executable, '-c', CHECK_IMPORTS, 'index', small_corpus.files[0], '--out', out_dir, *args])
    assert result.stdout.strip() == '2 []', result.stdout + result.stderr
    assert result.stderr.strip() == f'cis-stream index: error: {message}'


def test_a_missing_input_is_reported_before_the_slow_imports(tmp_path):
    missing = str(tmp_path / 'corpus')
    result = run([sys.executable, '-c', CHECK_IMPORTS, 'index', missing, '--out', str(tmp_path / 'idx')])
    assert result.stdout.strip() == '2 []'
    assert result.stderr.strip() == f'cis-stream index: error: {missing}: no such file or directory'


def test_ctrl_c_is_one_line_and_exit_130(small_corpus, tmp_path):
    from tests.helpers import start_gated, wait_for_staging
    out = str(tmp_path / 'index')
    build = start_gated(str(tmp_path / 'never'), 'cli', 'index', small_corpus.root, '--out', out,
                        '--levels', '2,4', '--window', '64')
    try:
        wait_for_staging(build, out)
        build.send_signal(signal.SIGINT)
        _, stderr = build.communicate(timeout=120)
    finally:
        build.kill()
    assert build.returncode == 130, stderr
    assert 'Traceback' not in stderr
    assert stderr.strip().splitlines()[-2:] == [
        f'WARNING cis_stream.index.job: indexing stopped; the work done is kept in {out}.building: run the same '
        f'command again to resume (or pass --restart to start over)', 'cis-stream index: interrupted']


def test_export_tokenizer_writes_what_transformers_loads_with_the_index_ids(mix_index, split_dir, tmp_path):
    from transformers import AutoTokenizer

    from cis_stream.text.readers import read_documents
    out = tmp_path / 'tokenizer_hf'
    result = subprocess.run([sys.executable, '-m', 'cis_stream.cli', 'export-tokenizer', mix_index.root, str(out)],
                            capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    loaded = AutoTokenizer.from_pretrained(str(out))
    eos = mix_index.tokenizer.eos_id
    assert loaded.eos_token_id == loaded.pad_token_id == eos and len(loaded) == mix_index.tokenizer.vocab_size
    texts = [d.text for d in read_documents([str(split_dir / 'specialist.jsonl')])][:20]
    assert [loaded(t, add_special_tokens=False).input_ids for t in texts] == [
        mix_index.tokenizer.tokenizer.encode(t, add_special_tokens=False).ids for t in texts]
