"""A published cluster index: its manifest, and the means to place new text in its tree."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import shutil
import socket
import threading
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import zstandard

from cis_stream.embedders import Embedder, load_embedder
from cis_stream.tokens import TokenizerHandle, make_windows, tokenizer_from_json
from cis_stream.tree import Tree
from cis_stream.validate import check_manifest

FORMAT_VERSION = 1
MANIFEST = 'cis_index.json'
TREE_FILE = 'tree.npz'
TOKENIZER_FILE = 'tokenizer.json'
EMBEDDER_DIR = 'embedder'
REJECTS_FILE = 'rejects.jsonl'
CLUSTERS_DIR = 'clusters'
# Every leaf's index.json in one zstd-compressed JSON object, so that a remote index starts with
# two downloads instead of one round trip per leaf (Streaming fetches those one after another).
LEAF_INDEXES = 'leaf_indexes.json.zst'
# Windows handed to the embedder in one call (indexing and placing new text alike).
EMBED_BATCH = 1024


class NotAnIndexError(ValueError):
    """A path that is not a (complete, readable) cis_stream index."""


def leaf_dir_name(leaf: int) -> str:
    return f'{leaf:05d}'


def leaf_index_name(leaf: int) -> str:
    return f'{CLUSTERS_DIR}/{leaf_dir_name(leaf)}/index.json'


@contextlib.contextmanager
def replacing(path: str):
    """Yield a temporary name next to `path` (file or folder) that becomes `path` when the block ends.

    Every file of an index, staged or published, is written this way and never rewritten in place:
    `cis-stream add` stages a new version whose files are hard links to the old version's, so
    writing through one would change both; and no reader sees half a file. The name is the
    writer's own (host, process, thread): concurrent writers (e.g. ranks filling a shared cache)
    never share one. It keeps the suffix, for writers that add one (np.save, np.savez). A failed
    block leaves nothing behind.
    """
    stem, suffix = os.path.splitext(path)
    tmp = f'{stem}.tmp-{socket.gethostname()}-{os.getpid()}-{threading.get_ident()}{suffix}'
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        if os.path.isdir(tmp) and not os.path.islink(tmp):
            shutil.rmtree(tmp)
        elif os.path.lexists(tmp):
            os.unlink(tmp)


def write_leaf_indexes(root: str, num_leaves: int) -> None:
    """Bundle the leaves' index.json files into LEAF_INDEXES (at indexing time)."""
    bundle = {}
    for leaf in range(num_leaves):
        with open(os.path.join(root, leaf_index_name(leaf)), encoding='utf-8') as handle:
            bundle[leaf_dir_name(leaf)] = handle.read()
    with replacing(os.path.join(root, LEAF_INDEXES)) as tmp, open(tmp, 'wb') as handle:
        handle.write(zstandard.ZstdCompressor(level=10).compress(canonical_json(bundle)))


def unpack_leaf_indexes(root: str, manifest: dict) -> None:
    """Write each leaf's index.json under `root` from the bundle (remote start-up), after checking
    that the bundle is the manifest's (sha256) and names exactly its leaves, so that no name in a
    downloaded file can place a file outside `root`. Their content is checked as Streaming reads them."""
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
    for name in names:
        path = os.path.join(root, CLUSTERS_DIR, name, 'index.json')
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with replacing(path) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
                handle.write(bundle[name])


def canonical_json(obj) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(',', ':'), ensure_ascii=False).encode('utf-8')


def sha256_file(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, 'rb') as handle:
        for block in iter(lambda: handle.read(1 << 20), b''):
            digest.update(block)
    return digest.hexdigest()


@dataclass
class Placement:
    """Where new windows land: node id per level, plus their documents and token counts."""
    nodes: np.ndarray        # int64 [windows, levels]
    doc_index: np.ndarray    # int64 [windows], position of the window's document in the input
    tokens: np.ndarray       # int64 [windows], tokens per window


