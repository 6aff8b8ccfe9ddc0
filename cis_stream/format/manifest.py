"""The manifest of an index: its per-level node records, its fingerprint, and writing it last."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from cis_stream.format.files import canonical_json, replacing, sha256_file
from cis_stream.format.layout import (
    CLUSTERS_DIR,
    EMBEDDER_DIR,
    LEAF_INDEXES,
    MANIFEST,
    TOKENIZER_FILE,
    TREE_FILE,
    leaf_dir_name,
)
from cis_stream.format.leaves import write_leaf_indexes
from cis_stream.tree import Tree


def node_records(tree: Tree, counts: np.ndarray, packed: list[dict], planned: list[int],
                 fitted: list[int]) -> list[dict]:
    """The manifest's per-level node records: counts, samples, pad tokens, parent, pruning."""
    leaf_samples = np.asarray([p['samples'] for p in packed], np.int64)
    leaf_pad = np.asarray([p['pad_tokens'] for p in packed], np.int64)
    node_of_leaf = np.arange(len(packed))
    levels = []
    for level in reversed(range(len(tree.sizes))):
        size = tree.sizes[level]
        samples = np.bincount(node_of_leaf, weights=leaf_samples, minlength=size).astype(np.int64)
        pad = np.bincount(node_of_leaf, weights=leaf_pad, minlength=size).astype(np.int64)
        windows, tokens, documents = counts[level, :, :size]
        levels.insert(0, {
            'planned': planned[level], 'fitted': fitted[level], 'pruned_empty': fitted[level] - size,
            'nodes': [{'documents': int(documents[i]), 'windows': int(windows[i]), 'tokens': int(tokens[i]),
                       'samples': int(samples[i]), 'pad_tokens': int(pad[i]),
                       'parent': int(tree.parents[level][i])} for i in range(size)]})
        node_of_leaf = tree.parents[level][node_of_leaf]
    return levels


def fingerprint(manifest: dict, root: str, num_leaves: int) -> str:
    """Hash of everything that defines the index's content (not timings or paths)."""
    digest = hashlib.sha256()
    stable = {k: manifest[k] for k in ('format_version', 'options', 'tree', 'totals')}
    # Where the tokenizer file lived is not content (its bytes are hashed below).
    stable['options'] = dict(stable['options'], tokenizer={
        k: v for k, v in manifest['options']['tokenizer'].items() if k != 'source'})
    stable['inputs'] = [{k: v for k, v in s.items() if k != 'path'} for s in manifest['inputs']]
    if manifest.get('decontamination'):  # the eval files' bytes and hashes, not where they lay
        stable['decontamination'] = dict(manifest['decontamination'], files=[
            {k: v for k, v in s.items() if k != 'path'} for s in manifest['decontamination']['files']])
    digest.update(canonical_json(stable))
    for name in (TREE_FILE, TOKENIZER_FILE):
        digest.update(sha256_file(os.path.join(root, name)).encode())
    for folder, _, names in sorted(os.walk(os.path.join(root, EMBEDDER_DIR))):
        for name in sorted(names):
            digest.update(sha256_file(os.path.join(folder, name)).encode())
    for leaf in range(num_leaves):
        digest.update(sha256_file(os.path.join(root, CLUSTERS_DIR, leaf_dir_name(leaf), 'index.json')).encode())
    return digest.hexdigest()


def finish_manifest(manifest: dict, root: str, num_leaves: int) -> dict:
    """Bundle the leaf indexes, fingerprint the content and write the manifest into `root`."""
    write_leaf_indexes(root, num_leaves)
    manifest['leaf_indexes_sha256'] = sha256_file(os.path.join(root, LEAF_INDEXES))
    manifest['fingerprint'] = fingerprint(manifest, root, num_leaves)
    with replacing(os.path.join(root, MANIFEST)) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
    return manifest
