"""The manifest of an index: its per-level node records, its fingerprint, and writing it last."""

from __future__ import annotations

import hashlib
import json
import os

import numpy as np

from cis_stream.format.files import canonical_json, replacing, sha256_file
from cis_stream.format.layout import EMBEDDER_DIR, LEAF_INDEXES, MANIFEST, TOKENIZER_FILE, TREE_FILE, leaf_index_name
from cis_stream.format.leaves import write_leaf_indexes
from cis_stream.tree import Tree


def node_totals(tree: Tree, counts: np.ndarray, packed: dict[int, dict]) -> list[dict[str, np.ndarray]]:
    """Per level, per node: documents, windows and tokens (`counts`, int64 [levels, 3, nodes]), and the
    samples and pad tokens of the packed leaves below it (`packed`: leaf -> pack result)."""
    leaf_samples, leaf_pad = np.zeros(tree.sizes[-1], np.int64), np.zeros(tree.sizes[-1], np.int64)
    for leaf, result in packed.items():
        leaf_samples[leaf], leaf_pad[leaf] = result['samples'], result['pad_tokens']
    node_of_leaf = np.arange(tree.sizes[-1])
    levels: list[dict[str, np.ndarray]] = []
    for level in reversed(range(len(tree.sizes))):
        size = tree.sizes[level]
        windows, tokens, documents = counts[level, :, :size]
        levels.insert(0, {
            'documents': documents, 'windows': windows, 'tokens': tokens,
            'samples': np.bincount(node_of_leaf, weights=leaf_samples, minlength=size).astype(np.int64),
            'pad_tokens': np.bincount(node_of_leaf, weights=leaf_pad, minlength=size).astype(np.int64)})
        node_of_leaf = tree.parents[level][node_of_leaf]
    return levels


def node_records(tree: Tree, counts: np.ndarray, packed: list[dict], planned: list[int],
                 fitted: list[int]) -> list[dict]:
    """The manifest's per-level node records: counts, samples, pad tokens, parent, pruning."""
    levels = []
    for level, totals in enumerate(node_totals(tree, counts, dict(enumerate(packed)))):
        size = tree.sizes[level]
        levels.append({
            'planned': planned[level], 'fitted': fitted[level], 'pruned_empty': fitted[level] - size,
            'nodes': [{**{name: int(values[i]) for name, values in totals.items()},
                       'parent': int(tree.parents[level][i])} for i in range(size)]})
    return levels


def add_node_totals(levels: list[dict], tree: Tree, counts: np.ndarray, packed: dict[int, dict]) -> None:
    """Add new windows, tokens, documents, samples and pad tokens to the node records above them (add)."""
    for records, totals in zip(levels, node_totals(tree, counts, packed)):
        for i, record in enumerate(records['nodes']):
            for name, values in totals.items():
                record[name] += int(values[i])


def fingerprint(manifest: dict, root: str, num_leaves: int) -> str:
    """Hash of everything that defines the index's content (not timings or paths)."""
    digest = hashlib.sha256()
    stable = {k: manifest[k] for k in ('format_version', 'options', 'tree', 'totals')}
    # Where the tokenizer file lived is not content (its bytes are hashed below).
    stable['options'] = dict(stable['options'], tokenizer={
        k: v for k, v in manifest['options']['tokenizer'].items() if k != 'source'})
    # How the text was stored (JSON lines or Parquet, compressed or not) is not content: file sizes are left out.
    stable['totals'] = {k: v for k, v in manifest['totals'].items() if k != 'input_bytes'}
    stable['inputs'] = [{k: v for k, v in s.items() if k not in ('path', 'bytes', 'etag')} for s in manifest['inputs']]
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
        digest.update(sha256_file(os.path.join(root, leaf_index_name(leaf))).encode())
    return digest.hexdigest()


def finish_manifest(manifest: dict, root: str, num_leaves: int) -> dict:
    """Bundle the leaf indexes, fingerprint the content and write the manifest into `root`."""
    write_leaf_indexes(root, num_leaves)
    manifest['leaf_indexes_sha256'] = sha256_file(os.path.join(root, LEAF_INDEXES))
    manifest['fingerprint'] = fingerprint(manifest, root, num_leaves)
    with replacing(os.path.join(root, MANIFEST)) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(manifest, handle, indent=1, sort_keys=True)
    return manifest
