"""The manifest's pure parts: per-level node records (counts, samples and pad tokens summed up the tree,
parents, pruning) and the fingerprint (what it hashes, what it ignores, and its value on a fixed
directory, recorded with the code before the restructure). No index is built."""

from __future__ import annotations

import copy
import json
import os
import shutil

import numpy as np
import pytest

from cis_stream.embedders import make_embedder
from cis_stream.format.leaves import pack_leaf
from cis_stream.format.manifest import add_node_totals, fingerprint, node_records
from cis_stream.index.parts import part_counts, rows_by_leaf
from cis_stream.index.spool import WindowSpool
from cis_stream.text.tokens import load_tokenizer, make_windows
from cis_stream.tree import Tree, fit_tree

# node_records -----------------------------------------------------------------------------------

# A pruned three-level tree: 2 top nodes, 5 in the middle, 7 leaves.
PARENTS = [[-1, -1], [0, 0, 1, 1, 1], [0, 1, 1, 2, 3, 4, 4]]


def hand_tree() -> Tree:
    return Tree([np.zeros((len(p), 2), np.float32) for p in PARENTS], [np.asarray(p, np.int64) for p in PARENTS])


def test_node_records_of_a_known_tree():
    tree = hand_tree()
    rng = np.random.default_rng(0)
    counts = np.zeros((3, 3, 7), np.int64)  # [level, (windows, tokens, documents), node]
    for level, size in enumerate(tree.sizes):
        counts[level, 0, :size] = rng.integers(5, 50, size)
        counts[level, 1, :size] = counts[level, 0, :size] * 60
        counts[level, 2, :size] = rng.integers(1, 5, size)
    packed = [{'samples': int(s), 'pad_tokens': int(p)} for s, p in zip(rng.integers(1, 30, 7), rng.integers(0, 96, 7))]
    levels = node_records(tree, counts, packed, planned=[2, 6, 12], fitted=[2, 5, 8])

    assert [(lv['planned'], lv['fitted'], lv['pruned_empty']) for lv in levels] == [(2, 2, 0), (6, 5, 0), (12, 8, 1)]
    assert [len(lv['nodes']) for lv in levels] == [2, 5, 7]
    # Windows, tokens and documents are the counts given for each level (a document may span nodes,
    # so they are counted per level, not summed from below); parents are the tree's.
    for level, info in enumerate(levels):
        for i, node in enumerate(info['nodes']):
            assert set(node) == {'documents', 'windows', 'tokens', 'samples', 'pad_tokens', 'parent'}
            assert (node['windows'], node['tokens'], node['documents']) == tuple(counts[level, :, i].tolist())
            assert node['parent'] == PARENTS[level][i]
            assert all(type(v) is int for v in node.values()), 'plain ints, for JSON'
    # Samples and pad tokens are the leaves' own, summed up the tree.
    assert [(n['samples'], n['pad_tokens']) for n in levels[2]['nodes']] == [
        (p['samples'], p['pad_tokens']) for p in packed]
    for level in (1, 0):
        for i, node in enumerate(levels[level]['nodes']):
            kids = [n for n in levels[level + 1]['nodes'] if n['parent'] == i]
            assert node['samples'] == sum(k['samples'] for k in kids)
            assert node['pad_tokens'] == sum(k['pad_tokens'] for k in kids)
    assert levels[0]['nodes'][0]['samples'] == sum(p['samples'] for p in packed[:3])  # leaves 0-2: middle 0, 1


def test_adding_to_the_records_is_recording_the_sums():
    """`cis-stream add` adds its new windows' counts, and its new shards' samples, to the records of the
    nodes above them: the same records as if the counts had been there from the start."""
    tree = hand_tree()
    rng = np.random.default_rng(1)
    before, added = (rng.integers(0, 40, (3, 3, 7)) for _ in range(2))
    packed_before = [{'samples': int(s), 'pad_tokens': int(p)} for s, p in rng.integers(1, 20, (7, 2))]
    packed_added = {1: {'samples': 4, 'pad_tokens': 9}, 5: {'samples': 1, 'pad_tokens': 50}}  # leaves that grew
    levels = node_records(tree, before, packed_before, planned=[2, 6, 12], fitted=[2, 5, 8])
    add_node_totals(levels, tree, added, packed_added)
    packed_sum = [dict(p) for p in packed_before]
    for leaf, result in packed_added.items():
        for key in result:
            packed_sum[leaf][key] += result[key]
    assert levels == node_records(tree, before + added, packed_sum, planned=[2, 6, 12], fitted=[2, 5, 8])
    assert all(type(v) is int for level in levels for node in level['nodes'] for v in node.values())


class Discard:
    """A writer that keeps nothing: only pack_leaf's counts matter here."""

    def write(self, sample: dict) -> None:
        pass


