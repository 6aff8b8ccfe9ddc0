"""The steps of a build's parts that need no index: how files are grouped into parts, reading a part
(its record of documents, rejects, windows and tokens), the records added up, a part's windows grouped
by leaf, and its windows, tokens and documents counted per node. The text is real (wiki summaries
cut by the GPT-2 tokenizer), the spools real window spools."""

from __future__ import annotations

import os

import numpy as np
import pytest

from cis_stream.index.options import IndexOptions
from cis_stream.index.parts import (
    PART_MAX_BYTES,
    PART_MIN_BYTES,
    PARTS_WANTED,
    PartRecord,
    merged_reasons,
    part_counts,
    part_totals,
    plan_parts,
    read_part,
    rows_by_leaf,
)
from cis_stream.index.spool import WindowSpool
from cis_stream.text.readers import InputError
from cis_stream.text.tokens import load_tokenizer, make_windows
from tests.helpers import PLANTED_BAD_LINES, json_line, write_lines

WINDOW = 64


# plan_parts -------------------------------------------------------------------------------------

def assert_consecutive_runs(parts: list[list[int]], count: int) -> None:
    """Every file in exactly one part, in order, each part a non-empty run of consecutive files."""
    assert all(parts) and sum(parts, []) == list(range(count))
    assert all(part == list(range(part[0], part[-1] + 1)) for part in parts)


def test_files_are_grouped_until_a_part_holds_part_bytes():
    assert plan_parts([5, 5, 5, 5, 5], part_bytes=10) == [[0, 1], [2, 3], [4]]
    assert plan_parts([3, 3, 3, 3], part_bytes=10) == [[0, 1, 2, 3]]
    assert plan_parts([10, 10, 1], part_bytes=10) == [[0], [1], [2]]
    # A file is never split: a large one closes the part it joins.
    assert plan_parts([1, 100, 1, 1], part_bytes=10) == [[0, 1], [2, 3]]
    assert plan_parts([], part_bytes=10) == []
    assert plan_parts([0, 0, 0]) == [[0, 1, 2]]


def test_part_bytes_one_makes_a_part_of_each_file():
    """What the scale-out tests use to give each rank several parts."""
    assert plan_parts([7, 1, 300, 2], part_bytes=1) == [[0], [1], [2], [3]]