class CISIndex:
    """Read access to a published index (`CISIndex.open(path)`)."""

    def __init__(self, root: str, manifest: dict):
        self.root = root
        self.manifest = manifest

    @classmethod
    def open(cls, root: str) -> 'CISIndex':
        path = os.path.join(root, MANIFEST)
        if not os.path.isdir(root):
            raise NotAnIndexError(f'{root}: no such index directory')
        if not os.path.isfile(path):
            raise NotAnIndexError(f'{root}: not a cis_stream index (no {MANIFEST}); an interrupted build '
                                  f'never publishes one, so run `cis-stream index` again')
        try:
            with open(path, encoding='utf-8') as handle:
                manifest = json.load(handle)
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise NotAnIndexError(f'{path}: unreadable manifest ({err})') from err
        if not isinstance(manifest, dict) or manifest.get('format_version') != FORMAT_VERSION:
            version = manifest.get('format_version') if isinstance(manifest, dict) else None
            raise NotAnIndexError(f'{path}: format version {version!r}; this cis_stream reads '
                                  f'version {FORMAT_VERSION}')
        check_manifest(manifest, path, NotAnIndexError)
        return cls(root, manifest)

    @property
    def fingerprint(self) -> str:
        return self.manifest['fingerprint']

    @property
    def levels(self) -> list[int]:
        """Number of nodes per level after pruning (the last level are the leaves)."""
        return [len(level['nodes']) for level in self.manifest['tree']['levels']]

    @property
    def num_leaves(self) -> int:
        return self.levels[-1]

    def counts(self, level: int, field: str = 'windows') -> np.ndarray:
        """Per-node counts at `level`: documents, windows, samples or tokens."""
        return np.asarray([node[field] for node in self.manifest['tree']['levels'][level]['nodes']],
                          dtype=np.int64)

    @property
    def leaf_samples(self) -> np.ndarray:
        """Samples per leaf: what the dataset draws from and the weights spread over."""
        return self.counts(len(self.levels) - 1, 'samples')

    def parents(self, level: int) -> np.ndarray:
        return self.tree.parents[level]

    def leaf_ancestors(self, level: int) -> np.ndarray:
        """For each leaf, its ancestor at `level`."""
        nodes = np.arange(self.num_leaves)
        for lower in range(len(self.levels) - 1, level, -1):
            nodes = self.tree.parents[lower][nodes]
        return nodes

    def leaf_path(self, leaf: int) -> str:
        return os.path.join(self.root, CLUSTERS_DIR, leaf_dir_name(leaf))

    @property
    def leaf_paths(self) -> list[str]:
        return [self.leaf_path(leaf) for leaf in range(self.num_leaves)]

    @cached_property
    def tree(self) -> Tree:
        return Tree.load(os.path.join(self.root, TREE_FILE))

    @property
    def centroids(self) -> list[np.ndarray]:
        return self.tree.centroids

    @cached_property
    def tokenizer(self) -> TokenizerHandle:
        with open(os.path.join(self.root, TOKENIZER_FILE), encoding='utf-8') as handle:
            return tokenizer_from_json(handle.read(), self.manifest['options']['tokenizer']['eos_id'])

    @cached_property
    def embedder(self) -> Embedder:
        spec = self.manifest['options']['embedder']
        return load_embedder(spec['name'], spec['config'], os.path.join(self.root, EMBEDDER_DIR))

    def place(self, texts: list[str]) -> Placement:
        """Window, embed and assign texts exactly as the indexer did (the index's own parts)."""
        windows = make_windows(self.tokenizer, texts, self.manifest['options']['window'])
        vectors = [self.embedder.embed(windows.texts[i:i + EMBED_BATCH])
                   for i in range(0, len(windows.texts), EMBED_BATCH)]
        dim = self.centroids[0].shape[1]
        nodes = self.tree.assign(np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32))
        return Placement(nodes, windows.doc_index, windows.lengths)
