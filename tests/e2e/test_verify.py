"""Shard integrity after the first read (issue 12, items 3 and 7): decompressed shards are checked
at open when changed since their last verification, every sample read is checked for its length
and vocabulary range, a decoder failure names the sample, `cis-stream verify` hashes every file,
and an index Streaming cannot unpack shards into is reported as such, not as damage."""

from __future__ import annotations

import errno
import glob
import os
import shutil

import numpy as np
import pytest
import streaming.base.stream

import cis_stream.format.verify
from cis_stream import cli
from cis_stream.dataset import ClusteredImportanceDataset, DamagedLeafError, UnwritableIndexError
from cis_stream.format.verify import RECORD_SUFFIX

COMMON = dict(batch_size=8, shuffle=False, num_canonical_nodes=1)
LEAF = 5


def _fresh_copy(index, dst) -> str:
    """A copy of an index with its shards only in their published, compressed form."""
    shutil.copytree(index.root, dst, ignore=lambda _, names: [n for n in names if n.endswith(('.mds', RECORD_SUFFIX))])
    return str(dst)


def _read_once(root: str) -> None:
    """Read every leaf once, as a first training run does: Streaming unpacks every shard."""
    for _ in ClusteredImportanceDataset(root, None, **COMMON):
        pass


def _raw_shard(root: str, leaf: int = LEAF) -> str:
    return os.path.join(root, 'clusters', f'{leaf:05d}', 'shard.00000.mds')


def _sample_range(path: str, sample: int) -> tuple[int, int]:
    """Byte range of one sample in a decompressed MDS shard: [count][offsets][samples...]."""
    with open(path, 'rb') as handle:
        count = int(np.frombuffer(handle.read(4), np.uint32)[0])
        offsets = np.frombuffer(handle.read(4 * (count + 1)), np.uint32)
    return int(offsets[sample]), int(offsets[sample + 1])


def _overwrite(path: str, at: int, data: bytes) -> None:
    with open(path, 'r+b') as handle:
        handle.seek(at)
        handle.write(data)


def _sample_id(dataset, leaf: int, sample: int) -> int:
    """The global id of the `sample`-th sample of `leaf` (one shard per leaf in these indexes)."""
    stream = int(np.flatnonzero(dataset.stream_leaves == leaf)[0])
    return int(dataset.sample_offset_per_stream[stream]) + sample


def test_sixteen_flipped_bytes_in_a_decompressed_shard_are_caught_when_the_dataset_opens(mix_index, tmp_path):
    root = _fresh_copy(mix_index, tmp_path / 'index')
    _read_once(root)
    path = _raw_shard(root)
    stat = os.stat(path)
    _, end = _sample_range(path, 3)
    with open(path, 'rb') as handle:
        data = handle.read()
    _overwrite(path, end - 32, bytes(b ^ 0x01 for b in data[end - 32:end - 16]))  # tokens stay in the vocabulary
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))  # even with its mtime set back
    with pytest.raises(DamagedLeafError) as info:
        ClusteredImportanceDataset(root, None, **COMMON)
    message = str(info.value)
    assert message.startswith(f'leaf {LEAF:05d}: {path} does not match its xxh64 hash in index.json'), message
    assert 'Delete it' in message and f'cis-stream verify {root}' in message
    os.remove(path)  # the advice: the next read makes it again from the checked compressed shard
    dataset = ClusteredImportanceDataset(root, None, **COMMON)
    reference = ClusteredImportanceDataset(mix_index.root, None, **COMMON)
    sample = _sample_id(dataset, LEAF, 3)
    assert np.array_equal(dataset[sample]['input_ids'], reference[sample]['input_ids'])


def test_decompressed_shards_deleted_mid_epoch_are_made_again(mix_index, tmp_path):
    """Streaming's download thread skips the cache lock for shards this process has seen unpacked
    (ClusteredImportanceDataset.prepare_shard): a read that then misses the file must still make it
    again from the compressed shard, and the epoch go on unchanged."""
    root = _fresh_copy(mix_index, tmp_path / 'index')
    _read_once(root)
    reference = list(ClusteredImportanceDataset(mix_index.root, None, epoch_size=600, **COMMON))
    items = iter(ClusteredImportanceDataset(root, None, epoch_size=600, **COMMON))
    read = [next(items) for _ in range(300)]
    deleted = glob.glob(os.path.join(root, 'clusters', '*', 'shard.*.mds'))
    for path in deleted:
        os.remove(path)
    read += list(items)
    assert len(read) == len(reference) == 600
    assert all(np.array_equal(ours['input_ids'], theirs['input_ids']) for ours, theirs in zip(read, reference))
    assert 0 < sum(os.path.isfile(path) for path in deleted) < len(deleted)  # the rest of the epoch's, made again


