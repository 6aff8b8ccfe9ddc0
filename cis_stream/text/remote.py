"""Inputs in an object store (`s3://bucket/prefix/...`): listed, then fetched one at a time.

A team's corpus usually lives in a bucket. An `s3://` input names one object, a prefix (every
object under `prefix/`), or a glob over keys (`s3://bucket/crawl/*.parquet`); an MDS dataset is the
prefix holding its `index.json`. The listing gives each object's size and ETag, which the index
records with its URL. Reading fetches an object into a local cache (`CIS_STREAM_INPUT_CACHE`, by
default `$TMPDIR/cis_stream_inputs`), with retries, reads it like a local file, and deletes it: the
cache holds one input per process at a time, so a corpus far larger than the disk can be indexed.

Why boto3 here, when Streaming's downloaders fetch from many stores: they fetch single objects but
cannot list a prefix, which every input spec needs; boto3 is what Streaming uses for S3 itself
(and comes with it). The endpoint is `S3_ENDPOINT_URL` if set, as for Streaming; credentials come
from the usual AWS environment and files, and no URL, message or record ever holds them.
"""

from __future__ import annotations

import fnmatch
import glob
import os
import re
import shutil
import tempfile
import time
from dataclasses import dataclass
from typing import Callable, Iterator

from cis_stream.text.records import Document, InputError, Record, Reject

SCHEME = re.compile(r'^([a-z][a-z0-9+.-]*)://')
FETCH_ATTEMPTS = 3
MDS_INDEX = 'index.json'


def is_remote(spec: str) -> bool:
    return bool(SCHEME.match(spec))


@dataclass(frozen=True)
class RemoteInput:
    """An object (or an MDS dataset: every object under a prefix) to read, from its listing."""
    url: str
    size: int
    etag: str
    mds: bool = False


# Everything listed in this process, by URL: sizes and ETags without another request.
_LISTED: dict[str, RemoteInput] = {}


def _split(url: str) -> tuple[str, str]:
    scheme = SCHEME.match(url)
    if not scheme or scheme.group(1) != 's3':
        raise InputError(f'{url}: only s3:// object-store inputs are read (S3 and S3-compatible stores; set '
                         f'S3_ENDPOINT_URL for one that is not AWS); copy other stores\' files to S3 or to disk')
    bucket, _, key = url[len('s3://'):].partition('/')
    if not bucket:
        raise InputError(f'{url}: no bucket in the URL (s3://BUCKET/KEY)')
    return bucket, key


def s3_client():
    """A boto3 S3 client for S3_ENDPOINT_URL if set (as Streaming reads it), else AWS."""
    import boto3
    return boto3.client('s3', endpoint_url=os.environ.get('S3_ENDPOINT_URL') or None)


