"""An S3-compatible server on 127.0.0.1 for the tests (moto's, started and stopped by each test that
asks for `s3_server`), and a TCP gate in front of it that can make the server go away mid-run."""

from __future__ import annotations

import errno
import os
import random
import socket
import subprocess
import sys
import threading
import time

import pytest


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


class Gate:
    """A TCP forwarder in front of the S3 server. Stopping it is, for the client, the server going
    away (connection refused); moto keeps its objects only in memory, so the server itself stays up."""

    def __init__(self, target: int):
        self.target = target
        self.port = _port_outside_ephemeral_range()
        self._listener = None
        self._open: list[socket.socket] = []

    def start(self) -> None:
        # Just after stop(), a connection the accept thread had not yet registered can hold the port
        # for a moment ("Address already in use"): retry the bind for up to 2 s, as a restarting
        # server would.
        deadline = time.monotonic() + 2.0
        while True:
            try:
                self._listener = socket.create_server(('127.0.0.1', self.port))
                break
            except OSError as err:
                if err.errno != errno.EADDRINUSE or time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
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
