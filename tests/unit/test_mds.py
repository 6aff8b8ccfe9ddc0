"""MDS input: Streaming datasets written with Streaming's own MDSWriter from real Wikipedia summaries,
read as documents through Streaming's reader classes; token columns only with a named tokenizer; unsafe
(pkl) columns, wrong columns and damaged shards are counted rejects naming the shard, never a traceback."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from streaming import MDSWriter

from cis_stream.text.inputs import input_bytes
from cis_stream.text.readers import Document, InputError, Reject, find_inputs, read_file
from cis_stream.text.tokens import load_tokenizer

TEXTS = 150


@pytest.fixture(scope='module')
def texts(wiki_records) -> list[str]:
    return [r['text'] for r in wiki_records[:TEXTS]]


def _write(out, columns: dict, rows: list[dict], **options) -> str:
    with MDSWriter(out=str(out), columns=columns, **options) as writer:
        for row in rows:
            writer.write(row)
    return str(out)


@pytest.fixture
def text_dataset(tmp_path, texts) -> str:
    """Several zstd shards with xxh64 and sha1 hashes, a str text column beside an int id."""
    return _write(tmp_path / 'wiki_mds', {'id': 'int', 'text': 'str'},
                  [{'id': i, 'text': t} for i, t in enumerate(texts)],
                  compression='zstd', hashes=['sha1', 'xxh64'], size_limit=1 << 14)


def test_a_str_column_is_read_sample_by_sample_across_shards(text_dataset, texts):
    assert len([n for n in os.listdir(text_dataset) if n.endswith('.zstd')]) > 3
    docs = list(read_file(text_dataset))
    assert [d.text for d in docs] == texts
    assert [d.line for d in docs] == list(range(1, TEXTS + 1)) and docs[9].doc_id == f'{text_dataset}:10'
    shards = [os.path.join(text_dataset, n) for n in os.listdir(text_dataset) if n.endswith('.zstd')]
    assert input_bytes(text_dataset) == os.path.getsize(os.path.join(text_dataset, 'index.json')) + sum(
        os.path.getsize(s) for s in shards)


def test_a_dataset_is_one_input_found_by_its_directory_or_its_index(text_dataset, tmp_path):
    (tmp_path / 'notes.md').write_text('not an input')
    found = find_inputs([str(tmp_path)])
    assert found.files == [text_dataset]  # its shards are part of it, not skipped files
    assert [s['path'] for s in found.skipped] == [str(tmp_path / 'notes.md')]
    assert find_inputs([os.path.join(text_dataset, 'index.json')]).files == [text_dataset]
    os.remove(os.path.join(text_dataset, 'index.json'))
    with pytest.raises(InputError, match='holds no input files'):
        find_inputs([text_dataset])


def test_token_ids_are_decoded_only_with_a_named_tokenizer(tmp_path, texts):
    gpt2 = load_tokenizer(None)
    path = _write(tmp_path / 'tokens', {'tokens': 'ndarray:int32'},
                  [{'tokens': np.asarray(gpt2.tokenizer.encode(t).ids, np.int32)} for t in texts[:30]])
    (refused,) = list(read_file(path, 'tokens'))
    assert isinstance(refused, Reject)
    assert refused.reason == ("shard 0 (30 samples) skipped: column 'tokens' holds token ids (ndarray:int32): they are "
                              'decoded to text only with the tokenizer that made them, so name it with --tokenizer '
                              '(its tokenizer.json)')
    assert [d.text for d in read_file(path, 'tokens', tokenizer=gpt2)] == texts[:30]


def test_unsafe_and_unusable_columns_are_refused_per_shard(tmp_path, texts):
    pickled = _write(tmp_path / 'pickled', {'text': 'pkl'}, [{'text': t} for t in texts[:5]])
    (reject,) = list(read_file(pickled))
    assert 'unsafe type: pkl' in reject.reason and 'never unpickles' in reject.reason
    numbers = _write(tmp_path / 'numbers', {'text': 'int', 'body': 'str'}, [{'text': 1, 'body': t} for t in texts[:5]])
    (reject,) = list(read_file(numbers))
    assert reject.reason.endswith("column 'text' is int, neither text (str) nor token ids (ndarray of integers)")
    (reject,) = list(read_file(numbers, 'title'))
    assert "no column 'title'; the dataset has body (str), text (int)" in reject.reason
    assert [d.text for d in read_file(numbers, 'body')] == texts[:5]


def test_a_damaged_shard_is_one_reject_and_the_others_are_read(text_dataset, texts):
    starts = _shard_starts(text_dataset)
    first_of_shard_1, samples = starts[1] + 1, starts[2] - starts[1]
    shard = os.path.join(text_dataset, 'shard.00001.mds.zstd')
    data = bytearray(open(shard, 'rb').read())
    data[len(data) // 2] ^= 0xFF
    open(shard, 'wb').write(bytes(data))
    records = list(read_file(text_dataset))
    rejects = [r for r in records if isinstance(r, Reject)]
    assert [(r.line, r.reason) for r in rejects] == [
        (first_of_shard_1, f'shard 1 ({samples:,} samples) skipped: shard file shard.00001.mds.zstd does not match '
                           f'its sha1 hash in index.json (corrupt or truncated)')]
    assert [d.text for d in records if isinstance(d, Document)] == texts[:first_of_shard_1 - 1] + \
        texts[first_of_shard_1 - 1 + samples:]


def _shard_starts(path: str) -> list[int]:
    """The global sample number each shard starts at, and the total."""
    with open(os.path.join(path, 'index.json'), encoding='utf-8') as handle:
        return list(np.cumsum([0] + [s['samples'] for s in json.load(handle)['shards']]))