def _store_error(url: str, err: Exception) -> InputError:
    """What a failed request means for the user, without credentials (botocore's messages hold none)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError
    if isinstance(err, NoCredentialsError):
        return InputError(f'{url}: no credentials for the object store: set AWS_ACCESS_KEY_ID and '
                          f'AWS_SECRET_ACCESS_KEY (or AWS_PROFILE) in the environment')
    if isinstance(err, EndpointConnectionError):
        return InputError(f'{url}: the object store cannot be reached ({err}): check the network and '
                          f'S3_ENDPOINT_URL')
    if isinstance(err, ClientError):
        code = err.response.get('Error', {}).get('Code', '')
        if code == 'NoSuchBucket':
            return InputError(f'{url}: no such bucket')
        if code in ('AccessDenied', 'InvalidAccessKeyId', 'SignatureDoesNotMatch', '403'):
            return InputError(f'{url}: access denied ({code}): check the credentials and the bucket policy')
        return InputError(f'{url}: the object store refused the request ({code}: {err})')
    return InputError(f'{url}: {type(err).__name__}: {err}')


def _list(bucket: str, prefix: str) -> list[dict]:
    pages = s3_client().get_paginator('list_objects_v2').paginate(Bucket=bucket, Prefix=prefix)
    return [obj for page in pages for obj in page.get('Contents', [])]


def list_remote(spec: str, is_input: Callable[[str], bool]) -> tuple[list[RemoteInput], list[str]]:
    """(the inputs `spec` names, the URLs under it that are not inputs); raises InputError."""
    bucket, key = _split(spec)
    try:
        if glob.has_magic(key):
            prefix = key[:min(key.index(c) for c in '*?[' if c in key)]
            objects = [o for o in _list(bucket, prefix) if fnmatch.fnmatchcase(o['Key'], key)]
        else:
            exact = [o for o in _list(bucket, key) if o['Key'] == key]
            objects = exact or _list(bucket, key.rstrip('/') + '/' if key else '')
    except Exception as err:  # botocore's errors: made into a message that names the URL
        raise _store_error(spec, err) from None
    if not objects:
        raise InputError(f'{spec}: no such object, and no object under it')
    datasets = sorted({o['Key'][:-len(MDS_INDEX)] for o in objects if o['Key'].rsplit('/', 1)[-1] == MDS_INDEX})
    found, other = [], []
    for prefix in datasets:
        inside = [o for o in objects if o['Key'].startswith(prefix)]
        found.append(RemoteInput(f's3://{bucket}/{prefix.rstrip("/")}', sum(o['Size'] for o in inside),
                                 next(o['ETag'] for o in inside if o['Key'] == prefix + MDS_INDEX).strip('"'),
                                 mds=True))
    for obj in objects:
        if any(obj['Key'].startswith(prefix) for prefix in datasets):
            continue
        url = f's3://{bucket}/{obj["Key"]}'
        if is_input(obj['Key']):
            found.append(RemoteInput(url, obj['Size'], obj['ETag'].strip('"')))
        elif not obj['Key'].endswith('/'):
            other.append(url)
    _LISTED.update((item.url, item) for item in found)
    return found, other


def listed(url: str) -> RemoteInput:
    """The listing of an input URL (listed now if this process has not yet)."""
    if url not in _LISTED:
        list_remote(url, lambda key: True)
    return _LISTED[url]


def cache_root() -> str:
    return os.environ.get('CIS_STREAM_INPUT_CACHE') or os.path.join(tempfile.gettempdir(), 'cis_stream_inputs')


def fetch(url: str, attempts: int = FETCH_ATTEMPTS) -> str:
    """Download `url` (an object, or every object of an MDS dataset) into a fresh cache folder, with
    retries; returns its local path. The caller removes the folder (`release`)."""
    from botocore.exceptions import NoCredentialsError
    item = listed(url)
    bucket, key = _split(url)
    os.makedirs(cache_root(), exist_ok=True)
    folder = tempfile.mkdtemp(dir=cache_root(), prefix='input-')
    try:
        keys = [o['Key'] for o in _list(bucket, key.rstrip('/') + '/')] if item.mds else [key]
    except Exception as err:  # botocore's errors: made into a message that names the URL
        shutil.rmtree(folder, ignore_errors=True)
        raise _store_error(url, err) from None
    base = key.rstrip('/') + '/' if item.mds else key.rsplit('/', 1)[0] + '/'
    for name in keys:
        local = os.path.join(folder, name[len(base):] if name.startswith(base) else os.path.basename(name))
        os.makedirs(os.path.dirname(local), exist_ok=True)
        for attempt in range(1, attempts + 1):
            try:
                s3_client().download_file(bucket, name, local)
                break
            except NoCredentialsError as err:
                shutil.rmtree(folder, ignore_errors=True)
                raise _store_error(url, err) from None
            except Exception as err:  # a dropped connection, a timeout, a 5xx: try again, then say so
                if attempt == attempts:
                    shutil.rmtree(folder, ignore_errors=True)
                    raise InputError(f's3://{bucket}/{name}: cannot be fetched after {attempts} attempts '
                                     f'({type(err).__name__}: {err}); check that the store is reachable, then run '
                                     f'the same command again (finished parts are kept)') from None
                time.sleep(min(2 ** attempt, 10))
    return folder if item.mds else local


def release(path: str) -> None:
    """Remove a fetched input's cache folder."""
    folder = path if os.path.isdir(path) else os.path.dirname(path)
    shutil.rmtree(folder, ignore_errors=True)


def read_remote(url: str, read_local: Callable[[str], Iterator[Record]]) -> Iterator[Record]:
    """Fetch `url`, read it with `read_local`, and give every record the URL as its path."""
    local = fetch(url)
    try:
        for item in read_local(local):
            line = item.line
            if isinstance(item, Document):
                yield Document(f'{url}:{line}' if item.doc_id != item.path else url, url, line, item.text)
            else:
                yield Reject(url, line, item.reason.replace(local, url))
    finally:
        release(local)
