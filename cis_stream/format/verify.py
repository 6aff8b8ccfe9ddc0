"""Integrity of shard files on disk, compressed and decompressed, against their leaf's index.json.

Streaming checks a compressed shard's xxh64 once, when it unpacks it, and then reads the
decompressed `shard.NNNNN.mds` for ever without looking again. Every leaf's index.json records
the size and xxh64 of both forms (MDSWriter hashes `raw_data` and `zip_data` alike), and the
index fingerprint covers those files, so both forms can be checked against the published index:

* `verify_index` (`cis-stream verify INDEX`) hashes every shard file present.
* At open, `check_decompressed` hashes only the decompressed files changed since they were last
  verified. A verification is recorded next to the file (`shard.NNNNN.mds.verified`: size, mtime,
  ctime, expected hash). Any write to the file moves its ctime, which no user can set back, so a
  file whose stat still matches its record is the file that was verified. A file that Streaming
  unpacks from a hash-checked compressed shard is recorded as it is made (`_LeafStream`).

Not covered: damage that leaves size, mtime and ctime alone (media faults, bit rot) until the next
`cis-stream verify`; between the two, every sample read is still checked for its length and
vocabulary range (dataset.py).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import xxhash

from cis_stream.format.files import replacing
from cis_stream.format.layout import LEAF_INDEXES, TREE_FILE, leaf_dir_name
from cis_stream.format.leaves import leaf_shard_readers, read_leaf_indexes
from cis_stream.format.reader import CISIndex
from cis_stream.format.validate import check_leaf_shards

RECORD_SUFFIX = '.verified'
HASH = 'xxh64'
BLOCK = 1 << 22


def file_problem(path: str, info) -> str | None:
    """What is wrong with `path` against its index.json entry `info` (size, then xxh64), or None."""
    size = os.path.getsize(path)
    if size != info.bytes:
        return f'{size:,} bytes, but index.json says {info.bytes:,} (truncated or overwritten)'
    digest = xxhash.xxh64()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(BLOCK), b''):
            digest.update(block)
    if digest.hexdigest() != info.hashes[HASH]:
        return f'does not match its {HASH} hash in index.json'
    return None


def _stamp(stat: os.stat_result, info) -> str:
    return f'{stat.st_size} {stat.st_mtime_ns} {stat.st_ctime_ns} {info.hashes[HASH]}'


def record(path: str, info, stat: os.stat_result | None = None) -> bool:
    """Note that `path` matched `info` when its stat was `stat` (taken before it was checked: a change
    while it was being hashed then fails to match the record). False where the record cannot be
    written (a read-only index: the file is then hashed again at every open)."""
    try:
        stamp = _stamp(stat or os.stat(path), info)
        with replacing(path + RECORD_SUFFIX) as temporary, open(temporary, 'w', encoding='ascii') as handle:
            handle.write(stamp)
        return True
    except OSError:
        return False


def _recorded(path: str, stat: os.stat_result, info) -> bool:
    try:
        with open(path + RECORD_SUFFIX, encoding='ascii') as handle:
            return handle.read() == _stamp(stat, info)
    except (OSError, UnicodeDecodeError):
        return False


@dataclass
class OpenCheck:
    """What `check_decompressed` did for one leaf."""
    hashed: int = 0             # decompressed files hashed (new or changed since their record)
    unrecorded: int = 0         # of those, verified but not recordable (read-only directory)
    damaged: tuple[str, str] | None = None   # (path, problem) of the first damaged file


def check_decompressed(local: str, shards: list) -> OpenCheck:
    """Hash each decompressed file of `shards` under `local` whose stat differs from its record."""
    result = OpenCheck()
    for shard in shards:
        for raw, _ in shard.file_pairs:
            path = os.path.join(local, raw.basename)
            try:
                stat = os.stat(path)
            except FileNotFoundError:
                continue  # not unpacked yet: Streaming checks the compressed file when it unpacks it
            if _recorded(path, stat, raw):
                continue
            result.hashed += 1
            problem = file_problem(path, raw)
            if problem:
                result.damaged = (path, problem)
                return result
            result.unrecorded += not record(path, raw, stat)
    return result


@dataclass
class Report:
    """`verify_index`'s findings: counts, and (path, problem) for every damaged or missing file."""
    root: str
    cache: bool
    leaves: int = 0
    shards: int = 0
    compressed: int = 0       # compressed files checked
    decompressed: int = 0     # decompressed files checked
    bytes: int = 0            # bytes checked
    not_present: int = 0      # shards with no file here (a cache: not fetched yet)
    problems: list[tuple[str, str]] = field(default_factory=list)

    def summary(self) -> str:
        checked = (f'{self.root}: {self.leaves:,} leaves, {self.shards:,} shards; checked {self.compressed:,} '
                   f'compressed and {self.decompressed:,} decompressed files ({self.bytes / 1e6:,.1f} MB) against '
                   f'the sizes and {HASH} hashes in their index.json')
        lines = [checked]
        if self.not_present:
            lines.append(f'{self.not_present:,} shards not in this cache yet (fetched and checked when first read)')
        lines += [f'DAMAGED {path}: {problem}' for path, problem in self.problems]
        if self.problems:
            lines.append(f'{len(self.problems):,} damaged or missing files. A damaged decompressed file '
                         f'(shard.NNNNN.mds) is a cache: delete it, and the next read makes it again from the '
                         f'compressed file after checking that one. A damaged or missing compressed file '
                         f'(.mds.zstd) or index.json: restore the index from a good copy or rebuild it with '
                         f'`cis-stream index ... --overwrite`.')
        else:
            lines.append('no damage found')
        return '\n'.join(lines)


