"""Object-store inputs on a real S3-compatible server (moto on 127.0.0.1): JSON lines, Parquet and an
MDS dataset under an s3:// prefix build the same index as the same files on disk, fetched one at a
time into a cache that is emptied again; unknown buckets and keys, missing credentials and a server
that goes away mid-read get messages that name the URL and never hold the secret."""

from __future__ import annotations

import os

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from streaming import MDSWriter

from cis_stream.index.job import build_index
from cis_stream.text.readers import InputError, find_inputs
from tests.fixtures_s3 import Gate
from tests.helpers import SMALL_OPTIONS, json_line, write_lines


@pytest.fixture
def corpus_dir(small_corpus, tmp_path) -> str:
    """The small corpus in three formats: JSON lines (zstd), Parquet and an MDS dataset, plus a README."""
    root = tmp_path / 'data'
    root.mkdir()
    docs = small_corpus.docs
    write_lines(str(root / 'a.jsonl.zst'), [json_line({'text': d['text']}) for d in docs[:100]])
    pq.write_table(pa.table({'text': [d['text'] for d in docs[100:200]]}), str(root / 'b.parquet'),
                   row_group_size=30)
    with MDSWriter(out=str(root / 'c_mds'), columns={'text': 'str'}, compression='zstd', hashes=['xxh64'],
                   size_limit=1 << 14) as writer:
        for d in docs[200:]:
            writer.write({'text': d['text']})
    (root / 'README.md').write_text('about this corpus')
    return str(root)


def _upload(port: int, root: str, bucket: str = 'corpus', prefix: str = 'data') -> None:
    import boto3
    client = boto3.client('s3', endpoint_url=f'http://127.0.0.1:{port}')
    client.create_bucket(Bucket=bucket)
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            client.upload_file(path, bucket, f'{prefix}/{os.path.relpath(path, root)}')


def test_an_s3_prefix_builds_the_index_its_files_build_on_disk(corpus_dir, s3_server, monkeypatch, tmp_path, capfd):
    port, secret = s3_server
    _upload(port, corpus_dir)
    monkeypatch.setenv('S3_ENDPOINT_URL', f'http://127.0.0.1:{port}')
    cache = tmp_path / 'input_cache'
    monkeypatch.setenv('CIS_STREAM_INPUT_CACHE', str(cache))
    local = build_index([corpus_dir], str(tmp_path / 'local'), **SMALL_OPTIONS)
    remote = build_index(['s3://corpus/data/'], str(tmp_path / 'remote'), **SMALL_OPTIONS)
    assert remote.fingerprint == local.fingerprint
    inputs = remote.manifest['inputs']
    assert [s['path'] for s in inputs] == ['s3://corpus/data/a.jsonl.zst', 's3://corpus/data/b.parquet',
                                          's3://corpus/data/c_mds']
    assert [s['bytes'] for s in inputs] == [s['bytes'] for s in local.manifest['inputs']]
    assert all(len(s['etag']) == 32 for s in inputs)
    assert remote.manifest['skipped_files'] == [{'path': 's3://corpus/data/README.md',
                                                 'reason': local.manifest['skipped_files'][0]['reason']}]
    assert os.listdir(cache) == []  # each input was removed once read
    with open(os.path.join(remote.root, 'cis_index.json'), encoding='utf-8') as handle:
        assert secret not in handle.read()
    assert secret not in ''.join(capfd.readouterr())
    # A glob over keys picks what it matches.
    assert find_inputs(['s3://corpus/data/*.parquet']).files == ['s3://corpus/data/b.parquet']


def test_bad_s3_inputs_get_messages_naming_the_url(corpus_dir, s3_server, monkeypatch, tmp_path):
    port, secret = s3_server
    _upload(port, corpus_dir)
    monkeypatch.setenv('S3_ENDPOINT_URL', f'http://127.0.0.1:{port}')
    cases = [('s3://no-such-bucket/data/', 's3://no-such-bucket/data/: no such bucket'),
             ('s3://corpus/nothing/here.jsonl',
              's3://corpus/nothing/here.jsonl: no such object, and no object under it'),
             ('gs://corpus/data/', 'only s3:// object-store inputs are read')]
    for spec, message in cases:
        with pytest.raises(InputError) as info:
            build_index([spec], str(tmp_path / 'out'), **SMALL_OPTIONS)
        assert message in str(info.value) and secret not in str(info.value)
    for name in ('AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'):
        monkeypatch.delenv(name)
    monkeypatch.setenv('AWS_SHARED_CREDENTIALS_FILE', str(tmp_path / 'none'))
    monkeypatch.setenv('AWS_CONFIG_FILE', str(tmp_path / 'none'))
    import boto3
    monkeypatch.setattr(boto3, 'DEFAULT_SESSION', None)  # it keeps the credentials it found first
    with pytest.raises(InputError, match='s3://corpus/data/: no credentials for the object store: set AWS_ACCESS'):
        find_inputs(['s3://corpus/data/'])


