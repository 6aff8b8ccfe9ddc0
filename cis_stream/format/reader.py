"""A published cluster index: its manifest, and the means to place new text in its tree."""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from cis_stream.embedders import EMBED_BATCH, load_embedder, reads_tokens
from cis_stream.embedders.base import Embedder
from cis_stream.format.layout import (
    CLUSTERS_DIR,
    EMBEDDER_DIR,
    FORMAT_VERSION,
    MANIFEST,
    TOKENIZER_FILE,
    TREE_FILE,
    NotAnIndexError,
    leaf_dir_name,
)
from cis_stream.format.validate import check_manifest
from cis_stream.text.tokens import TokenizerHandle, Windows, make_windows, tokenizer_from_json
from cis_stream.tree import Tree


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
        windows, nodes = self.place_windows(texts)
        return Placement(nodes, windows.doc_index, windows.lengths)

    def place_windows(self, texts: list[str]) -> tuple[Windows, np.ndarray]:
        """The texts' token windows, and the node of each at every level [windows, levels]."""
        windows = make_windows(self.tokenizer, texts, self.manifest['options']['window'])
        inputs = windows.token_windows() if reads_tokens(self.embedder) else windows.texts
        vectors = [self.embedder.embed(inputs[i:i + EMBED_BATCH]) for i in range(0, len(inputs), EMBED_BATCH)]
        dim = self.centroids[0].shape[1]
        return windows, self.tree.assign(np.concatenate(vectors) if vectors else np.zeros((0, dim), np.float32))
