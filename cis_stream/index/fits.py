"""The two fits of a build: the embedder (lsi) and the k-means tree, each on a seeded sample.

Rank 0 fits and saves; every rank then loads the saved result. The samples are drawn over the
global window order (windows numbered in input order across parts), and the fits run on one
thread, so neither depends on how many processes share the work, nor on the core count.
"""

from __future__ import annotations

import os

import numpy as np

from cis_stream.embedders import embedder_class, load_embedder, make_embedder
from cis_stream.embedders.base import Embedder
from cis_stream.format.files import replacing
from cis_stream.index.dist import one_thread
from cis_stream.index.options import IndexOptions
from cis_stream.index.parts import EMBEDDINGS_FILE
from cis_stream.index.spool import WindowSpool
from cis_stream.index.work import PartWork
from cis_stream.tree import Tree, fit_tree

# Default sample sizes: windows to fit the lsi embedder on, and points per leaf to fit the tree on.
# The lsi fit sample is counted in tokens, since IDF and SVD statistics come from the text, not the
# window count (and the randomized SVD's cost grows with it): random windows until 2.56M tokens
# (10,000 full windows of 256 tokens, 2,500 of 1,024), never fewer than 1,000 or more than 10,000.
EMBEDDER_FIT_TOKENS = 2_560_000
EMBEDDER_FIT_WINDOWS = (1000, 10000)
TREE_FIT_POINTS_PER_LEAF = 40
TREE_FIT_MIN_SAMPLE = 100000


def global_rows(window_counts: np.ndarray, rows: np.ndarray):
    """(part, local rows) for sorted global window numbers."""
    offsets = np.concatenate([[0], np.cumsum(window_counts)])
    owner = np.searchsorted(offsets, rows, side='right') - 1
    for part in np.unique(owner):
        yield int(part), rows[owner == part] - offsets[part]


def embedder_fit_rows(work: PartWork, window_counts: np.ndarray, options: IndexOptions) -> np.ndarray:
    """Sorted global window numbers of the embedder's seeded fit sample (see EMBEDDER_FIT_TOKENS)."""
    total = int(window_counts.sum())
    rng = np.random.default_rng(options.seed)
    if options.embedder_fit_sample:
        return np.sort(rng.choice(total, min(total, options.embedder_fit_sample), replace=False))
    low, high = EMBEDDER_FIT_WINDOWS
    candidates = rng.choice(total, min(total, high), replace=False)  # in random order
    rows = np.sort(candidates)
    lengths = np.concatenate([WindowSpool.open(work.part_dir(part)).lengths[local]
                              for part, local in global_rows(window_counts, rows)])[np.searchsorted(rows, candidates)]
    count = max(low, int(np.searchsorted(np.cumsum(lengths), EMBEDDER_FIT_TOKENS)) + 1)
    return np.sort(candidates[:count])


def fit_embedder(work: PartWork, window_counts: np.ndarray, options: IndexOptions,
                 path: str) -> tuple[Embedder, int | None]:
    """The embedder saved at `path` (fitted there by rank 0 if missing), and its fit sample size."""
    fitted, sample_size = None, None
    needs_fit = embedder_class(options.embedder).needs_fit
    if work.group.leader and needs_fit:
        sample = embedder_fit_rows(work, window_counts, options)  # cheap: recomputed on resume, for the manifest
        sample_size = len(sample)
    if work.group.leader and not os.path.exists(path):
        fitted = make_embedder(options.embedder, **options.embedder_config)
        if needs_fit:
            windows = [window for part, rows in global_rows(window_counts, sample)
                       for window in WindowSpool.open(work.part_dir(part)).windows_for(fitted, rows)]
            # One step, but its line shows what the build is doing meanwhile, and then how long it took.
            with work.bar(1, 'fit', f'fit embedder on {len(windows):,} windows') as bar, one_thread():
                fitted.fit(windows, options.seed)
                bar.update(1)
        with replacing(path) as tmp:
            os.makedirs(tmp)
            fitted.save(tmp)
    work.group.barrier()
    return fitted or load_embedder(options.embedder, options.embedder_config, path), sample_size


def fit_tree_on_sample(work: PartWork, window_counts: np.ndarray, options: IndexOptions,
                       path: str) -> tuple[Tree, int]:
    """The tree saved at `path` (fitted there by rank 0 if missing), and its fit sample size."""
    total = int(window_counts.sum())
    wanted = options.tree_fit_sample or max(TREE_FIT_MIN_SAMPLE, TREE_FIT_POINTS_PER_LEAF * options.levels[-1])
    rows = np.sort(np.random.default_rng(options.seed + 1).choice(total, min(total, wanted), replace=False))
    if work.group.leader and not os.path.exists(path):
        sample = np.concatenate([np.load(os.path.join(work.part_dir(part), EMBEDDINGS_FILE), mmap_mode='r')[local]
                                 for part, local in global_rows(window_counts, rows)])
        with one_thread(), replacing(path) as tmp:
            fit_tree(sample, options.levels, options.seed, work.progress).save(tmp)
    work.group.barrier()
    return Tree.load(path), len(rows)