def test_a_store_that_goes_away_mid_read_is_retried_then_named(corpus_dir, s3_server, monkeypatch, tmp_path):
    port, secret = s3_server
    _upload(port, corpus_dir)
    gate = Gate(port)
    gate.start()
    monkeypatch.setenv('S3_ENDPOINT_URL', f'http://127.0.0.1:{gate.port}')
    from cis_stream.text import readers
    listed = find_inputs(['s3://corpus/data/'])  # listed while the store is up
    gate.stop()  # then it goes away before the first object is fetched
    with pytest.raises(InputError) as info:
        list(readers.read_file(listed.files[0]))
    message = str(info.value)
    assert message.startswith('s3://corpus/data/a.jsonl.zst: cannot be fetched after 3 attempts')
    assert 'run the same command again' in message and secret not in message


def _keys(port: int, bucket: str, prefix: str) -> dict[str, int]:
    import boto3
    client = boto3.client('s3', endpoint_url=f'http://127.0.0.1:{port}')
    pages = client.get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix)
    return {o['Key'][len(prefix):]: o['Size'] for page in pages for o in page.get('Contents', [])}


def test_parquet_in_s3_to_an_index_in_s3_to_a_trained_step(corpus_dir, s3_server, monkeypatch, tmp_path, caplog):
    import logging
    import subprocess
    import sys

    from cis_stream.dataset import ClusteredImportanceDataset
    from tests.helpers import REPO_ROOT
    port, secret = s3_server
    _upload(port, corpus_dir)
    import boto3
    boto3.client('s3', endpoint_url=f'http://127.0.0.1:{port}').create_bucket(Bucket='indexes')
    monkeypatch.setenv('S3_ENDPOINT_URL', f'http://127.0.0.1:{port}')
    options = dict(SMALL_OPTIONS, levels=[2, 4])
    local = build_index([os.path.join(corpus_dir, 'b.parquet')], str(tmp_path / 'local'), **options)
    with caplog.at_level(logging.INFO):
        index = build_index(['s3://corpus/data/b.parquet'], 's3://indexes/med', staging=str(tmp_path / 'stage'),
                            **options)
    assert index.root == str(tmp_path / 'stage') and index.fingerprint == local.fingerprint
    files = {os.path.relpath(os.path.join(d, n), index.root) for d, _, names in os.walk(index.root) for n in names}
    assert set(_keys(port, 'indexes', 'med/')) == files
    # The published index trains: the dataset reads it through a local cache, as Streaming does.
    common = dict(batch_size=4, shuffle=False, num_canonical_nodes=1)
    remote = ClusteredImportanceDataset('s3://indexes/med', None, local=str(tmp_path / 'cache'), **common)
    assert remote[3]['input_ids'].tolist() == ClusteredImportanceDataset(local.root, None, **common)[3][
        'input_ids'].tolist()
    result = subprocess.run([sys.executable, os.path.join(REPO_ROOT, 'train.py'), os.path.join(REPO_ROOT, 'yamls',
                             'uniform.yaml'), 'train_loader.dataset.index=s3://indexes/med',
                             f'train_loader.dataset.local={tmp_path / "train_cache"}', 'max_seq_len=96',
                             'global_train_batch_size=4', 'device_train_microbatch_size=4', 'max_duration=2ba',
                             'eval_loaders=[]', 'save_folder=null', 'results_path=null', 'model.d_model=32',
                             'model.n_layers=1', 'model.n_heads=2', 'callbacks={}'],
                            capture_output=True, text=True, cwd=tmp_path)
    assert result.returncode == 0, result.stderr[-3000:]
    assert secret not in result.stdout + result.stderr + caplog.text


