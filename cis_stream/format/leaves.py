"""A leaf on disk: its windows packed into fixed-length MDS samples, its index.json, and the bundle of
every leaf's index.json that lets a remote index start with one download."""

from __future__ import annotations

import json
import os
import shutil

import numpy as np
import zstandard

from cis_stream.format.files import canonical_json, replacing, sha256_file
from cis_stream.format.layout import LEAF_INDEX, LEAF_INDEXES, NotAnIndexError, leaf_dir_name, leaf_index_name
from cis_stream.text.tokens import TokenizerHandle

# Windows packed per chunk.
PACK_CHUNK_WINDOWS = 1024


def pack_leaf(chunks, writer, seq_len: int, eos_id: int, dtype) -> dict:
    """Write one leaf's EOS-joined token stream as fixed seq_len samples; the tail is padded with EOS.

    Padding (rather than dropping) keeps every token and guarantees no leaf is empty; the pad
    tokens are counted per leaf in the manifest.
    """
    carry = np.zeros(0, dtype=np.int32)
    samples = 0
    for chunk in chunks:
        stream = np.concatenate([carry, chunk])
        full = len(stream) // seq_len
        for i in range(full):
            writer.write({'tokens': stream[i * seq_len:(i + 1) * seq_len].astype(dtype)})
        samples += full
        carry = stream[full * seq_len:]
    pad = (seq_len - len(carry)) % seq_len
    if len(carry):
        writer.write({'tokens': np.concatenate([carry, np.full(pad, eos_id, np.int32)]).astype(dtype)})
        samples += 1
    return {'samples': samples, 'pad_tokens': int(pad)}


def leaf_chunks(sources, eos_id: int):
    """A leaf's windows, EOS-joined, from (spool, rows) sources in order, a chunk at a time."""
    for spool, rows in sources:
        for start in range(0, len(rows), PACK_CHUNK_WINDOWS):
            yield spool.eos_joined_tokens(rows[start:start + PACK_CHUNK_WINDOWS], eos_id)


def write_leaf(out: str, sources, seq_len: int, tokenizer: TokenizerHandle) -> dict:
    """One MDS stream (`tokens` column, zstd, xxh64) holding a leaf's windows."""
    # Imported here, not above: Streaming's package import takes seconds (it loads torch, torchvision and
    # transformers), and the indexer imports it after reading, before its fits (index/job.py).
    from streaming import MDSWriter
    columns = {'tokens': tokenizer.token_dtype}
    dtype = np.dtype(columns['tokens'].split(':')[1])
    shutil.rmtree(out, ignore_errors=True)
    with MDSWriter(out=out, columns=columns, compression='zstd', hashes=['xxh64'], progress_bar=False) as writer:
        return pack_leaf(leaf_chunks(sources, tokenizer.eos_id), writer, seq_len, tokenizer.eos_id, dtype)


def write_leaf_indexes(root: str, num_leaves: int) -> None:
    """Bundle the leaves' index.json files into LEAF_INDEXES (at indexing time)."""
    bundle = {}
    for leaf in range(num_leaves):
        with open(os.path.join(root, leaf_index_name(leaf)), encoding='utf-8') as handle:
            bundle[leaf_dir_name(leaf)] = handle.read()
    with replacing(os.path.join(root, LEAF_INDEXES)) as tmp, open(tmp, 'wb') as handle:
        handle.write(zstandard.ZstdCompressor(level=10).compress(canonical_json(bundle)))


def read_leaf_indexes(root: str, manifest: dict) -> dict[str, str]:
    """Each leaf's index.json text from the bundle under `root` (remote start-up), after checking that
    the bundle is the manifest's (sha256) and names exactly its leaves. Their content is checked as
    the leaves' shard readers are made from them (`leaf_shard_readers`)."""
    bundle_path = os.path.join(root, LEAF_INDEXES)
    if sha256_file(bundle_path) != manifest['leaf_indexes_sha256']:
        raise NotAnIndexError(f'{bundle_path}: does not match the manifest (corrupt or from another '
                              f'index); delete the cache directory and retry')
    with open(bundle_path, 'rb') as handle:
        bundle = json.loads(zstandard.ZstdDecompressor().stream_reader(handle).read())
    names = [leaf_dir_name(leaf) for leaf in range(len(manifest['tree']['levels'][-1]['nodes']))]
    if not isinstance(bundle, dict) or sorted(bundle) != names or not all(isinstance(t, str) for t in bundle.values()):
        raise NotAnIndexError(f'{bundle_path}: does not hold exactly the leaves {names[0]}..{names[-1]} '
                              f'of the manifest; the index is damaged: rebuild it')
    return bundle


def leaf_shard_readers(local: str, index_text: str, allow_unsafe_types: bool) -> list:
    """Streaming's MDS shard readers for a leaf's index.json text, as `Stream.get_shards` makes them
    from the file, without the file (nothing to write or read per leaf) and without the deepcopy
    of each shard's entry in Streaming's `MDSReader.from_json`: together about 5 s of a
    16,384-leaf start-up (benchmarks/results/RESULTS.md, "Remote start-up")."""
    from streaming.base.format.base.reader import FileInfo
    from streaming.base.format.mds.reader import MDSReader
    obj = json.loads(index_text)
    if not isinstance(obj, dict) or obj.get('version') != 2 or not isinstance(obj.get('shards'), list):
        raise ValueError('not a Streaming index.json of version 2')
    readers = []
    for info in obj['shards']:
        if info.get('format') != 'mds' or info.get('version') != 2:
            raise ValueError(f"a shard of format {info.get('format')!r}, version {info.get('version')!r}: "
                             f"an index leaf holds MDS shards of version 2 only")
        args = {key: value for key, value in info.items() if key not in ('format', 'version')}
        for key in ('raw_data', 'zip_data'):
            args[key] = FileInfo(**args[key]) if args.get(key) else None
        reader = MDSReader(dirname=local, split=None, **args)
        reader.validate(allow_unsafe_types)
        readers.append(reader)
    return readers


def join_leaf_index(leaf_dir: str, subdir: str) -> None:
    """The leaf's index.json becomes its old shards followed by those in `subdir`."""
    with open(os.path.join(leaf_dir, LEAF_INDEX), encoding='utf-8') as handle:
        joined = json.load(handle)
    with open(os.path.join(leaf_dir, subdir, LEAF_INDEX), encoding='utf-8') as handle:
        added = json.load(handle)
    for shard in added['shards']:
        for key in ('raw_data', 'zip_data', 'raw_meta', 'zip_meta'):
            if shard.get(key):
                shard[key]['basename'] = f"{subdir}/{shard[key]['basename']}"
    joined['shards'] += added['shards']
    os.unlink(os.path.join(leaf_dir, subdir, LEAF_INDEX))
    with replacing(os.path.join(leaf_dir, LEAF_INDEX)) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(joined, handle, sort_keys=True)
