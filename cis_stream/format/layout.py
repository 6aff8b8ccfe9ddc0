"""The names of everything in a published index, once: files, folders, the staging directory."""

from __future__ import annotations

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


class NotAnIndexError(ValueError):
    """A path that is not a (complete, readable) cis_stream index."""


def leaf_dir_name(leaf: int) -> str:
    return f'{leaf:05d}'


def leaf_index_name(leaf: int) -> str:
    return f'{CLUSTERS_DIR}/{leaf_dir_name(leaf)}/index.json'


def staging_dir(out: str) -> str:
    return f'{out}.building'


LEAF_INDEX = 'index.json'