@pytest.mark.parametrize('count, size, per_part', [
    (100, 100_000, 11),             # 10 MB: the 1 MiB floor (10 files are 1,000,000 bytes, under 1 MiB)
    (256, 1 << 20, 4),              # 256 MiB: 1/64 of the corpus, 4 MiB
    (200, 512 << 20, 1),            # 100 GiB: the 64 MiB ceiling, under one file
])
def test_the_default_size_is_a_64th_of_the_corpus_within_bounds(count, size, per_part):
    parts = plan_parts([size] * count)
    assert_consecutive_runs(parts, count)
    assert [len(p) for p in parts[:-1]] == [per_part] * (len(parts) - 1) and 1 <= len(parts[-1]) <= per_part
    target = min(PART_MAX_BYTES, max(PART_MIN_BYTES, count * size // PARTS_WANTED))
    assert all(sum([size] * len(p)) >= target for p in parts[:-1])


def test_the_plan_depends_on_the_sizes_alone():
    rng = np.random.default_rng(0)
    sizes = rng.integers(0, 5 << 20, 500).tolist()
    parts = plan_parts(sizes)
    assert parts == plan_parts(list(sizes))
    assert_consecutive_runs(parts, len(sizes))
    target = min(PART_MAX_BYTES, max(PART_MIN_BYTES, sum(sizes) // PARTS_WANTED))
    for part in parts[:-1]:  # each part closes on the file that brings it to the target, not before
        assert sum(sizes[i] for i in part) >= target > sum(sizes[i] for i in part[:-1])


# rows_by_leaf -------------------------------------------------------------------------------------

def test_rows_are_grouped_by_leaf_in_leaf_order_keeping_their_order():
    groups = list(rows_by_leaf(np.array([3, 1, 3, 0, 1, 3])))
    assert [leaf for leaf, _ in groups] == [0, 1, 3]
    assert [rows.tolist() for _, rows in groups] == [[3], [1, 4], [0, 2, 5]]
    assert all(type(leaf) is int for leaf, _ in groups)
    assert list(rows_by_leaf(np.zeros(0, np.int64))) == []
    assert [(leaf, rows.tolist()) for leaf, rows in rows_by_leaf(np.array([7, 7, 7]))] == [(7, [0, 1, 2])]


def test_rows_by_leaf_on_many_windows():
    leaves = np.random.default_rng(1).integers(0, 50, 20_000) * 3  # some leaf ids absent
    groups = list(rows_by_leaf(leaves))
    assert [leaf for leaf, _ in groups] == sorted(set(leaves.tolist()))
    assert sorted(np.concatenate([rows for _, rows in groups]).tolist()) == list(range(len(leaves)))
    for leaf, rows in groups:
        assert (leaves[rows] == leaf).all() and (np.diff(rows) > 0).all()
        assert len(rows) == int((leaves == leaf).sum())


# part_counts --------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def spool(wiki_records, tmp_path_factory) -> WindowSpool:
    """A closed spool of 120 real summaries cut into 64-token windows, appended in three batches."""
    gpt2 = load_tokenizer()
    texts = [r['text'] for r in wiki_records[:120]]
    spool = WindowSpool(str(tmp_path_factory.mktemp('spool')))
    for start in range(0, len(texts), 40):
        spool.append(make_windows(gpt2, texts[start:start + 40], WINDOW), np.arange(start, start + 40))
    spool.close()
    return WindowSpool.open(spool.directory)


def nodes_for(spool: WindowSpool, sizes: list[int], seed: int = 0) -> np.ndarray:
    """A node per window and level, each level's node below a node of the level above (as `Tree.assign`
    gives): level l has sizes[l] nodes, node j's parent is j * sizes[l-1] // sizes[l]."""
    rng = np.random.default_rng(seed)
    leaf = rng.integers(0, sizes[-1], spool.count)
    levels = [leaf]
    for above, below in zip(reversed(sizes[:-1]), reversed(sizes[1:])):
        levels.insert(0, levels[0] * above // below)
    return np.stack(levels, axis=1)


def test_the_spool_holds_real_windows(spool, wiki_records):
    assert spool.count > 240 and spool.doc.max() == 119 and (np.diff(spool.doc) >= 0).all()
    assert (spool.lengths <= WINDOW).all() and (spool.lengths == WINDOW).sum() > spool.count // 2
    first = spool.texts(np.flatnonzero(spool.doc == 0))
    assert ''.join(first) == wiki_records[0]['text']


@pytest.mark.parametrize('sizes', [[4, 16], [2, 6, 30], [1]])
def test_part_counts_are_windows_tokens_and_documents_per_node(spool, sizes):
    nodes = nodes_for(spool, sizes)
    counts = part_counts(nodes, spool, sizes)
    assert counts.shape == (len(sizes), 3, max(sizes)) and counts.dtype == np.int64
    for level, size in enumerate(sizes):
        windows, tokens, documents = counts[level]
        for node in range(max(sizes)):
            here = nodes[:, level] == node
            assert windows[node] == here.sum(), (level, node)
            assert tokens[node] == spool.lengths[here].sum(), (level, node)
            assert documents[node] == len(set(spool.doc[here].tolist())), (level, node)
        assert (counts[level, :, size:] == 0).all(), 'nodes past the level size count nothing'
        # Windows and tokens add up to the part's; a document split between nodes counts in each.
        assert windows.sum() == spool.count and tokens.sum() == spool.lengths.sum()
        assert documents.sum() >= 120 and documents.max() <= 120


def test_a_document_whose_windows_share_a_node_counts_once(spool):
    nodes = np.zeros((spool.count, 1), np.int64)
    nodes[spool.doc == 7, 0] = 1
    counts = part_counts(nodes, spool, [2])
    assert counts[0, 2].tolist() == [119, 1]
    assert counts[0, 0].tolist() == [int((spool.doc != 7).sum()), int((spool.doc == 7).sum())]
    assert int((spool.doc == 7).sum()) > 1, 'the test needs a document of several windows'


def test_an_empty_part_counts_nothing(tmp_path):
    spool = WindowSpool(str(tmp_path / 'empty'))
    spool.close()
    counts = part_counts(np.zeros((0, 2), np.int64), WindowSpool.open(spool.directory), [3, 9])
    assert counts.shape == (2, 3, 9) and not counts.any()


# read_part, its record, and records added up --------------------------------------------------------

@pytest.fixture(scope='module')
def two_files(wiki_records, tmp_path_factory) -> tuple[list[str], list[str]]:
    """Two input files of real summaries; the second (gzip) with the planted bad lines between them."""
    root = tmp_path_factory.mktemp('inputs')
    texts = [r['text'] for r in wiki_records[200:260]]
    first, second = str(root / 'a.jsonl'), str(root / 'b.jsonl.gz')
    write_lines(first, [json_line({'text': t}) for t in texts[:30]])
    lines = []
    for i, text in enumerate(texts[30:]):
        lines.append(json_line({'text': text}))
        if i < len(PLANTED_BAD_LINES):
            lines.append(PLANTED_BAD_LINES[i][0])
    write_lines(second, lines)
    return [first, second], texts


def test_read_part_records_every_line_of_its_files(two_files, tmp_path):
    files, texts = two_files
    gpt2 = load_tokenizer()
    directory = str(tmp_path / 'part')
    record = read_part(files, directory, IndexOptions(window=WINDOW), gpt2, strict=False)
    assert isinstance(record, PartRecord) and PartRecord.load(directory) == record
    assert [(s['path'], s['documents'], s['indexed'], s['rejected'], s['excluded']) for s in record.inputs] == [
        (files[0], 30, 30, 0, 0), (files[1], 30 + len(PLANTED_BAD_LINES), 30, len(PLANTED_BAD_LINES), 0)]
    assert sum(record.reasons.values()) == len(PLANTED_BAD_LINES)
    assert set(record.reasons) == {reason.split(':')[0] for _, reason in PLANTED_BAD_LINES}, 'counted by kind'
    windows = make_windows(gpt2, texts, WINDOW)
    assert (record.windows, record.tokens) == (len(windows.lengths), int(windows.lengths.sum()))
    assert record.decontamination is None
    spool = WindowSpool.open(directory)
    assert spool.texts(np.arange(spool.count)) == windows.texts and np.array_equal(spool.lengths, windows.lengths)
    assert np.array_equal(spool.doc, windows.doc_index), 'documents numbered across the part\'s files'
    with open(f'{directory}/rejects.jsonl', encoding='utf-8') as handle:
        assert sum(1 for _ in handle) == len(PLANTED_BAD_LINES)
    with pytest.raises(InputError, match=f'^{files[1]}:2: .*--strict'):
        read_part(files, str(tmp_path / 'strict'), IndexOptions(window=WINDOW), gpt2, strict=True)


def test_reject_reasons_merge_by_kind_sorted():
    assert merged_reasons([{'malformed JSON': 2, 'empty line': 1}, {}, {'empty line': 4, 'invalid UTF-8': 1}]) == {
        'empty line': 5, 'invalid UTF-8': 1, 'malformed JSON': 2}
    assert list(merged_reasons(iter([{'b': 1}, {'a': 1}]))) == ['a', 'b']
    assert merged_reasons([]) == {}


def test_part_totals_add_up_the_parts_and_the_packed_leaves(two_files, tmp_path):
    files, _ = two_files
    gpt2 = load_tokenizer()
    records = [read_part([path], str(tmp_path / f'part{i}'), IndexOptions(window=WINDOW), gpt2, strict=False)
               for i, path in enumerate(files)]
    packed = [{'samples': 40, 'pad_tokens': 17}, {'samples': 3, 'pad_tokens': 0}]
    totals = part_totals(records, packed, seq_len=96)
    assert totals == {
        'documents_read': 60 + len(PLANTED_BAD_LINES), 'documents_indexed': 60,
        'documents_rejected': len(PLANTED_BAD_LINES), 'documents_excluded': 0,
        'windows': records[0].windows + records[1].windows, 'eos_tokens': records[0].windows + records[1].windows,
        'tokens': records[0].tokens + records[1].tokens, 'pad_tokens': 17, 'samples': 43, 'sample_tokens': 43 * 96,
        'input_bytes': sum(os.path.getsize(path) for path in files)}
    # The same as reading both files as one part.
    whole = read_part(files, str(tmp_path / 'whole'), IndexOptions(window=WINDOW), gpt2, strict=False)
    assert part_totals([whole], packed, seq_len=96) == totals
