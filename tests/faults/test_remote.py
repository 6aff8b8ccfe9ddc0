"""A remote S3 server (moto, behind a TCP gate) that goes away mid-run: the dataset retries, then fails
naming the leaf, the shard and the attempts, and no credential reaches a message or a log."""

from __future__ import annotations

import logging
import os
import random
import socket
import subprocess
import sys
import threading
import time

import numpy as np
import pytest

from cis_stream.dataset import ClusteredImportanceDataset, DamagedLeafError
from tests.helpers import copy_index, leaf_sample_ids

# The datasets of these tests: no shuffle, so that a sample id names the same sample every time.
COMMON = dict(batch_size=8, shuffle=False, num_canonical_nodes=1)


def _port_outside_ephemeral_range() -> int:
    """A free port below Linux's ephemeral range (32768-60999): while the gate is down, no outgoing
    connection can be given its number, so it can always listen again."""
    for port in random.Random(os.getpid()).sample(range(20000, 30000), 200):
        with socket.socket() as probe:
            try:
                probe.bind(('127.0.0.1', port))
                return port
            except OSError:
                continue
    raise RuntimeError('no free port in 20000-30000')


class _Gate:
    """A TCP forwarder in front of the S3 server. Stopping it is, for the client, the server going
    away (connection refused); moto keeps its objects only in memory, so the server itself stays up."""

    def __init__(self, target: int):
        self.target = target
        self.port = _port_outside_ephemeral_range()
        self._listener = None
        self._open: list[socket.socket] = []

    def start(self) -> None:
        self._listener = socket.create_server(('127.0.0.1', self.port))
        threading.Thread(target=self._accept, args=(self._listener,), daemon=True).start()

    def stop(self) -> None:
        self._listener.close()
        for conn in self._open:
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            conn.close()
        self._open.clear()

    def _accept(self, listener) -> None:
        while True:
            try:
                client, _ = listener.accept()
            except OSError:
                return
            upstream = socket.create_connection(('127.0.0.1', self.target))
            self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source, sink) -> None:
        try:
            while data := source.recv(1 << 16):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for conn in (source, sink):
                try:
                    conn.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass


@pytest.fixture
def s3_server(monkeypatch):
    pytest.importorskip('moto', reason='the remote tests need moto[server] (pip install -e .[test])')
    with socket.socket() as probe:
        probe.bind(('127.0.0.1', 0))
        port = probe.getsockname()[1]
    server = subprocess.Popen([os.path.join(os.path.dirname(sys.executable), 'moto_server'), '-H', '127.0.0.1',
                               '-p', str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        for _ in range(200):
            try:
                socket.create_connection(('127.0.0.1', port), timeout=0.2).close()
                break
            except OSError:
                time.sleep(0.05)
        secret = 'fake-secret-' + 'Zq9' * 10
        monkeypatch.setenv('AWS_ACCESS_KEY_ID', 'cis-test-key')
        monkeypatch.setenv('AWS_SECRET_ACCESS_KEY', secret)
        monkeypatch.setenv('AWS_DEFAULT_REGION', 'us-east-1')
        monkeypatch.setenv('AWS_MAX_ATTEMPTS', '1')  # botocore's own retries off: Streaming's are under test
        yield port, secret
    finally:
        server.kill()
        server.wait()


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
    gate = _Gate(port)
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
