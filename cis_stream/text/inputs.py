"""What the index records of an input (a file, an MDS dataset or an object in S3): its size, its
sha256 (eval and specialist files), its origin and a cheap change stamp, whatever kind it is."""

from __future__ import annotations

import os

from cis_stream.format.files import sha256_file
from cis_stream.text.mds import mds_bytes, mds_sha256
from cis_stream.text.remote import fetch, is_remote, listed, release


def input_bytes(path: str) -> int:
    """An input's size: a file's, an MDS dataset's index and shards, or an object's as listed."""
    if is_remote(path):
        return listed(path).size
    return mds_bytes(path) if os.path.isdir(path) else os.path.getsize(path)


def input_sha256(path: str) -> str:
    """An input's sha256: a file's bytes, or an MDS dataset's index and shards in order (fetched
    first if remote)."""
    if is_remote(path):
        local = fetch(path)
        try:
            return input_sha256(local)
        finally:
            release(local)
    return mds_sha256(path) if os.path.isdir(path) else sha256_file(path)


def input_origin(path: str) -> dict:
    """What the manifest records of where an input came from besides its path: an object's ETag."""
    return {'etag': listed(path).etag} if is_remote(path) else {}


def input_stamp(path: str) -> str:
    """What changes when an input changes, cheaply: its mtime, or an object's ETag."""
    return f'etag:{listed(path).etag}' if is_remote(path) else f'mtime_ns:{os.stat(path).st_mtime_ns}'
