"""Security: no pickle anywhere (a pickle column is refused before anything is unpickled), safe YAML,
hand-edited manifests and weights named by file and field, no path outside the index or the cache.

The source scan for pickle and unsafe YAML loading: unit/test_package.py; weights for another
index and bad proportions: e2e/test_weights.py, e2e/test_dataset.py.
"""

from __future__ import annotations

import json
import os
import re
import shutil

import pytest
import zstandard
from streaming import MDSWriter

from cis_stream.dataset import ClusteredImportanceDataset, DamagedLeafError
from cis_stream.format.files import canonical_json, sha256_file
from cis_stream.format.layout import LEAF_INDEXES, NotAnIndexError
from cis_stream.format.reader import CISIndex
from cis_stream.training.train import load_config
from cis_stream.weights import read_weights
from tests.helpers import copy_index

# The datasets of these tests: no shuffle, so that a sample id names the same sample every time.
COMMON = dict(batch_size=8, shuffle=False, num_canonical_nodes=1)


def test_pickle_columns_are_refused_before_anything_is_unpickled(mix_index, tmp_path):
    root = copy_index(mix_index, tmp_path / 'index')
    leaf_dir = os.path.join(root, 'clusters', '00000')
    samples = int(mix_index.leaf_samples[0])
    marker = str(tmp_path / 'unpickled')

    class Payload:
        def __reduce__(self):
            return os.mkdir, (marker,)
    shutil.rmtree(leaf_dir)
    with MDSWriter(out=leaf_dir, columns={'tokens': 'pkl'}, compression='zstd', hashes=['xxh64']) as writer:
        for _ in range(samples):
            writer.write({'tokens': Payload()})
    with pytest.raises(DamagedLeafError) as info:
        dataset = ClusteredImportanceDataset(root, None, **COMMON)
        dataset[0]
    message = str(info.value)
    assert message.startswith(f'leaf 00000: cannot load {leaf_dir}/index.json') and 'pkl' in message
    assert 'allow_unsafe_types=True' not in message  # no advice to switch the protection off
    assert not os.path.exists(marker), 'a pickle was loaded'
    with pytest.raises(ValueError, match='sets .allow_unsafe_types. itself'):
        ClusteredImportanceDataset(root, None, allow_unsafe_types=True, **COMMON)


@pytest.mark.parametrize('name', ['../../outside.mds.zstd', '/tmp/outside.mds.zstd'])
def test_shard_names_outside_the_leaf_are_not_followed(mix_index, tmp_path, name):
    root = copy_index(mix_index, tmp_path / 'index')
    path = os.path.join(root, 'clusters', '00002', 'index.json')
    leaf_index = json.load(open(path))
    leaf_index['shards'][0]['zip_data']['basename'] = name
    json.dump(leaf_index, open(path, 'w'))
    with pytest.raises(DamagedLeafError) as info:
        ClusteredImportanceDataset(root, None, **COMMON)[0]
    assert str(info.value).startswith(f'leaf 00002: {path}: shards[0]: shard file {name!r} is not a plain')


def test_remote_bundle_cannot_place_files_outside_the_cache(mix_index, tmp_path):
    remote = copy_index(mix_index, tmp_path / 'remote')
    bundle_path = os.path.join(remote, LEAF_INDEXES)
    with open(bundle_path, 'rb') as handle:
        bundle = json.loads(zstandard.ZstdDecompressor().stream_reader(handle).read())
    bundle['../../../escaped'] = bundle.pop('00001')
    with open(bundle_path, 'wb') as handle:
        handle.write(zstandard.ZstdCompressor().compress(canonical_json(bundle)))
    manifest_path = os.path.join(remote, 'cis_index.json')
    manifest = json.load(open(manifest_path))
    manifest['leaf_indexes_sha256'] = sha256_file(bundle_path)  # a consistent, malicious remote
    json.dump(manifest, open(manifest_path, 'w'))
    cache = tmp_path / 'a' / 'b' / 'cache'
    with pytest.raises(NotAnIndexError, match=r'does not hold exactly the leaves 00000\.\.'):
        ClusteredImportanceDataset(remote, None, local=str(cache), **COMMON)
    assert not list(tmp_path.rglob('escaped*')) and not (cache / 'clusters').exists()


