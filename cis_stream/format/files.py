"""Writing the files of an index: atomically (temporary name, then rename), canonically, hashed."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import threading


@contextlib.contextmanager
def replacing(path: str):
    """Yield a temporary name next to `path` (file or folder) that becomes `path` when the block ends.

    Every file of an index, staged or published, is written this way and never rewritten in place:
    `cis-stream add` stages a new version whose files are hard links to the old version's, so
    writing through one would change both; and no reader sees half a file. The name is the
    writer's own (host, process, thread): concurrent writers (e.g. ranks filling a shared cache)
    never share one. It keeps the suffix, for writers that add one (np.save, np.savez). A failed
    block leaves nothing behind.
    """
    stem, suffix = os.path.splitext(path)
    tmp = f'{stem}.tmp-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}{suffix}'
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp)
        elif os.path.lexists(tmp):
            os.unlink(tmp)


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode('utf-8')


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def write_json(path: str, obj) -> None:
    """Write-then-rename, so a record is either complete or absent (it marks work as done)."""
    with replacing(path) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(obj, handle, sort_keys=True)


def read_json(path: str):
    with open(path, encoding='utf-8') as handle:
        return json.load(handle)
