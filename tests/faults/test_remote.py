"""A remote S3 server (moto, behind a TCP gate) that goes away mid-run: the dataset retries, then fails
naming the leaf, the shard and the attempts, and no credential reaches a message or a log."""

from __future__ import annotations

import logging
import os
import threading
import time

import numpy as np
import pytest

from cis_stream.dataset import ClusteredImportanceDataset, DamagedLeafError
from tests.fixtures_s3 import Gate
from tests.helpers import copy_index, leaf_sample_ids

# The datasets of these tests: no shuffle, so that a sample id names the same sample every time.
COMMON = dict(batch_size=8, shuffle=False, num_canonical_nodes=1)


def test_remote_server_down_mid_run_retries_then_fails_clearly_without_leaking_secrets(
        mix_index, tmp_path, s3_server, monkeypatch, caplog, capfd):
    import boto3
    port, secret = s3_server
    client = boto3.client('s3', endpoint_url=f'http://127.0.0.1:{port}')
    client.create_bucket(Bucket='cis')
    root = copy_index(mix_index, tmp_path / 'upload')
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            client.upload_file(path, 'cis', f'idx/{os.path.relpath(path, root)}')
    gate = Gate(port)
    gate.start()
    monkeypatch.setenv('S3_ENDPOINT_URL', f'http://127.0.0.1:{gate.port}')
    reference = ClusteredImportanceDataset(mix_index.root, None, **COMMON)

    with caplog.at_level(logging.DEBUG):
        dataset = ClusteredImportanceDataset('s3://cis/idx', None, local=str(tmp_path / 'cache'),
                                             download_retry=3, **COMMON)
        first, second, third = (int(leaf_sample_ids(dataset, leaf)[0]) for leaf in (1, 2, 3))
        assert np.array_equal(dataset[first]['input_ids'], reference[first]['input_ids'])

        gate.stop()  # the server goes away mid-run, and comes back 1 s later
        threading.Timer(1.0, gate.start).start()
        started = time.perf_counter()
        assert np.array_equal(dataset[second]['input_ids'], reference[second]['input_ids'])
        assert time.perf_counter() - started >= 1.0, 'the first download attempts must have failed'

        gate.stop()  # gone for good
        started = time.perf_counter()
        with pytest.raises(DamagedLeafError) as info:
            dataset[third]
        seconds = time.perf_counter() - started
    message = str(info.value)
    assert message.startswith('leaf 00003: shard ') and 'Could not connect to the endpoint URL' in message
    assert 'fetching from s3://cis/idx/clusters/00003 failed after 3 attempt(s)' in message
    assert seconds < 30
    out, err = capfd.readouterr()
    for text in (message, repr(info.value.__cause__), caplog.text, out, err):
        assert secret not in text
    assert any(r.name.startswith('botocore') for r in caplog.records), 'the S3 client\'s debug logs were captured'