def _edit(manifest: dict, dotted: str, value):
    node = manifest
    keys = [int(k) if k.isdigit() else k for k in re.split(r'[.\[\]]+', dotted) if k]
    for key in keys[:-1]:
        node = node[key]
    if value is KeyError:
        del node[keys[-1]]
    else:
        node[keys[-1]] = value


@pytest.mark.parametrize('field, value, problem', [
    ('fingerprint', KeyError, 'missing'),
    ('options.seq_len', '64', "expected an integer, got '64'"),
    ('options.window', 0, '0 is not >= 1'),
    ('options.token_column', 'pkl', "'pkl' is not one of"),
    ('options.embedder.name', 'os.system; rm -rf', 'does not match'),
    ('tree.levels[1].nodes[3].samples', -1, '-1 is not >= 0'),
    ('tree.levels[1].nodes[3].samples', 0, 'a leaf without samples'),
    ('tree.levels[1].nodes[3].parent', 99, '99 is not a node of level 0 (8 nodes)'),
    ('tree.levels[0].nodes[0].parent', 2, '2, but top-level nodes have parent -1'),
    ('rejects.file', '../../etc/passwd', 'does not match'),
    ('leaf_indexes_sha256', '/abs/path', 'does not match'),
])
def test_hand_edited_manifest_names_the_file_and_field(mix_index, tmp_path, field, value, problem):
    root = tmp_path / 'index'
    shutil.copytree(mix_index.root, root, ignore=lambda _, names: [n for n in names if n == 'clusters'])
    path = root / 'cis_index.json'
    manifest = json.loads(path.read_text())
    _edit(manifest, field, value)
    path.write_text(json.dumps(manifest))
    with pytest.raises(NotAnIndexError) as info:
        CISIndex.open(str(root))
    message = str(info.value)
    assert message.startswith(f'{path}: field {field}: ') and problem in message, message
    assert 'rebuild the index' in message


def test_embedder_named_in_a_manifest_must_be_an_embedder_class(mix_index, tmp_path):
    root = tmp_path / 'index'
    shutil.copytree(mix_index.root, root, ignore=lambda _, names: [n for n in names if n == 'clusters'])
    path = root / 'cis_index.json'
    for name in ('os:system', 'subprocess:Popen'):
        manifest = json.loads(path.read_text())
        manifest['options']['embedder']['name'] = name
        path.write_text(json.dumps(manifest))
        with pytest.raises(ValueError, match=f"embedder '{name}' is not an embedder class"):
            CISIndex.open(str(root)).embedder


@pytest.mark.parametrize('field, value, problem', [
    ('index_fingerprint', KeyError, 'missing'),
    ('index_fingerprint', '../other', 'does not match'),
    ('level', -1, '-1 is not >= 0'),
    ('leaf_proportions[0]', 'a lot', "expected a number, got 'a lot'"),
    ('leaf_proportions[0]', float('nan'), 'nan (proportions must be finite and non-negative)'),
    ('leaf_proportions[7]', -0.25, '-0.25 (proportions must be finite and non-negative)'),
])
def test_hand_edited_weights_name_the_file_and_field(mix_index, mix_weights, tmp_path, field, value, problem):
    weights = json.loads(open(mix_weights).read())
    _edit(weights, field, value)
    path = tmp_path / 'edited.weights.json'
    path.write_text(json.dumps(weights))
    with pytest.raises(ValueError) as info:
        read_weights(str(path), mix_index)
    assert str(info.value).startswith(f'{path}: field {field}: ') and problem in str(info.value), str(info.value)
    assert 'recompute it with `cis-stream weights`' in str(info.value)


def test_yaml_with_python_tags_is_refused(tmp_path):
    marker = tmp_path / 'ran'
    config = tmp_path / 'evil.yaml'
    config.write_text(f'max_duration: 1ba\nmodel: !!python/object/apply:os.mkdir ["{marker}"]\n')
    with pytest.raises(ValueError) as info:
        load_config(str(config), [])
    assert str(info.value).startswith(f'{config}: invalid YAML') and 'python/object/apply:os.mkdir' in str(info.value)
    config.write_text('max_duration: 1ba\n')
    with pytest.raises(ValueError, match="override 'model=!!python/object/apply:os.mkdir"):
        load_config(str(config), [f'model=!!python/object/apply:os.mkdir ["{marker}"]'])
    assert not marker.exists()
