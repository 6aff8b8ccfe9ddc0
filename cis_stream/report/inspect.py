"""`cis-stream inspect`: what an index holds, and what a mixture will draw from it.

The printed summary uses only the manifest and the weights file. The HTML report adds plots
(matplotlib, Agg backend) and, for the top clusters, a few samples decoded from their own shards
with the index's tokenizer, plus their top terms.

Top terms: the decoded samples of each shown cluster are joined into one document, and
scikit-learn's TfidfVectorizer (English stop words dropped, words of three or more letters,
sublinear tf) scores the words across the shown clusters. A cluster's terms are then the words
that are frequent in it and rare in the other shown clusters.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from cis_stream.format.reader import CISIndex
from cis_stream.format.samples import LeafSamples
from cis_stream.weights import effective_sample_fraction, read_weights

TOP_CLUSTERS = 10
TERM_SAMPLES = 32      # samples decoded per shown cluster for its top terms
SNIPPETS = 3           # of those, shown as text
SNIPPET_CHARS = 600
TOP_TERMS = 8
STALE_NOTE = ('the target_histogram in the weights file does not match its leaf_proportions (edited by hand?); '
              'every figure shown is computed from the leaf proportions, which are what training draws')


@dataclass
class Inspection:
    """The numbers behind the summary and the report."""
    index: CISIndex
    weights: dict | None = None
    weights_path: str | None = None
    budget_samples: int | None = None      # samples drawn for the token budget
    budget_source: str = ''
    repeats: np.ndarray | None = None      # expected passes over each leaf for the budget

    @property
    def level(self) -> int:
        """The weights' level; without weights, the leaves."""
        return self.weights['level'] if self.weights else len(self.index.levels) - 1

    def generalist(self, level: int) -> np.ndarray:
        """P(c|gen) over windows, as `cis-stream weights` defines it."""
        windows = self.index.counts(level, 'windows').astype(np.float64)
        return windows / windows.sum()

    def specialist(self, level: int) -> np.ndarray:
        """P(c|spec) at any level: the task-weighted mix of each task's window histogram."""
        tasks = self.weights['tasks']
        total = sum(t['weight'] for t in tasks)
        return sum(t['weight'] / total * np.asarray(t['windows_per_level'][level], np.float64) / t['windows']
                   for t in tasks)

    @property
    def target(self) -> np.ndarray:
        """The mixture at `level` as training draws it: the leaf proportions summed per cluster (the
        file's target_histogram says the same unless the file was edited by hand: `stale_target`)."""
        return np.bincount(self.index.leaf_ancestors(self.level), weights=self.weights['leaf_proportions'],
                           minlength=self.index.levels[self.level])

    @property
    def stale_target(self) -> bool:
        """The file's recorded target_histogram disagrees with its leaf proportions."""
        recorded = np.asarray(self.weights.get('target_histogram', []), np.float64)
        return recorded.shape != self.target.shape or not np.allclose(recorded, self.target, rtol=0, atol=1e-9)

    @property
    def ranking(self) -> np.ndarray:
        """Clusters of `level`, by target weight (with weights) or by samples, then by id."""
        key = self.target if self.weights else self.index.counts(self.level, 'samples')
        return np.argsort(-key, kind='stable')

    @property
    def ess_fraction(self) -> float:
        return effective_sample_fraction(self.target, self.generalist(self.level))


def inspect_index(index_path: str, weights_path: str | None = None, tokens: int | None = None) -> Inspection:
    """Open the index (and weights, checked against it); expected repetition for `tokens`."""
    index = CISIndex.open(index_path)
    if weights_path is None:
        if tokens is not None:
            raise ValueError('--tokens needs --weights: repetition depends on the mixture')
        return Inspection(index)
    weights = read_weights(weights_path, index)
    seq_len = index.manifest['options']['seq_len']
    if tokens is not None:
        if tokens < seq_len:
            raise ValueError(f'--tokens {tokens}: less than one sample of {seq_len} tokens')
        budget, source = tokens // seq_len, f'--tokens {tokens:,}'
    else:
        recorded = weights['options'].get('tokens')
        budget = int(weights['budget_samples'])
        source = (f'the --tokens {recorded:,} recorded in {os.path.basename(weights_path)}' if recorded
                  else 'one pass over the pool, as in the weights file')
    proportions = np.asarray(weights['leaf_proportions'], np.float64)
    repeats = proportions * budget / index.leaf_samples
    return Inspection(index, weights, weights_path, budget, source, repeats)


# ---- the HTML report -------------------------------------------------------------------------

@dataclass
class ClusterView:
    """One shown cluster: sizes, mixture numbers, top terms and decoded snippets."""
    cluster: int
    leaves: np.ndarray
    documents: int
    samples: int
    tokens: int
    terms: list[str] = field(default_factory=list)
    snippets: list[tuple[int, int, str]] = field(default_factory=list)   # (leaf, sample, text)


def spread_samples(leaves: np.ndarray, leaf_samples: np.ndarray, n: int) -> list[tuple[int, int]]:
    """`n` (leaf, sample) pairs evenly spaced over the cluster's leaves' samples, in leaf order."""
    ends = np.cumsum(leaf_samples[leaves])
    positions = np.unique(np.linspace(0, ends[-1] - 1, min(n, int(ends[-1]))).round().astype(np.int64))
    slots = np.searchsorted(ends, positions, side='right')
    starts = np.concatenate([[0], ends[:-1]])
    return [(int(leaves[s]), int(p - starts[s])) for s, p in zip(slots, positions)]


def top_terms(documents: list[str], k: int = TOP_TERMS) -> list[list[str]]:
    """The `k` highest TF-IDF words of each document against the others (module docstring)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    vectorizer = TfidfVectorizer(stop_words='english', token_pattern=r'(?u)\b[^\W\d_]{3,}\b',
                                 sublinear_tf=True)
    try:
        scores = vectorizer.fit_transform(documents).toarray()
    except ValueError:        # no word at all (e.g. only digits or stop words)
        return [[] for _ in documents]
    vocabulary = vectorizer.get_feature_names_out()
    return [[str(vocabulary[j]) for j in np.argsort(-row, kind='stable')[:k] if row[j] > 0] for row in scores]


def describe_clusters(insp: Inspection, top: int, progress: bool = True) -> list[ClusterView]:
    """Sizes, decoded snippets and top terms of the `top` first clusters of the ranking."""
    index, level = insp.index, insp.level
    ancestors = index.leaf_ancestors(level)
    counts = {f: index.counts(level, f) for f in ('documents', 'samples', 'tokens')}
    views, texts = [], []
    with LeafSamples(index) as reader:
        for c in tqdm(insp.ranking[:top], desc='decode samples', unit='cluster', disable=not progress):
            leaves = np.flatnonzero(ancestors == c)
            picks = spread_samples(leaves, index.leaf_samples, TERM_SAMPLES)
            decoded = [reader.text(leaf, sample) for leaf, sample in picks]
            shown = np.unique(np.linspace(0, len(picks) - 1, SNIPPETS).round().astype(int))
            views.append(ClusterView(int(c), leaves, *(int(counts[f][c]) for f in ('documents', 'samples', 'tokens')),
                                     snippets=[(*picks[i], decoded[i]) for i in shown]))
            texts.append(' '.join(decoded))
    for view, terms in zip(views, top_terms(texts)):
        view.terms = terms
    return views