def test_an_unchanged_verified_shard_is_not_hashed_again(mix_index, tmp_path):
    root = _fresh_copy(mix_index, tmp_path / 'index')
    _read_once(root)  # Streaming unpacked every shard from a hash-checked file: each is recorded as it is made
    assert os.path.isfile(_raw_shard(root) + RECORD_SUFFIX)
    dataset = ClusteredImportanceDataset(root, None, **COMMON)
    assert sum(stream.opened.hashed for stream in dataset.streams) == 0
    os.utime(_raw_shard(root))  # touched: hashed once, found sound, recorded again
    dataset = ClusteredImportanceDataset(root, None, **COMMON)
    assert sum(stream.opened.hashed for stream in dataset.streams) == 1
    dataset = ClusteredImportanceDataset(root, None, **COMMON)
    assert sum(stream.opened.hashed for stream in dataset.streams) == 0


@pytest.mark.parametrize('access', ['index', 'iterate'])
def test_tokens_outside_the_vocabulary_name_leaf_shard_and_sample(mix_index, tmp_path, access):
    """Damage after the dataset opened (so after any check at open): every sample read is checked."""
    root = _fresh_copy(mix_index, tmp_path / 'index')
    _read_once(root)
    dataset = ClusteredImportanceDataset(root, None, **COMMON)
    path = _raw_shard(root)
    _, end = _sample_range(path, 3)
    _overwrite(path, end - 32, b'\xff' * 16)  # 8 tokens of 65,535 in a 4,096-token vocabulary
    with pytest.raises(DamagedLeafError) as info:
        if access == 'index':
            dataset[_sample_id(dataset, LEAF, 3)]
        else:
            for _ in dataset:
                pass
    message = str(info.value)
    vocab = mix_index.manifest['options']['tokenizer']['vocab_size']
    assert message.startswith(f'leaf {LEAF:05d}: sample 3 of {path} holds 8 token(s) outside the vocabulary '
                              f'of {vocab:,} (first: 65535 at position 48)'), message
    assert 'the decompressed shard is damaged' in message and f'cis-stream verify {root}' in message


def test_a_sample_the_decoder_cannot_read_names_leaf_shard_and_sample(mix_index, tmp_path):
    root = _fresh_copy(mix_index, tmp_path / 'index')
    _read_once(root)
    dataset = ClusteredImportanceDataset(root, None, **COMMON)
    path = _raw_shard(root)
    begin, _ = _sample_range(path, 2)
    _overwrite(path, begin + 4, b'\xff' * 8)  # the sample's array header (ndim and shape)
    with pytest.raises(DamagedLeafError) as info:
        dataset[_sample_id(dataset, LEAF, 2)]
    message = str(info.value)
    assert message.startswith(f'leaf {LEAF:05d}: sample 2 of {path} cannot be decoded ('), message
    assert 'the decompressed shard is damaged' in message


def test_verify_checks_every_file_present_and_names_each_damaged_one(mix_index, tmp_path, capsys):
    root = _fresh_copy(mix_index, tmp_path / 'index')
    assert cli.main(['verify', root]) == 0
    out = capsys.readouterr().out
    leaves = mix_index.num_leaves
    assert f'{leaves:,} leaves, {leaves:,} shards; checked {leaves:,} compressed and 0 decompressed files' in out
    assert out.rstrip().endswith('no damage found')

    _read_once(root)
    raw, packed = _raw_shard(root, 2), _raw_shard(root, 7) + '.zstd'
    stat = os.stat(raw)
    middle = stat.st_size // 2
    with open(raw, 'rb') as handle:
        _overwrite(raw, middle, bytes([handle.read()[middle] ^ 0x10]))  # one bit
    os.utime(raw, ns=(stat.st_atime_ns, stat.st_mtime_ns))
    _overwrite(packed, 100, b'\x00\x01')
    os.remove(_raw_shard(root, 9) + '.zstd')
    assert cli.main(['verify', root]) == 1
    out = capsys.readouterr().out
    assert f'checked {leaves - 1:,} compressed and {leaves:,} decompressed files' in out  # one was deleted
    assert f'DAMAGED {raw}: does not match its xxh64 hash in index.json' in out
    assert f'DAMAGED {packed}: does not match its xxh64 hash in index.json' in out
    assert f'DAMAGED {_raw_shard(root, 9)}.zstd: missing' in out
    assert out.count('DAMAGED') == 3 and '3 damaged or missing files' in out
    assert 'delete it' in out and 'restore the index from a good copy' in out


