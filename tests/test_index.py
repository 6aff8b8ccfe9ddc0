"""The indexer end to end: published layout, readable leaves, reconciled totals, cluster quality,
determinism, rejects, strictness, atomic publishing, placement, and the three kinds of embedder."""

from __future__ import annotations

import collections
import filecmp
import json
import os
import shutil

import numpy as np
import pytest
from streaming import StreamingDataset

import cis_stream.index as index_module
from cis_stream.index import build_index, summary
from cis_stream.manifest import CISIndex, NotAnIndexError
from cis_stream.readers import InputError
from cis_stream.tokens import make_windows
from conftest import SMALL_OPTIONS, WIKI_LEVELS, WIKI_WINDOW, json_line, write_lines

PUBLISHED = ['cis_index.json', 'clusters', 'embedder', 'rejects.jsonl', 'tokenizer.json', 'tree.npz']


def leftovers(out: str) -> list[str]:
    """Temporary siblings a build may leave next to `out`."""
    parent, name = os.path.split(out)
    if not os.path.isdir(parent):
        return []
    return [n for n in os.listdir(parent) if n.startswith(name + '.')]


def read_leaf(path: str) -> tuple[int, list[np.ndarray]]:
    dataset = StreamingDataset(local=path, batch_size=1)
    try:
        return len(dataset), [dataset[i]['tokens'] for i in range(dataset.num_samples)]
    finally:
        del dataset


def purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of items whose cluster's majority label is their own."""
    return sum(collections.Counter(labels[clusters == c]).most_common(1)[0][1]
               for c in np.unique(clusters)) / len(labels)


@pytest.fixture(scope='module')
def wiki_leaves(wiki_index):
    """Every leaf of the wiki index read back through Streaming: leaf → (len(dataset), samples)."""
    return {leaf: read_leaf(path) for leaf, path in enumerate(wiki_index.leaf_paths)}


# Layout and manifest ------------------------------------------------------------------------------

def test_manifest_publishes_the_index(wiki_index, wiki_corpus):
    root = wiki_index.root
    assert sorted(os.listdir(root)) == PUBLISHED
    assert leftovers(root) == []
    assert os.path.isfile(os.path.join(root, 'embedder', 'lsi.npz'))
    assert sorted(os.listdir(os.path.join(root, 'clusters'))) == [f'{i:05d}' for i in range(wiki_index.num_leaves)]

    reopened = CISIndex.open(root)
    assert reopened.manifest == wiki_index.manifest
    m = reopened.manifest
    assert m['format_version'] == 1 and len(m['fingerprint']) == 64
    opts = m['options']
    assert opts['window'] == WIKI_WINDOW and opts['seq_len'] == WIKI_WINDOW and opts['seed'] == 0
    assert opts['levels'] == WIKI_LEVELS and opts['embedder']['name'] == 'lsi'
    assert opts['token_column'] == 'ndarray:uint16'
    assert opts['tokenizer']['eos_id'] == 50256
    assert [level['planned'] for level in m['tree']['levels']] == WIKI_LEVELS
    for level in m['tree']['levels']:
        assert level['pruned_empty'] == level['fitted'] - len(level['nodes']) >= 0
    assert reopened.levels == [len(c) for c in reopened.centroids]
    assert reopened.levels[0] <= WIKI_LEVELS[0] and reopened.levels[1] <= WIKI_LEVELS[1]
    assert reopened.levels[1] >= 10, 'a 2,650-document corpus fills most of 20 leaves'
    assert reopened.tokenizer.eos_id == 50256 and reopened.embedder.dim == 128
    assert [s['path'] for s in m['inputs']] == wiki_corpus.files
    assert set(m['timings']) >= {'read_tokenize', 'embed', 'fit_tree', 'assign', 'pack_write', 'total'}
    text = summary(m)
    assert f"indexed {len(wiki_corpus.docs):,} of" in text and m['fingerprint'][:16] in text


def test_every_leaf_is_a_streaming_dataset_of_fixed_length_samples(wiki_index, wiki_leaves):
    samples_per_leaf = wiki_index.counts(len(WIKI_LEVELS) - 1, 'samples')
    assert len(wiki_leaves) == wiki_index.num_leaves
    for leaf, (length, samples) in wiki_leaves.items():
        assert length == len(samples) == samples_per_leaf[leaf] > 0, leaf
        for sample in samples:
            assert sample.dtype == np.uint16 and sample.shape == (WIKI_WINDOW,)


def test_leaf_shards_hold_exactly_their_windows(wiki_index, wiki_leaves, wiki_placement):
    """Cluster-pure and lossless: leaf l's samples are the windows placed in l, in corpus order,
    each followed by one EOS, and the tail padded with EOS."""
    eos = wiki_index.tokenizer.eos_id
    leaf_of = wiki_placement.nodes[:, -1]
    starts = np.concatenate([[0], np.cumsum(wiki_placement.tokens)[:-1]])
    windows = make_windows(wiki_index.tokenizer, [], 1)  # noqa: just to use the same code path
    del windows
    pad = wiki_index.counts(len(WIKI_LEVELS) - 1, 'pad_tokens')
    # The placement reproduces the windows' tokens: rebuild them from the index's own tokenizer.
    tokens = make_windows(wiki_index.tokenizer, [wiki_index_text for wiki_index_text in _texts(wiki_placement)],
                          WIKI_WINDOW).tokens if False else None
    del tokens
    for leaf, (_, samples) in wiki_leaves.items():
        stream = np.concatenate(samples).astype(np.int64)
        expected = []
        for row in np.flatnonzero(leaf_of == leaf):
            expected.append(_window_tokens[row])
            expected.append(np.array([eos]))
        expected.append(np.full(pad[leaf], eos))
        assert np.array_equal(stream, np.concatenate(expected)), f'leaf {leaf} does not hold its windows'