def _leaf_shards(leaf_dir: str, token_column: str, samples: int, index_text: str | None) -> list:
    """The leaf's shards from its index.json (or, in a cache, the bundle's entry `index_text`, as the
    dataset reads it there), checked as the dataset checks them."""
    where = os.path.join(leaf_dir, 'index.json')
    if index_text is None:
        with open(where, encoding='utf-8') as handle:
            index_text = handle.read()
    else:
        where = f'{LEAF_INDEXES}, entry {os.path.basename(leaf_dir)}'
    try:
        # Unsafe column types are the dataset's to refuse at open; here only the files are checked.
        shards = leaf_shard_readers(leaf_dir, index_text, True)
    except Exception as err:  # noqa: BLE001 - anything wrong in the entry is this leaf's problem
        raise ValueError(f'{where}: not a Streaming index ({type(err).__name__}: {err})') from err
    check_leaf_shards(shards, where, token_column, samples)
    return shards


def _check_file(report: Report, leaf_dir: str, info, compressed: bool, required: bool) -> bool:
    """Check one shard file into `report`; return whether it is present. In an index directory the
    published form (compressed, or the only one) is required; a decompressed copy never is."""
    path = os.path.join(leaf_dir, info.basename)
    try:
        stat = os.stat(path)
    except FileNotFoundError:
        if required and not report.cache:
            report.problems.append((path, 'missing'))
        return False
    report.bytes += info.bytes
    if compressed:
        report.compressed += 1
    else:
        report.decompressed += 1
    problem = file_problem(path, info)
    if problem:
        report.problems.append((path, problem))
    elif not compressed:
        record(path, info, stat)
    return True


def verify_index(root: str) -> Report:
    """Check every shard file present in an index directory, or in a `local=` cache of one.

    An index directory must hold every compressed file (or, uncompressed, every shard). A cache
    (no TREE_FILE: the dataset fetches only the manifest, tokenizer and leaf indexes into it) holds
    what has been read. Sound decompressed files are recorded as verified.
    """
    index = CISIndex.open(root)
    report = Report(root, cache=not os.path.exists(os.path.join(root, TREE_FILE)))
    token_column = index.manifest['options']['token_column']
    # A cache holds the leaves' index.json files only in the bundle (dataset.py reads them there).
    bundle = read_leaf_indexes(root, index.manifest) if report.cache else {}
    for leaf, samples in enumerate(index.leaf_samples):
        leaf_dir = index.leaf_path(leaf)
        report.leaves += 1
        try:
            shards = _leaf_shards(leaf_dir, token_column, int(samples), bundle.get(leaf_dir_name(leaf)))
        except (OSError, ValueError) as err:
            report.problems.append((os.path.join(leaf_dir, 'index.json'), str(err)))
            continue
        for shard in shards:
            report.shards += 1
            for raw, packed in shard.file_pairs:
                present = packed is not None and _check_file(report, leaf_dir, packed, True, True)
                present |= _check_file(report, leaf_dir, raw, False, packed is None)
                if report.cache and not present:
                    report.not_present += 1
    return report
