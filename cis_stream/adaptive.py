"""Adaptive phases: a phase's proportions set at its start from what the model still gets wrong.

The rule (in the spirit of online domain reweighting, e.g. ADO and ODM, at the tree's top level):
the model's per-token loss on the specialist validation text, grouped by the cluster each of its
windows falls in, measures where the specialist domain is still hard for the model. Each cluster's
mass in the phase's base mixture is multiplied by exp(step × (its loss − the mass-weighted mean
loss)), then the mixture is renormalised; leaves keep their shares inside their cluster, clusters
without validation text keep their factor of 1, and a zero stays zero. The specialist stream's
share, if the base mixes one in, is kept.

One process measures and writes the phase's proportions to a file in the run's `adapt_dir`
(`phase-K.weights.json`); every rank and loader worker reads that file when the phase's first
epoch is drawn, so all agree, and a resumed run replays the file instead of measuring again.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

import numpy as np

from cis_stream.format.files import replacing
from cis_stream.format.reader import CISIndex
from cis_stream.format.validate import check_proportions
from cis_stream.text.inputs import input_sha256
from cis_stream.text.readers import Document, expand_inputs, read_documents
from cis_stream.training.config import check_keys

ADAPT_KEYS = {'validation', 'step', 'level'}
ADAPTED_FORMAT = 'cis_stream.adapted_phase/1'


@dataclass(frozen=True)
class AdaptRule:
    """`adapt:` of a phase: the specialist validation files, the step size and the tree level."""
    validation: tuple[str, ...]
    step: float = 1.0
    level: int = 0

    @classmethod
    def parse(cls, spec: object, where: str) -> AdaptRule:
        check_keys(f'{where}: adapt', spec, ADAPT_KEYS)
        files = spec.get('validation')
        if isinstance(files, str):
            files = [files]
        if not files or not all(isinstance(f, str) for f in files):
            raise ValueError(f'{where}: adapt.validation must name the specialist validation file(s) the model '
                             f'is measured on at the phase boundary')
        step, level = spec.get('step', 1.0), spec.get('level', 0)
        if isinstance(step, bool) or not isinstance(step, (int, float)) or not 0 < step <= 100:
            raise ValueError(f'{where}: adapt.step must be a number in (0, 100], got {step!r}')
        if isinstance(level, bool) or not isinstance(level, int) or level < 0:
            raise ValueError(f'{where}: adapt.level must be a tree level (0 = the top), got {level!r}')
        return cls(tuple(files), float(step), level)

    def fingerprint(self) -> list:
        """What the phase's draw depends on besides the model: the rule and the validation text."""
        try:
            hashes = [input_sha256(path) for path in expand_inputs(list(self.validation))]
        except (FileNotFoundError, ValueError) as err:
            raise ValueError(f'adapt.validation: {err}') from None
        return ['adapt', hashes, self.step, self.level]


def adapted_path(adapt_dir: str, phase: int) -> str:
    """Where phase `phase` (0-based) keeps its measured proportions."""
    return os.path.join(adapt_dir, f'phase-{phase + 1}.weights.json')


def reweigh(leaf_proportions: np.ndarray, leaf_clusters: np.ndarray, cluster_loss: dict[int, float],
            step: float) -> tuple[np.ndarray, dict]:
    """The rule: scale each cluster's mass by exp(step × (loss − mean loss)); returns the new leaf
    proportions and a record of the cluster masses before and after."""
    p = np.asarray(leaf_proportions, dtype=np.float64)
    masses = np.bincount(leaf_clusters, weights=p, minlength=int(leaf_clusters.max()) + 1)
    measured = [c for c in cluster_loss if masses[c] > 0]
    factor = np.ones(len(masses))
    if measured:
        weight = np.array([masses[c] for c in measured])
        mean = float(np.dot(weight, [cluster_loss[c] for c in measured]) / weight.sum())
        for c in measured:
            factor[c] = np.exp(step * (cluster_loss[c] - mean))
    new = p * factor[leaf_clusters]
    new /= new.sum()
    after = np.bincount(leaf_clusters, weights=new, minlength=len(masses))
    record = {str(c): {'mass_before': float(masses[c]), 'mass_after': float(after[c]),
                       **({'loss': float(cluster_loss[c])} if c in cluster_loss else {})}
              for c in range(len(masses)) if masses[c] > 0 or c in cluster_loss}
    return new, record


class ValidationText:
    """The specialist validation text as the index's windows: each window's tokens and its cluster."""

    def __init__(self, index: CISIndex, rule: AdaptRule):
        texts = [doc.text for doc in read_documents(expand_inputs(list(rule.validation)))
                 if isinstance(doc, Document)]
        if not texts:
            raise ValueError(f'adapt.validation {list(rule.validation)}: no usable document')
        windows, nodes = index.place_windows(texts)
        starts = np.concatenate([[0], np.cumsum(windows.lengths)[:-1]]).astype(np.int64)
        self.windows = [windows.tokens[a:a + n] for a, n in zip(starts, windows.lengths)]
        self.clusters = nodes[:, rule.level].astype(np.int64)


def write_adapted(path: str, index: CISIndex, mixture_fingerprint: str, phase: int, proportions: np.ndarray,
                  rule: AdaptRule, clusters: dict, batch: int) -> None:
    """The measured phase as a small JSON file, written whole (temporary name, then renamed)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    record = {'format': ADAPTED_FORMAT, 'index_fingerprint': index.fingerprint, 'mixture': mixture_fingerprint,
              'phase': phase + 1, 'measured_after_batch': batch,
              'rule': {'validation': list(rule.validation), 'step': rule.step, 'level': rule.level},
              'clusters': clusters, 'leaf_proportions': [float(x) for x in proportions]}
    with replacing(path) as tmp, open(tmp, 'w', encoding='utf-8') as handle:
        json.dump(record, handle, indent=1)


def read_adapted(path: str, index: CISIndex, mixture_fingerprint: str, phase: int) -> np.ndarray:
    """A measured phase's leaf proportions, checked to belong to this index, run and phase."""
    advice = ('it is written at the phase boundary by the adaptive-mixture callback (train.py adds it; with '
              'llm-foundry add `cis_adaptive_mixture`)')
    try:
        with open(path, encoding='utf-8') as handle:
            record = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f'schedule phase {phase + 1} is adaptive, but {path} does not exist yet: {advice}') from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f'{path}: not an adapted phase file ({err}); delete it to measure the phase again') from None
    if record.get('format') != ADAPTED_FORMAT or record.get('phase') != phase + 1:
        raise ValueError(f'{path}: not the adapted file of phase {phase + 1}; delete it to measure again')
    if record.get('index_fingerprint') != index.fingerprint or record.get('mixture') != mixture_fingerprint:
        raise ValueError(f'{path} was measured for another index or schedule (mixture {record.get("mixture")}, '
                         f'this run is {mixture_fingerprint}): use a fresh adapt_dir for a new run')
    check_proportions(record.get('leaf_proportions'), path, index.num_leaves)
    return np.asarray(record['leaf_proportions'], dtype=np.float64)
