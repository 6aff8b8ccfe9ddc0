"""An index in an object store: published there (`cis-stream index ... --out s3://bucket/idx`),
fetched from there whole for `cis-stream add --index s3://...`, and opened from there for training
(`open_index`: the three files start-up needs).

The index is built locally (in `--staging`), then uploaded with parallel transfers, the manifest
last: a reader that opens the index (it starts from the manifest) never sees a partial one. An
existing remote index is refused unless `overwrite`; then its manifest is deleted first, so that
no reader mixes its shards with the new ones, and objects the new index does not have are removed
before the new manifest goes up. A killed upload resumes: an object already there with the same
size and MD5 (its ETag: every file goes up in one request) is not sent again.

boto3 is used as in text/remote.py (Streaming's own uploader sends one file at a time and cannot
list or compare); credentials come from the environment and never reach a message.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import logging
import os
import re
import tempfile

from tqdm.auto import tqdm

from cis_stream.format.layout import LEAF_INDEXES, MANIFEST, TOKENIZER_FILE
from cis_stream.format.reader import CISIndex
from cis_stream.text.remote import s3_client

log = logging.getLogger(__name__)

UPLOAD_THREADS = 8
# Every file in one PUT (an index file is at most a shard, 64 MB by default), so its ETag is its MD5.
SINGLE_PUT_LIMIT = 5 * 1024 ** 3
DOWNLOAD_TIMEOUT = 60.0  # seconds per start-up file (Streaming's downloader)


def _fetch(remote: str, local: str) -> None:
    from streaming.base.storage import CloudDownloader  # here: Streaming's import takes seconds (leaves.py)
    downloader = CloudDownloader.get(remote)
    try:
        downloader.download(remote, local, DOWNLOAD_TIMEOUT)
    finally:
        downloader.clean_up()


def open_index(index: str, local: str | None) -> CISIndex:
    """Open `index` in place, or, with a `local` cache, fetch what start-up needs there.

    With `local`, `index` is a Streaming remote (s3://, gs://, ..., or a directory to copy from).
    Three small downloads (the manifest, the bundle of every leaf's index.json, the tokenizer)
    replace the one round trip per leaf that Streaming would make, one after another; the leaves'
    streams read their index.json from the bundle (`read_leaf_indexes`).
    """
    if local is None:
        if '://' in index:
            raise ValueError(f'index {index} is remote: pass local= (a cache directory) as well')
        return CISIndex.open(index)
    names = (MANIFEST, LEAF_INDEXES, TOKENIZER_FILE)  # the tokenizer: train.py builds the model's
    with concurrent.futures.ThreadPoolExecutor(len(names)) as pool:  # at once: each has its own client
        list(pool.map(lambda name: _fetch(f'{index}/{name}', os.path.join(local, name)), names))
    return CISIndex.open(local)


def split_url(url: str) -> tuple[str, str]:
    if not url.startswith('s3://'):
        raise ValueError(f'--out {url}: an index is published to s3:// object stores only (or to a local directory)')
    bucket, _, prefix = url[len('s3://'):].partition('/')
    if not bucket or not prefix.strip('/'):
        raise ValueError(f'--out {url}: name a prefix inside the bucket, e.g. s3://{bucket or "BUCKET"}/indexes/med')
    return bucket, prefix.strip('/')


def default_staging(url: str, suffix: str = '') -> str:
    """Where an index for `url` is built or grown before it is uploaded: named after the URL under
    $TMPDIR/cis_stream_publish (kept after the upload, so a rerun resumes)."""
    return os.path.join(tempfile.gettempdir(), 'cis_stream_publish', re.sub(r'[^A-Za-z0-9._-]+', '_', url) + suffix)


def remote_objects(url: str) -> dict[str, dict]:
    """Every object under the index prefix, by its name inside the index."""
    bucket, prefix = split_url(url)
    pages = s3_client().get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix + '/')
    return {obj['Key'][len(prefix) + 1:]: obj for page in pages for obj in page.get('Contents', [])}


def check_remote_out(url: str, overwrite: bool) -> None:
    """Refuse to publish over an existing remote index unless `overwrite` (before any work is done)."""
    try:
        existing = remote_objects(url)
    except ValueError:
        raise
    except Exception as err:  # botocore's errors name the bucket and the failure, never a secret
        raise ValueError(f'--out {url}: the object store cannot be listed ({type(err).__name__}: {err}); check the '
                         f'bucket, the credentials and S3_ENDPOINT_URL') from None
    if MANIFEST in existing and not overwrite:
        raise FileExistsError(f'{url} already holds an index; pass --overwrite (overwrite=True) to replace it')


def _md5(path: str) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


def upload_index(local: str, url: str, progress: bool = True) -> dict:
    """Upload the published index at `local` to `url`, manifest last; returns what was sent."""
    from boto3.s3.transfer import TransferConfig
    bucket, prefix = split_url(url)
    client = s3_client()
    names = sorted(os.path.relpath(os.path.join(folder, name), local)
                   for folder, _, files in os.walk(local) for name in files)
    existing = remote_objects(url)
    if MANIFEST in existing:  # --overwrite was given (check_remote_out): hide the old index first
        client.delete_object(Bucket=bucket, Key=f'{prefix}/{MANIFEST}')
    config = TransferConfig(multipart_threshold=SINGLE_PUT_LIMIT, use_threads=False)

    def unchanged(name: str) -> bool:
        there = existing.get(name)
        path = os.path.join(local, name)
        return bool(there) and there['Size'] == os.path.getsize(path) and there['ETag'].strip('"') == _md5(path)

    todo = [name for name in names if name != MANIFEST and not unchanged(name)]
    with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool, \
            tqdm(total=len(todo), desc='upload', unit='file', disable=not progress) as bar:
        futures = [pool.submit(client.upload_file, os.path.join(local, name), bucket, f'{prefix}/{name}',
                               Config=config) for name in todo]
        for future in concurrent.futures.as_completed(futures):
            future.result()
            bar.update()
    stale = sorted(set(existing) - set(names))
    for start in range(0, len(stale), 1000):
        client.delete_objects(Bucket=bucket, Delete={'Objects': [{'Key': f'{prefix}/{name}'}
                                                                 for name in stale[start:start + 1000]]})
    client.upload_file(os.path.join(local, MANIFEST), bucket, f'{prefix}/{MANIFEST}', Config=config)
    summary = {'files': len(names), 'uploaded': len(todo) + 1, 'already_there': len(names) - len(todo) - 1,
               'removed': len(stale)}
    log.info('published %s: %d files (%d uploaded, %d already there), %d stale objects removed', url,
             summary['files'], summary['uploaded'], summary['already_there'], summary['removed'])
    return summary


def download_index(url: str, local: str, progress: bool = True) -> None:
    """Every object of the index at `url` into the new folder `local` (for `add`, which needs it all)."""
    bucket, prefix = split_url(url)
    objects = remote_objects(url)
    if MANIFEST not in objects:
        raise ValueError(f'{url}: no index there (no {MANIFEST}); publish one with `cis-stream index ... --out {url}`')
    client = s3_client()
    for name in objects:
        os.makedirs(os.path.dirname(os.path.join(local, name)), exist_ok=True)
    with concurrent.futures.ThreadPoolExecutor(UPLOAD_THREADS) as pool, \
            tqdm(total=len(objects), desc='download', unit='file', disable=not progress) as bar:
        futures = [pool.submit(client.download_file, bucket, f'{prefix}/{name}', os.path.join(local, name))
                   for name in objects]
        for future in concurrent.futures.as_completed(futures):
            future.result()
            bar.update()
