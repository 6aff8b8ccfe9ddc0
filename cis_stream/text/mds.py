"""MDS input: an existing Streaming dataset directory (its `index.json` and shards) read as documents.

A Composer team's corpus is often already MDS. A `str` column (`--text-field`) is read as one
document per sample. A token column (`ndarray` of integers, as llm-foundry's `convert_dataset_hf`
writes `tokens`) is decoded to text with the index tokenizer, and only when the user named that
tokenizer (`--tokenizer`): ids decoded by another tokenizer would be nonsense. Pre-packed token
samples are not whole documents (one sample may hold the end of one document and the start of the
next), so each sample becomes one document; windows never cross a sample boundary.

Shards are read through Streaming's own classes: `reader_from_json` parses each shard entry and
refuses unsafe (`pkl`) columns, Streaming's hashing and compression check and unpack the shard
file, and its `decode_sample` decodes each sample. Nothing is unpickled. Where Streaming would open
the shard file once per sample (`get_sample_data`), the shard is read whole and the sample spans are
taken from the MDS offsets table, which is what that method reads (shards are 64 MB by default).
"""

from __future__ import annotations

import hashlib
import json
import os
from typing import Iterator

import numpy as np

from cis_stream.format.files import sha256_file
from cis_stream.text.records import Record, Reject, checked_text

MDS_INDEX = 'index.json'
_INT_ARRAYS = ('ndarray:uint8', 'ndarray:uint16', 'ndarray:uint32', 'ndarray:uint64', 'ndarray:int8',
               'ndarray:int16', 'ndarray:int32', 'ndarray:int64')


def is_mds_dir(path: str) -> bool:
    """A directory holding a Streaming `index.json` (version 2, with a list of shards)."""
    index = os.path.join(path, MDS_INDEX)
    if not os.path.isfile(index):
        return False
    try:
        with open(index, encoding='utf-8') as handle:
            obj = json.load(handle)
    except (OSError, UnicodeDecodeError, json.JSONDecodeError):
        return False
    return isinstance(obj, dict) and obj.get('version') == 2 and isinstance(obj.get('shards'), list)


def _shard_files(path: str) -> list[str]:
    """The shard files an MDS dataset's index names (compressed where they are), inside `path`."""
    with open(os.path.join(path, MDS_INDEX), encoding='utf-8') as handle:
        shards = json.load(handle)['shards']
    files = []
    for shard in shards:
        info = shard.get('zip_data') or shard.get('raw_data') or {}
        files.append(os.path.join(path, str(info.get('basename', ''))))
    return files


def mds_bytes(path: str) -> int:
    """The dataset's size: its index and every shard file that exists."""
    return os.path.getsize(os.path.join(path, MDS_INDEX)) + sum(
        os.path.getsize(f) for f in _shard_files(path) if os.path.isfile(f))


def mds_sha256(path: str) -> str:
    """One sha256 over the sha256s of the index and every shard file, in index order."""
    digest = hashlib.sha256()
    for name in [os.path.join(path, MDS_INDEX)] + _shard_files(path):
        digest.update(sha256_file(name).encode())
    return digest.hexdigest()


def _column(reader, text_field: str, tokenizer) -> tuple[int, bool] | str:
    """(column number, holds token ids) of `text_field` in a shard, or why it cannot be read."""
    names, encodings = reader.column_names, reader.column_encodings
    listed = ', '.join(f'{n} ({e})' for n, e in zip(names, encodings))
    if text_field not in names:
        return f'no column {text_field!r}; the dataset has {listed}; choose one with --text-field'
    column = names.index(text_field)
    encoding = encodings[column]
    if encoding == 'str':
        return column, False
    if encoding in _INT_ARRAYS:
        if tokenizer is None:
            return (f'column {text_field!r} holds token ids ({encoding}): they are decoded to text only with the '
                    f'tokenizer that made them, so name it with --tokenizer (its tokenizer.json)')
        return column, True
    return f'column {text_field!r} is {encoding}, neither text (str) nor token ids (ndarray of integers)'


def _shard_bytes(path: str, reader) -> bytes | str:
    """The shard's decompressed bytes, checked against its hashes; or why they cannot be had."""
    from streaming.base.compression import decompress
    from streaming.base.hashing import get_hash, is_hash
    packed = reader.zip_data or reader.raw_data
    name = os.path.normpath(os.path.join(path, packed.basename))
    if not name.startswith(os.path.abspath(path) + os.sep):
        return f'shard file {packed.basename!r} lies outside the dataset directory: never followed'
    try:
        with open(name, 'rb') as handle:
            data = handle.read()
    except OSError as err:
        return f'shard file {packed.basename} cannot be read ({err.strerror or err})'
    for algo, expected in (packed.hashes or {}).items():
        if is_hash(algo) and get_hash(algo, data) != expected:
            return f'shard file {packed.basename} does not match its {algo} hash in {MDS_INDEX} (corrupt or truncated)'
    if reader.zip_data:
        try:
            data = decompress(reader.compression, data)
        except Exception as err:  # the codecs raise their own error types
            return f'shard file {packed.basename} cannot be decompressed ({type(err).__name__}: {err})'
    return data


def read_mds(path: str, text_field: str, max_bytes: int, tokenizer=None) -> Iterator[Record]:
    """Yield the documents and rejects of one MDS dataset; `line` is the sample number (1-based).

    A shard that cannot be used (unsafe column, wrong column, bad hash, unreadable) is one reject
    naming the shard, its sample count and why, and the next shard is read.
    """
    from streaming.base.format import reader_from_json
    path = os.path.abspath(path)
    try:
        with open(os.path.join(path, MDS_INDEX), encoding='utf-8') as handle:
            shards = json.load(handle)['shards']
    except (OSError, UnicodeDecodeError, json.JSONDecodeError, KeyError, TypeError) as err:
        yield Reject(path, 0, f'{MDS_INDEX} cannot be read as a Streaming index ({err}): the dataset is skipped')
        return
    number = 0
    for shard_no, obj in enumerate(shards):
        samples = obj.get('samples', 0) if isinstance(obj, dict) else 0
        try:
            reader = reader_from_json(path, None, obj)
            reader.validate(allow_unsafe_types=False)
        except Exception as err:  # Streaming raises ValueError, KeyError or TypeError on a bad entry
            detail = str(err).split('. To proceed anyway')[0]  # Streaming's pickle override is not ours
            if 'unsafe type' in detail:
                detail += ' (pickled values run code when loaded, so cis_stream never unpickles: write the text as str)'
            yield Reject(path, number + 1, f'shard {shard_no} ({samples:,} samples) skipped: {detail}')
            number += samples
            continue
        column = _column(reader, text_field, tokenizer)
        data = column if isinstance(column, str) else _shard_bytes(path, reader)
        if isinstance(data, str):
            yield Reject(path, number + 1, f'shard {shard_no} ({reader.samples:,} samples) skipped: {data}')
            number += reader.samples
            continue
        index, tokens = column
        ends = np.frombuffer(data, np.uint32, count=reader.samples + 1, offset=4)
        for i in range(reader.samples):
            number += 1
            where = f'sample {number:,} (shard {shard_no}, sample {i})'
            try:
                value = reader.decode_sample(data[ends[i]:ends[i + 1]])[text_field]
                if tokens:
                    value = tokenizer.tokenizer.decode(np.asarray(value, np.int64).tolist(), skip_special_tokens=True)
            except Exception as err:  # Streaming's decoders and the tokenizer raise what their codec raises
                yield Reject(path, number, f'{where}: cannot be decoded ({type(err).__name__}: {err})')
                continue
            yield checked_text(path, number, where, value, max_bytes)