def test_node_records_of_a_real_part(wiki_records, tmp_path):
    """Real text through the stages of a build, in memory: windows, an lsi embedding, a fitted tree,
    the part's counts, and each leaf packed; the records then reconcile as a published manifest must."""
    gpt2, seq_len = load_tokenizer(), 96
    texts = [r['text'] for r in wiki_records if r['topic'] in ('Mathematics', 'Geography')][:200]
    spool = WindowSpool(str(tmp_path / 'part'))
    spool.append(make_windows(gpt2, texts, 64), np.arange(len(texts)))
    spool.close()
    spool = WindowSpool.open(spool.directory)
    embedder = make_embedder('lsi', dim=16)
    windows = spool.windows_for(embedder, np.arange(spool.count))
    embedder.fit(windows, seed=0)
    vectors = embedder.embed(windows)
    tree = fit_tree(vectors, [2, 6], seed=0)
    nodes = tree.assign(vectors)
    counts = part_counts(nodes, spool, tree.sizes)
    assert (counts[:, 0, :] > 0).sum() == sum(tree.sizes), 'no empty node: nothing to prune'
    packed = []
    for leaf, rows in rows_by_leaf(nodes[:, -1]):
        assert leaf == len(packed)
        packed.append(pack_leaf([spool.eos_joined_tokens(rows, gpt2.eos_id)], Discard(), seq_len, gpt2.eos_id,
                                np.uint16))
    levels = node_records(tree, counts, packed, planned=[2, 6], fitted=tree.sizes)

    totals = {'windows': spool.count, 'tokens': int(spool.lengths.sum()),
              'samples': sum(p['samples'] for p in packed), 'pad_tokens': sum(p['pad_tokens'] for p in packed)}
    for level, info in enumerate(levels):
        for key, total in totals.items():
            assert sum(n[key] for n in info['nodes']) == total, (level, key)
        assert sum(n['documents'] for n in info['nodes']) >= len(texts)
        if level:
            for parent, above in enumerate(levels[level - 1]['nodes']):
                kids = [n for n in info['nodes'] if n['parent'] == parent]
                for key in totals:
                    assert sum(n[key] for n in kids) == above[key], (level, parent, key)
    for n in levels[-1]['nodes']:  # each leaf: its windows EOS-joined, rounded up to whole samples
        used = n['tokens'] + n['windows']
        assert n['samples'] == -(-used // seq_len) and n['pad_tokens'] == n['samples'] * seq_len - used


# fingerprint ------------------------------------------------------------------------------------------

# fingerprint() of the directory and manifest below. The restructure kept the value of the code before it
# (cis_stream/index.py at commit af651f4); it was recorded anew when input file sizes left the fingerprint
# (issue 15). The files hold fixed bytes, so no library version enters it.
RECORDED_FINGERPRINT = '9be02e745f81e1819062bbf3285af128937d5c936807a7c3cb8487fccf33dbd4'

FILES = {
    'tree.npz': b'centroids and parents',
    'tokenizer.json': b'{"model": "a tokenizer"}',
    'embedder/lsi.npz': b'idf and components',
    'embedder/state/extra.bin': b'\x00\x01 nested state',
    'clusters/00000/index.json': b'{"shards": [0]}',
    'clusters/00000/shard.00000.mds.zstd': b'samples of leaf 0',
    'clusters/00001/index.json': b'{"shards": [1]}',
    'clusters/00002/index.json': b'{"shards": [2]}',
}
MANIFEST = {
    'format_version': 1,
    'fingerprint': 'not part of the content',
    'options': {'window': 64, 'seq_len': 96, 'levels': [2, 3], 'seed': 0,
                'embedder': {'name': 'lsi', 'config': {'dim': 32}},
                'tokenizer': {'source': '/models/gpt2/tokenizer.json', 'sha256': 'ab' * 32, 'eos_id': 50256}},
    'tree': {'levels': [{'planned': 2, 'nodes': [{'windows': 3, 'parent': -1}, {'windows': 4, 'parent': -1}]},
                        {'planned': 3, 'nodes': [{'windows': 3, 'parent': 0}, {'windows': 2, 'parent': 1},
                                                 {'windows': 2, 'parent': 1}]}]},
    'totals': {'documents_read': 5, 'documents_indexed': 4, 'windows': 7, 'tokens': 300, 'input_bytes': 2000},
    'inputs': [{'path': '/data/a.jsonl', 'bytes': 1200, 'documents': 3, 'indexed': 3},
               {'path': '/data/b.jsonl.gz', 'bytes': 800, 'documents': 2, 'indexed': 1}],
    'decontamination': {'ngram': 13, 'eval_documents': 2,
                        'files': [{'path': '/evals/test.jsonl', 'sha256': 'cd' * 32, 'documents': 2}]},
    'rejects': {'file': 'rejects.jsonl', 'count': 1},
    'skipped_files': [{'path': '/data/README.md', 'reason': 'not an input format'}],
    'timings': {'total': 12.5},
    'build': {'resumed': False, 'processes': 1},
}


def write_index(root) -> tuple[dict, str]:
    for name, data in FILES.items():
        path = os.path.join(root, name)
        os.makedirs(os.path.dirname(path), exist_ok=True)
        with open(path, 'wb') as handle:
            handle.write(data)
    return copy.deepcopy(MANIFEST), str(root)


@pytest.fixture
def index_dir(tmp_path) -> tuple[dict, str]:
    return write_index(tmp_path / 'index')


def test_the_fingerprint_is_the_one_recorded(index_dir):
    manifest, root = index_dir
    assert fingerprint(manifest, root, 3) == RECORDED_FINGERPRINT


def test_the_fingerprint_ignores_where_things_lie_and_what_is_not_content(index_dir, tmp_path):
    manifest, root = index_dir
    reference = fingerprint(manifest, root, 3)
    assert len(reference) == 64 and int(reference, 16) >= 0
    moved = str(tmp_path / 'elsewhere' / 'idx')
    shutil.copytree(root, moved)
    assert fingerprint(manifest, moved, 3) == reference
    same = json.loads(json.dumps(manifest))
    same['timings'] = {'total': 99.0, 'embed': 3.0}
    same['build'] = {'resumed': True}
    same['fingerprint'] = 'f' * 64
    same['rejects'] = {'file': 'rejects.jsonl', 'count': 1, 'by_reason': {'empty line': 1}}
    same['skipped_files'] = []
    same['options']['tokenizer']['source'] = '/elsewhere/tok.json'
    for record in same['inputs'] + same['decontamination']['files']:
        record['path'] = '/moved' + record['path']
    for record in same['inputs']:  # the same text stored otherwise (Parquet, compressed): other sizes
        record['bytes'] += 1000
    same['totals']['input_bytes'] += 1000 * len(same['inputs'])
    same = dict(reversed(list(same.items())))  # key order is not content either
    assert fingerprint(same, root, 3) == reference
    # A shard is content through its leaf's index.json (which holds the shard's hash), not directly.
    with open(os.path.join(root, 'clusters/00000/shard.00000.mds.zstd'), 'ab') as handle:
        handle.write(b'appended')
    assert fingerprint(manifest, root, 3) == reference


@pytest.mark.parametrize('change', [
    lambda m: m.update(format_version=2),
    lambda m: m['options'].update(seed=1),
    lambda m: m['options']['embedder']['config'].update(dim=16),
    lambda m: m['options']['tokenizer'].update(eos_id=0),
    lambda m: m['tree']['levels'][1]['nodes'][2].update(windows=3),
    lambda m: m['totals'].update(tokens=301),
    lambda m: m['inputs'][1].update(indexed=2),
    lambda m: m['inputs'].pop(),
    lambda m: m['decontamination'].update(ngram=12),
    lambda m: m['decontamination']['files'][0].update(sha256='ef' * 32),
    lambda m: m.update(decontamination=None),
], ids=['format_version', 'seed', 'embedder config', 'eos id', 'tree', 'totals', 'input counts', 'an input less',
        'ngram', 'eval bytes', 'no decontamination'])
def test_the_fingerprint_changes_with_the_manifests_content(index_dir, change):
    manifest, root = index_dir
    reference = fingerprint(manifest, root, 3)
    change(manifest)
    assert fingerprint(manifest, root, 3) != reference


@pytest.mark.parametrize('name', ['tree.npz', 'tokenizer.json', 'embedder/lsi.npz', 'embedder/state/extra.bin',
                                  'clusters/00000/index.json', 'clusters/00002/index.json'])
def test_the_fingerprint_changes_with_every_content_file(index_dir, name):
    manifest, root = index_dir
    reference = fingerprint(manifest, root, 3)
    with open(os.path.join(root, name), 'ab') as handle:
        handle.write(b' ')
    assert fingerprint(manifest, root, 3) != reference


def test_the_fingerprint_covers_every_leaf_and_embedder_file(index_dir):
    manifest, root = index_dir
    reference = fingerprint(manifest, root, 3)
    assert fingerprint(manifest, root, 2) != reference  # a leaf fewer
    with open(os.path.join(root, 'embedder', 'new.npz'), 'wb') as handle:
        handle.write(b'another file of state')
    assert fingerprint(manifest, root, 3) != reference
    os.remove(os.path.join(root, 'clusters', '00002', 'index.json'))
    with pytest.raises(FileNotFoundError):
        fingerprint(manifest, root, 3)


def test_absent_and_empty_decontamination_fingerprint_alike(index_dir):
    manifest, root = index_dir
    manifest['decontamination'] = None
    absent = dict(manifest)
    del absent['decontamination']
    assert fingerprint(manifest, root, 3) == fingerprint(absent, root, 3)