def test_a_remote_index_is_replaced_only_with_overwrite_and_a_killed_upload_resumes(
        corpus_dir, s3_server, monkeypatch, tmp_path, caplog):
    import logging

    import boto3
    port, _ = s3_server
    _upload(port, corpus_dir)
    client = boto3.client('s3', endpoint_url=f'http://127.0.0.1:{port}')
    client.create_bucket(Bucket='indexes')
    monkeypatch.setenv('S3_ENDPOINT_URL', f'http://127.0.0.1:{port}')
    inputs, stage = ['s3://corpus/data/a.jsonl.zst'], str(tmp_path / 'stage')
    options = dict(SMALL_OPTIONS, levels=[2, 4])
    first = build_index(inputs, 's3://indexes/idx', staging=stage, **options)
    published = _keys(port, 'indexes', 'idx/')
    # A killed upload: the manifest (always last) and a few shards never arrived.
    lost = ['cis_index.json'] + [k for k in published if k.endswith('.mds.zstd')][:2]
    client.delete_objects(Bucket='indexes', Delete={'Objects': [{'Key': f'idx/{k}'} for k in lost]})
    with caplog.at_level(logging.INFO):
        again = build_index(inputs, 's3://indexes/idx', staging=stage, **options)
    assert again.fingerprint == first.fingerprint
    assert f'published s3://indexes/idx: {len(published)} files ({len(lost)} uploaded, ' \
           f'{len(published) - len(lost)} already there)' in caplog.text
    assert _keys(port, 'indexes', 'idx/') == published
    # Another index to the same URL: refused before any work, then replaced with --overwrite.
    with pytest.raises(FileExistsError, match='s3://indexes/idx already holds an index; pass --overwrite'):
        build_index(inputs, 's3://indexes/idx', staging=str(tmp_path / 'other'), **dict(options, levels=[2]))
    assert not os.path.exists(tmp_path / 'other')
    replaced = build_index(inputs, 's3://indexes/idx', staging=str(tmp_path / 'other'), overwrite=True,
                           **dict(options, levels=[2]))
    now = _keys(port, 'indexes', 'idx/')
    files = {os.path.relpath(os.path.join(d, n), replaced.root) for d, _, names in os.walk(replaced.root)
             for n in names}
    assert set(now) == files and not any(k.startswith('clusters/00003/') for k in now)  # stale leaves removed
    # A staging folder holding another build is never replaced.
    with pytest.raises(FileExistsError, match='--staging .* holds the build of other inputs or options'):
        build_index(inputs, 's3://indexes/idx', staging=stage, overwrite=True, **dict(options, seed=3))


def test_add_grows_an_s3_index_in_place_as_it_grows_a_local_one(corpus_dir, s3_server, monkeypatch, tmp_path):
    import boto3

    from cis_stream.format.reader import CISIndex
    from cis_stream.index.add import add_to_index
    port, _ = s3_server
    boto3.client('s3', endpoint_url=f'http://127.0.0.1:{port}').create_bucket(Bucket='indexes')
    monkeypatch.setenv('S3_ENDPOINT_URL', f'http://127.0.0.1:{port}')
    options = dict(SMALL_OPTIONS, levels=[2, 4])
    first = os.path.join(corpus_dir, 'a.jsonl.zst')
    built = build_index([first], 's3://indexes/idx', staging=str(tmp_path / 'stage'), **options)
    local = add_to_index(built.root, [os.path.join(corpus_dir, 'b.parquet')], str(tmp_path / 'grown'), progress=False)
    remote = add_to_index('s3://indexes/idx', [os.path.join(corpus_dir, 'b.parquet')],
                          staging=str(tmp_path / 'add'), progress=False)
    assert remote.fingerprint == local.fingerprint != built.fingerprint
    fetched = tmp_path / 'fetched'
    from cis_stream.format.store import download_index
    download_index('s3://indexes/idx', str(fetched), progress=False)
    assert CISIndex.open(str(fetched)).manifest['history'][0]['fingerprint'] == built.fingerprint
    assert set(_keys(port, 'indexes', 'idx/')) == {
        os.path.relpath(os.path.join(d, n), remote.root) for d, _, names in os.walk(remote.root) for n in names}
    assert not (tmp_path / 'add' / 'old').exists()  # the fetched old version is removed
