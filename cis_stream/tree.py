"""Hierarchical k-means (faiss) and top-down assignment.

`levels=[16, 256]` means 16 top clusters, each split into 256 / 16 = 16 children, so the second
level has 256 nodes before pruning. Each node's children are fit with faiss k-means on the sample
members that reach that node, with a seed derived from (seed, level, node). After the whole corpus
is assigned, nodes that received nothing are pruned (and counted in the manifest): removing a
centroid that nothing is nearest to changes no assignment, so the pruned tree assigns every
window exactly as before and no leaf is ever empty.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

KMEANS_ITERATIONS = 20
KMEANS_PP_POINTS_PER_CLUSTER = 64


def _node_seed(seed: int, level: int, node: int) -> int:
    return (seed * 1_000_003 + level * 100_003 + node) % (2 ** 31 - 1)


def check_levels(levels: list[int]) -> None:
    if not levels or any(n < 1 for n in levels):
        raise ValueError(f'--levels {levels}: give positive cluster counts, e.g. 16,256')
    for upper, lower in zip(levels, levels[1:]):
        if lower % upper or lower <= upper:
            raise ValueError(f'--levels {levels}: each level must be a larger multiple of the one above '
                             f'({lower} is not a multiple of {upper} greater than it)')


def _kmeans(points: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Centroids of `points` (k is capped at the number of distinct points).

    faiss's random initialisation often merges well-separated clusters; seeding it with
    k-means++ (scikit-learn's, on a seeded subsample) recovers them reliably.
    """
    # faiss and scikit-learn are imported here, not above: the command line checks --levels through this
    # module before any slow import (index/options.py).
    import faiss
    from sklearn.cluster import kmeans_plusplus
    k = min(k, len(np.unique(points, axis=0)))
    if k <= 1:
        return points.mean(axis=0, keepdims=True).astype(np.float32)
    points = np.ascontiguousarray(points, dtype=np.float32)
    rng = np.random.default_rng(seed)
    subsample = points[np.sort(rng.choice(len(points), min(len(points), KMEANS_PP_POINTS_PER_CLUSTER * k),
                                          replace=False))]
    init, _ = kmeans_plusplus(subsample, k, random_state=seed)
    kmeans = faiss.Kmeans(points.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed,
                          max_points_per_centroid=len(points), min_points_per_centroid=1)
    kmeans.train(points, init_centroids=np.ascontiguousarray(init, dtype=np.float32))
    return np.asarray(kmeans.centroids, dtype=np.float32)


def _nearest(points: np.ndarray, centroids: np.ndarray) -> np.ndarray:
    import faiss
    _, labels = faiss.knn(np.ascontiguousarray(points, dtype=np.float32),
                          np.ascontiguousarray(centroids, dtype=np.float32), 1)
    return labels[:, 0].astype(np.int64)


@dataclass
class Tree:
    """Centroids per level; `parents[l][j]` is the node at level l-1 above node j of level l."""
    centroids: list[np.ndarray]
    parents: list[np.ndarray]

    @property
    def sizes(self) -> list[int]:
        return [len(c) for c in self.centroids]

    def children(self, level: int) -> list[np.ndarray]:
        """For each node at `level`, the ids of its children at `level + 1`."""
        parents = self.parents[level + 1]
        order = np.argsort(parents, kind='stable')
        bounds = np.searchsorted(parents[order], np.arange(len(self.centroids[level]) + 1))
        return [order[bounds[i]:bounds[i + 1]] for i in range(len(self.centroids[level]))]

    def assign(self, points: np.ndarray) -> np.ndarray:
        """Node id at every level for each point, going top-down: int64 [n, levels]."""
        out = np.empty((len(points), len(self.centroids)), dtype=np.int64)
        out[:, 0] = _nearest(points, self.centroids[0])
        for level in range(1, len(self.centroids)):
            for parent, kids in enumerate(self.children(level - 1)):
                rows = np.flatnonzero(out[:, level - 1] == parent)
                if len(rows):
                    out[rows, level] = kids[_nearest(points[rows], self.centroids[level][kids])]
        return out

    def prune(self, counts_per_level: list[np.ndarray]) -> tuple['Tree', list[np.ndarray]]:
        """Drop nodes with zero count; return the new tree and old→new id maps (-1 = dropped)."""
        remaps, centroids, parents = [], [], []
        for level, counts in enumerate(counts_per_level):
            keep = np.flatnonzero(counts > 0)
            remap = np.full(len(counts), -1, dtype=np.int64)
            remap[keep] = np.arange(len(keep))
            remaps.append(remap)
            centroids.append(self.centroids[level][keep])
            parents.append(remaps[level - 1][self.parents[level][keep]] if level else
                           np.full(len(keep), -1, dtype=np.int64))
        return Tree(centroids, parents), remaps

    def save(self, path: str) -> None:
        arrays = {}
        for level, (c, p) in enumerate(zip(self.centroids, self.parents)):
            arrays[f'centroids_{level}'] = c
            arrays[f'parents_{level}'] = p
        np.savez(path, **arrays)

    @classmethod
    def load(cls, path: str) -> 'Tree':
        with np.load(path, allow_pickle=False) as data:
            n = len([k for k in data.files if k.startswith('centroids_')])
            return cls([data[f'centroids_{i}'] for i in range(n)], [data[f'parents_{i}'] for i in range(n)])


def fit_tree(sample: np.ndarray, levels: list[int], seed: int, progress: bool = False) -> Tree:
    """Fit the hierarchy on `sample` (a seeded subset of the corpus embeddings)."""
    check_levels(levels)
    centroids = [_kmeans(sample, levels[0], _node_seed(seed, 0, 0))]
    parents = [np.full(len(centroids[0]), -1, dtype=np.int64)]
    membership = _nearest(sample, centroids[0])
    for level in range(1, len(levels)):
        per_parent = levels[level] // levels[level - 1]
        level_centroids, level_parents = [], []
        for parent in tqdm(range(len(centroids[level - 1])), desc=f'fit tree level {level}', unit='node',
                           disable=not progress):
            members = sample[membership == parent]
            kids = (_kmeans(members, per_parent, _node_seed(seed, level, parent)) if len(members)
                    else centroids[level - 1][parent:parent + 1])  # no sample member: one child, itself
            level_centroids.append(kids)
            level_parents.append(np.full(len(kids), parent, dtype=np.int64))
        centroids.append(np.concatenate(level_centroids))
        parents.append(np.concatenate(level_parents))
        membership = Tree(centroids, parents).assign(sample)[:, level]
    return Tree(centroids, parents)