def test_verify_checks_a_local_cache_without_asking_for_what_it_has_not_fetched(mix_index, tmp_path, capsys):
    cache = tmp_path / 'cache'
    dataset = ClusteredImportanceDataset(mix_index.root, None, local=str(cache), **COMMON)
    dataset[_sample_id(dataset, LEAF, 0)]  # fetches and unpacks one shard into the cache
    assert cli.main(['verify', str(cache)]) == 0
    out = capsys.readouterr().out
    assert 'checked 0 compressed and 1 decompressed files' in out
    assert f'{mix_index.num_leaves - 1:,} shards not in this cache yet' in out


def test_a_read_only_index_is_still_checked_at_every_open_and_says_so(mix_index, tmp_path, monkeypatch):
    root = _fresh_copy(mix_index, tmp_path / 'index')
    _read_once(root)
    for record in (tmp_path / 'index').rglob('*' + RECORD_SUFFIX):
        record.unlink()
    _deny_writes_under(monkeypatch, root, errno.EROFS, cis_stream.format.verify)
    for _ in range(2):
        with pytest.warns(UserWarning, match=f'{mix_index.num_leaves} decompressed shard.s. verified, but the '
                                             f'verification cannot be recorded .read-only index.'):
            dataset = ClusteredImportanceDataset(root, None, **COMMON)
    assert sum(stream.opened.hashed for stream in dataset.streams) == mix_index.num_leaves


def _deny_writes_under(monkeypatch, root: str, code: int, module=streaming.base.stream) -> None:
    """Make `module`'s writes under `root` fail as the OS fails them on a read-only directory.

    Tests run as root, where chmod stops no write, and a read-only bind mount needs privileges the
    test machine lacks; so the module's open() (Streaming unpacks shards with it) raises the OS's own error."""
    real_open = open

    def guarded_open(file, mode='r', *args, **kwargs):
        if any(flag in mode for flag in 'wax+') and os.path.abspath(file).startswith(root + os.sep):
            raise OSError(code, os.strerror(code), file)
        return real_open(file, mode, *args, **kwargs)
    monkeypatch.setattr(module, 'open', guarded_open, raising=False)


@pytest.mark.parametrize('code, what', [(errno.EACCES, 'is not writable'),
                                        (errno.EROFS, 'is on a read-only file system'),
                                        (errno.ENOSPC, 'has no room left')])
def test_an_index_streaming_cannot_unpack_into_is_not_reported_as_damaged(mix_index, tmp_path, monkeypatch,
                                                                          code, what):
    root = _fresh_copy(mix_index, tmp_path / 'index')
    _deny_writes_under(monkeypatch, root, code)
    dataset = ClusteredImportanceDataset(root, None, **COMMON)
    with pytest.raises(UnwritableIndexError) as info:
        dataset[_sample_id(dataset, LEAF, 0)]
    message = str(info.value)
    assert not isinstance(info.value, DamagedLeafError)
    assert message.startswith(f'leaf {LEAF:05d}: cannot unpack a shard: {root} {what} ({os.strerror(code)}: '
                              f'{_raw_shard(root)}.tmp)'), message
    assert 'The index is not damaged' in message and 'rebuild' not in message
    assert f"index={root!r}, local='/path/to/cache'" in message
    # The advice works: the same index read as a remote, with a writable cache elsewhere.
    cached = ClusteredImportanceDataset(root, None, local=str(tmp_path / 'cache'), **COMMON)
    sample = _sample_id(cached, LEAF, 0)
    assert len(cached[sample]['input_ids']) == mix_index.manifest['options']['seq_len']
