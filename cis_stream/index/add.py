"""`cis-stream add`: grow a published index with new documents, without re-clustering.

New documents go through the index's own tokenizer, embedder and (frozen) tree, exactly as
`CISIndex.place` does. Each leaf that receives windows gets its new samples in a sub-directory
`add-<version>/` and a new index.json listing its old shards and the new ones (the layout
Streaming's `merge_index` gives; we join the two lists ourselves because merge_index only merges
sibling sub-directories). Old shard files are hard-linked, never rewritten, so the old version
stays intact until the new one is published in its place; the new version has a new
fingerprint, and weights made for the old one are refused with the command to recompute them.

An index built with `--exclude` stays decontaminated: new documents are screened against the same
eval files, re-read from the paths in the manifest and checked against their sha256. When they
are gone or changed, add refuses, unless told not to screen; the new version then no longer
claims decontamination (its manifest's `decontamination` is null, the old record kept in `history`).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time

import numpy as np

from cis_stream.format.files import replacing
from cis_stream.format.layout import CLUSTERS_DIR, REJECTS_FILE, leaf_dir_name, staging_dir
from cis_stream.format.leaves import join_leaf_index, write_leaf
from cis_stream.format.manifest import add_node_totals, finish_manifest
from cis_stream.format.publish import check_apart, link_tree, lock_staging, publish
from cis_stream.format.reader import CISIndex
from cis_stream.format.store import check_remote_out, default_staging, download_index, upload_index
from cis_stream.index.options import IndexOptions
from cis_stream.index.parts import (
    HASHES_FILE,
    NODES_FILE,
    PartRecord,
    assign_part,
    embed_part,
    merged_reasons,
    part_counts,
    part_totals,
    plan_parts,
    read_part,
    rows_by_leaf,
)
from cis_stream.index.spool import WindowSpool
from cis_stream.index.work import WORK_DIR, part_dir
from cis_stream.text import decontam
from cis_stream.text.duplicates import count_duplicates
from cis_stream.text.inputs import input_bytes
from cis_stream.text.readers import MAX_DOC_BYTES, InputError, expand_inputs
from cis_stream.text.remote import is_remote

log = logging.getLogger(__name__)


def add_to_index(index_dir: str, inputs: list[str], out: str | None = None, *, strict: bool = False,
                 text_field: str | None = None, decontaminate: bool = True, progress: bool = True,
                 staging: str | None = None) -> CISIndex:
    """Publish a new version of the index at `index_dir` (or at `out`) that also holds `inputs`.

    With `decontaminate=False`, new documents are not screened against the index's eval files
    (module docstring). One build or add of `out` runs at a time (staging.py); the index is opened
    under that lock, so two adds in place never both start from the same version. An `s3://`
    index is fetched whole into `staging`, grown there and uploaded, manifest last (format/store.py).
    """
    if is_remote(index_dir) or (out is not None and is_remote(out)):
        return _add_remote(index_dir, inputs, out or index_dir, staging, strict=strict, text_field=text_field,
                           decontaminate=decontaminate, progress=progress)
    root, out = os.path.abspath(index_dir), os.path.abspath(out or index_dir)
    check_apart(out, inputs)
    with lock_staging(out):
        old = CISIndex.open(index_dir)
        files = expand_inputs(inputs, strict)
        known = {os.path.abspath(s['path']) for s in old.manifest['inputs']}
        again = [path for path in files if os.path.abspath(path) in known]
        if again:
            raise InputError(f'{again[0]} is already in {old.root} ({len(again)} such file(s)); adding it again '
                             f'would duplicate its documents')
        if out != root and os.path.exists(out):
            raise FileExistsError(f'{out} already exists; choose another --out')
        if out.startswith(root + os.sep):
            raise ValueError(f'--out {out}: inside the index {root}; choose a path outside it')
        eval_set = _eval_set(old, decontaminate)
        staging = staging_dir(out)
        if os.path.lexists(staging):  # left by an add that was killed
            shutil.rmtree(staging)
        try:
            link_tree(old.root, staging)
            manifest = _grow(old, files, staging, strict, text_field, eval_set, progress)
            publish(staging, out)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
    return CISIndex(out, manifest)


def _add_remote(index_url: str, inputs: list[str], out_url: str, staging: str | None, **grow) -> CISIndex:
    """Fetch the index, grow it locally, upload the new version: in place, or to a new URL."""
    if not is_remote(index_url) or not is_remote(out_url):
        raise ValueError(f'--index {index_url} and --out {out_url}: grow an s3:// index into an s3:// --out (or '
                         f'a local one into a local one)')
    check_remote_out(out_url, overwrite=out_url == index_url)  # in place replaces; elsewhere must be free
    local = os.path.abspath(staging or default_staging(out_url, '.add'))
    if os.path.exists(local):
        raise FileExistsError(f'--staging {local} exists: remove it (a previous add left it), or choose another')
    try:
        download_index(index_url, os.path.join(local, 'old'), grow['progress'])
        grown = add_to_index(os.path.join(local, 'old'), inputs, os.path.join(local, 'new'), **grow)
        upload_index(grown.root, out_url, grow['progress'])
    finally:
        shutil.rmtree(os.path.join(local, 'old'), ignore_errors=True)
    return grown


def _eval_set(old: CISIndex, decontaminate: bool) -> decontam.EvalSet | None:
    """The eval set the index was decontaminated against, re-read from its unchanged files."""
    record = old.manifest.get('decontamination')
    if not record or not decontaminate:
        return None
    paths = [spec['path'] for spec in record['files']]
    missing = [path for path in paths if not os.path.exists(path)]
    text_field = old.manifest['options']['text_field']  # the eval files were read like the index's inputs
    eval_set = None if missing else decontam.load_eval_set(paths, record['ngram'], text_field)
    now = {spec['path']: spec['sha256'] for spec in eval_set.files} if eval_set else {}
    changed = [spec['path'] for spec in record['files'] if spec['path'] in now and now[spec['path']] != spec['sha256']]
    if missing or changed:
        problem = (f'{missing[0]} is missing' if missing else f'{changed[0]} has changed (its sha256 is not the one '
                   f'recorded)') + f' ({len(missing) + len(changed)} of {len(paths)} eval file(s))'
        raise InputError(f'{old.root} is decontaminated against eval files that add must screen the new documents '
                         f'against too, but {problem}. Put the eval files back at the paths in its manifest '
                         f'(decontamination.files), or pass --no-decontaminate to add without screening: the new '
                         f'version then no longer claims to be decontaminated')
    return eval_set


def _grow(old: CISIndex, files, staging, strict, text_field, eval_set, progress) -> dict:
    started = time.perf_counter()
    manifest = json.loads(json.dumps(old.manifest))
    opts = manifest['options']
    options = IndexOptions(window=opts['window'], text_field=text_field or opts['text_field'],
                           max_doc_bytes=opts.get('max_doc_bytes', MAX_DOC_BYTES))
    tokenizer, embedder, tree = old.tokenizer, old.embedder, old.tree
    work = os.path.join(staging, WORK_DIR)
    version = len(manifest.get('history', [])) + 1
    parts = plan_parts([input_bytes(path) for path in files])
    records, spools, nodes = [], [], []
    for number, part in enumerate(parts):
        directory = part_dir(work, number)
        records.append(read_part([files[i] for i in part], directory, options, tokenizer, strict, eval_set))
        embed_part(directory, embedder)
        assign_part(directory, tree)
        spools.append(WindowSpool.open(directory))
        nodes.append(np.load(os.path.join(directory, NODES_FILE)))
    added_inputs = [stats for record in records for stats in record.inputs]
    if sum(record.windows for record in records) == 0:
        rejected = sum(s['rejected'] for s in added_inputs)
        excluded = sum(s['excluded'] for s in added_inputs)
        raise InputError(f'no document could be indexed from {len(files)} file(s): {rejected} rejected '
                         f'{merged_reasons(record.reasons for record in records)}, {excluded} excluded as eval text')

    by_leaf: dict[int, list] = {}  # leaf → [(spool, rows)], parts in input order
    for spool, part_nodes in zip(spools, nodes):
        for leaf, rows in rows_by_leaf(part_nodes[:, -1]):
            by_leaf.setdefault(leaf, []).append((spool, rows))
    grown = sorted(by_leaf)
    packed = {}
    for leaf in grown:
        sources = by_leaf[leaf]
        leaf_dir = os.path.join(staging, CLUSTERS_DIR, leaf_dir_name(leaf))
        packed[int(leaf)] = write_leaf(os.path.join(leaf_dir, f'add-{version}'), sources, opts['seq_len'], tokenizer)
        join_leaf_index(leaf_dir, f'add-{version}')

    counts = sum(part_counts(n, spool, tree.sizes) for n, spool in zip(nodes, spools))
    add_node_totals(manifest['tree']['levels'], tree, counts, packed)
    _add_totals(manifest['totals'], records, packed, opts['seq_len'])
    # Among the added documents only: the old version keeps no per-document hashes.
    manifest['totals']['duplicate_documents'] = manifest['totals'].get('duplicate_documents', 0) + count_duplicates(
        np.concatenate([np.load(os.path.join(part_dir(work, n), HASHES_FILE)) for n in range(len(parts))]))
    _add_rejects(manifest, staging, work, len(parts), records)
    step = {'fingerprint': old.fingerprint, 'added_inputs': [s['path'] for s in added_inputs],
            'added_documents': sum(s['indexed'] for s in added_inputs),
            'excluded_documents': sum(s['excluded'] for s in added_inputs),
            'grown_leaves': len(grown)}
    if eval_set:
        _append_logs(staging, work, len(parts), decontam.EXCLUDED_FILE)
        manifest['decontamination'] = decontam.record(
            eval_set, [old.manifest['decontamination']] + [record.decontamination for record in records])
    elif manifest.get('decontamination'):
        step['decontamination_dropped'] = manifest['decontamination']
        manifest['decontamination'] = None
        log.warning('added without screening against the eval files (--no-decontaminate): the new version no '
                    'longer claims to be decontaminated (its earlier record is kept in the manifest\'s history)')
    manifest['history'] = manifest.get('history', []) + [step]
    manifest['inputs'] += added_inputs
    manifest['timings'] = {'add': round(time.perf_counter() - started, 3)}
    shutil.rmtree(work)
    return finish_manifest(manifest, staging, old.num_leaves)


def _add_totals(totals: dict, records: list[PartRecord], packed: dict, seq_len: int) -> None:
    """Add what the new parts hold to the index's totals."""
    screened = [record.decontamination for record in records if record.decontamination]
    added = part_totals(records, list(packed.values()), seq_len) | {
        'windows_excluded': sum(d['windows_excluded'] for d in screened),
        'tokens_excluded': sum(d['tokens_excluded'] for d in screened)}
    for key, value in added.items():
        totals[key] = totals.get(key, 0) + value  # an index older than --exclude has no *_excluded


def _append_logs(staging: str, work: str, num_parts: int, name: str) -> None:
    """A new copy of the log `name` (the old one is hard-linked), followed by the parts' logs."""
    path = os.path.join(staging, name)
    with replacing(path) as tmp, open(tmp, 'wb') as joined:
        for source in [path] + [os.path.join(part_dir(work, number), name) for number in range(num_parts)]:
            with open(source, 'rb') as handle:
                shutil.copyfileobj(handle, joined)


def _add_rejects(manifest: dict, staging: str, work: str, num_parts: int, records: list[PartRecord]) -> None:
    """Append the new rejects to the rejects log, and count them by reason."""
    _append_logs(staging, work, num_parts, REJECTS_FILE)
    manifest['rejects']['by_reason'] = merged_reasons([manifest['rejects']['by_reason']] + [r.reasons for r in records])
    manifest['rejects']['count'] = manifest['totals']['documents_rejected']
    if any(record.reasons for record in records):
        log.warning('some added records were skipped; each is listed with file, line and reason in %s', REJECTS_FILE)


