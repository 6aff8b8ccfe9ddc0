"""`cis-stream index ... --out s3://bucket/idx`: build locally, then publish with format/store.py.

A rerun after a killed upload finds the complete local build of the same request (input files and
options, recorded in its manifest) and uploads it again without rebuilding; objects already
uploaded are not sent twice. The build itself is `index/job.build_index`, passed in by it.
"""

from __future__ import annotations

import logging
import os
from typing import Callable

from cis_stream.format.layout import NotAnIndexError
from cis_stream.format.reader import CISIndex
from cis_stream.format.store import check_remote_out, default_staging, split_url, upload_index
from cis_stream.index.dist import Group
from cis_stream.index.options import IndexOptions, build_request
from cis_stream.text.readers import find_inputs

log = logging.getLogger(__name__)


def build_and_upload(build: Callable[..., CISIndex], inputs: list[str], url: str, options: IndexOptions,
                     staging: str | None, *, overwrite: bool, progress: bool, **build_kwargs) -> CISIndex:
    """Build into the local `staging` folder (or reuse the complete build of the same request there),
    then upload it to `url` from rank 0 while the other ranks wait; returns the local build."""
    split_url(url)  # a bad URL stops every rank here, before any of them waits for the others
    local = os.path.abspath(staging or default_staging(url))
    group = Group()
    try:
        if group.leader:
            check_remote_out(url, overwrite)
        group.barrier()
    finally:
        group.close()
    index = _same_build(local, inputs, options)
    if index is None:
        index = build(inputs, local, options, progress=progress, **build_kwargs)
    group = Group()
    try:
        if group.leader:
            summary = upload_index(local, url, progress)
            log.warning('published %s (%d files, %d uploaded); the local build stays in %s: remove it when done',
                        url, summary['files'], summary['uploaded'], local)
        group.barrier()
    finally:
        group.close()
    return index


def _same_build(local: str, inputs: list[str], options: IndexOptions) -> CISIndex | None:
    """The complete local build of these inputs and options at `local` (a rerun after a killed upload);
    None where there is none. A build of anything else there is refused, never replaced."""
    if not os.path.exists(local):
        return None
    try:
        index = CISIndex.open(local)
    except NotAnIndexError:
        raise FileExistsError(f'--staging {local} exists and is not a cis_stream index: choose another --staging, '
                              f'or remove it') from None
    if index.manifest.get('build', {}).get('request') != build_request(find_inputs(inputs).files, options):
        raise FileExistsError(f'--staging {local} holds the build of other inputs or options: remove it, or choose '
                              f'another --staging')
    log.warning('%s holds the complete build of these inputs and options: uploading it', local)
    return index
