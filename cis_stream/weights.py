"""Specialist mixture weights: histogram over the index's clusters → proportions over leaves.

CRISP step 3: the specialist sample goes down the index's own tree (same tokenizer, window,
embedder); its histogram P(c|spec) at a level L, optionally smoothed with P(c|gen) and mixed
over several tasks, is the target. Each level-L node's mass is spread over the leaves below it
in proportion to their generalist sample counts (uniform inside the cluster). An optional
max-repeat cap bounds the passes over any leaf for a token budget. Optionally the specialist
sample itself joins the mixture as one more stream (specialist.py), at a fixed fraction or at the
fraction that repeats it a given number of times over the budget.

The weights file is a pure function of (index fingerprint, specialist inputs, options): no
timestamps, canonical JSON, so the same inputs give the same bytes.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import asdict, dataclass

import numpy as np

from cis_stream.format.files import canonical_json, replacing
from cis_stream.format.reader import CISIndex
from cis_stream.format.validate import WEIGHTS_ADVICE, check_proportions, check_specialist, check_weights
from cis_stream.mixture import cap_proportions
from cis_stream.specialist import build_stream, fraction_for, stream_record
from cis_stream.text.inputs import input_bytes, input_sha256
from cis_stream.text.readers import Document, expand_inputs, read_documents

log = logging.getLogger(__name__)

WEIGHTS_FORMAT = 'cis_stream.weights/1'
# Specialist documents placed per call (bounds memory for large specialist sets).
PLACE_BATCH_DOCS = 512


@dataclass
class WeightOptions:
    level: int | None = None
    # Default level rule: the deepest level whose occupied clusters hold on average at least this
    # many specialist windows (few windows per cluster means a noisy, overfitting histogram).
    min_per_cluster: float = 10.0
    smoothing: float = 0.0
    max_repeat: float | None = None
    tokens: int | None = None
    text_field: str = 'text'
    # The specialist sample as a stream of its own (specialist.py): passes over it in --tokens, or a
    # fixed share of the mixture; screened against the index's eval files unless decontaminate=False.
    specialist_repeats: float | None = None
    specialist_fraction: float | None = None
    specialist_max_fraction: float = 0.25
    decontaminate: bool = True

    @property
    def with_specialist(self) -> bool:
        return self.specialist_repeats is not None or self.specialist_fraction is not None

    def validate(self, index: CISIndex) -> None:
        if self.level is not None and not 0 <= self.level < len(index.levels):
            raise ValueError(f'--level {self.level}: the index has levels 0..{len(index.levels) - 1}')
        if not 0.0 <= self.min_per_cluster < float('inf'):  # also refuses NaN
            raise ValueError(f'--min-per-cluster {self.min_per_cluster}: must be a number of windows >= 0 '
                             f'(0 takes the deepest level)')
        if not 0.0 <= self.smoothing <= 1.0:
            raise ValueError(f'--smoothing {self.smoothing}: must be between 0 and 1')
        if self.max_repeat is not None and self.tokens is None:
            raise ValueError('--max-repeat needs --tokens: the cap is in passes over a leaf for a training '
                             'budget of --tokens')
        if self.specialist_repeats is not None and self.tokens is None:
            raise ValueError('--specialist-repeats needs --tokens: it sets the share of the specialist stream so '
                             'that the sample is seen that many times in a training budget of --tokens')
        if self.tokens is not None and self.max_repeat is None and self.specialist_repeats is None:
            raise ValueError('--tokens is the budget of --max-repeat or --specialist-repeats: give one of them too')
        if self.tokens is not None and self.tokens < index.manifest['options']['seq_len']:
            raise ValueError(f'--tokens {self.tokens}: the budget must hold at least one sample of '
                             f"{index.manifest['options']['seq_len']} tokens")
        for name, value in (('--max-repeat', self.max_repeat), ('--specialist-repeats', self.specialist_repeats)):
            if value is not None and not 0 < value < float('inf'):
                raise ValueError(f'{name} {value}: must be a positive number of passes')
        for name, value in (('--specialist-fraction', self.specialist_fraction),
                            ('--specialist-max-fraction', self.specialist_max_fraction)):
            if value is not None and not 0 < value < 1:
                raise ValueError(f'{name} {value}: must be between 0 and 1 (exclusive): a share of the mixture '
                                 f'drawn from the specialist sample')
        if self.specialist_repeats is not None and self.specialist_fraction is not None:
            raise ValueError('give either --specialist-repeats (with --tokens) or --specialist-fraction, not both')


def parse_task(spec: str) -> tuple[list[str], float]:
    """'a.jsonl,b.jsonl:0.7' → (['a.jsonl', 'b.jsonl'], 0.7)."""
    files, sep, weight = spec.rpartition(':')
    try:
        value = float(weight)
    except ValueError:
        value = -1.0
    if not sep or not files or value <= 0:
        raise ValueError(f'--task {spec!r}: expected FILE[,FILE...]:WEIGHT with a positive weight')
    return files.split(','), value


def place_specialist(index: CISIndex, files: list[str], text_field: str) -> tuple[np.ndarray, list[dict]]:
    """Send specialist files down the tree: node ids per window [windows, levels], input records.

    A record that cannot be read is counted, and listed with its line and reason in its input's
    record (`rejects`), which the weights file keeps.
    """
    paths = expand_inputs(files)
    records = {p: {'name': os.path.basename(p), 'bytes': input_bytes(p), 'sha256': input_sha256(p),
                   'documents': 0, 'rejected': 0, 'rejects': []} for p in paths}
    nodes, texts = [], []
    for item in read_documents(paths, text_field):
        record = records[item.path]
        if isinstance(item, Document):
            record['documents'] += 1
            texts.append(item.text)
            if len(texts) >= PLACE_BATCH_DOCS:
                nodes.append(index.place(texts).nodes)
                texts = []
        else:
            record['rejected'] += 1
            record['rejects'].append({'line': item.line, 'reason': item.reason})
    if texts:
        nodes.append(index.place(texts).nodes)
    if not nodes:
        raise ValueError(f'no usable specialist document in {", ".join(files)}: '
                         f'{describe_rejects(list(records.values()))}')
    return np.concatenate(nodes), list(records.values())


def describe_rejects(inputs: list[dict], shown: int = 3) -> str:
    """'N rejected {reason: count}; e.g. file:line: reason, ...' for input records."""
    found = [(record['name'], reject) for record in inputs for reject in record.get('rejects', [])]
    kinds: dict[str, int] = {}
    for _, reject in found:
        kind = reject['reason'].split(':')[0]
        kinds[kind] = kinds.get(kind, 0) + 1
    examples = '; '.join(f"{name}:{reject['line']}: {reject['reason']}" for name, reject in found[:shown])
    return f'{len(found)} rejected {dict(sorted(kinds.items()))}' + (f'; e.g. {examples}' if found else '')


def choose_level(index: CISIndex, specialist_nodes: np.ndarray, min_per_cluster: float) -> int:
    """The deepest level whose occupied clusters average at least `min_per_cluster` windows."""
    for level in range(len(index.levels) - 1, -1, -1):
        occupied = len(np.unique(specialist_nodes[:, level]))
        if len(specialist_nodes) / occupied >= min_per_cluster:
            return level
    return 0


def level_and_rule(index: CISIndex, specialist_nodes: np.ndarray, options: WeightOptions) -> tuple[int, str]:
    """The histogram's level and how it was chosen; warns when even the top level is too fine for
    the specialist sample (fewer than `min_per_cluster` windows per occupied cluster)."""
    windows, occupied = len(specialist_nodes), len(np.unique(specialist_nodes[:, 0]))
    rule = f'{options.min_per_cluster:g} specialist windows per occupied cluster'
    small = None
    if windows / occupied < options.min_per_cluster:
        small = (f'{windows} specialist window(s) over {occupied} occupied top-level cluster(s) '
                 f'({windows / occupied:.1f} per cluster, fewer than the {rule} of --min-per-cluster)')
        log.warning('the specialist sample is too small even for the top level: %s; its histogram is noisy: give '
                    'more specialist text, or --smoothing to mix in the generalist histogram', small)
    if options.level is not None:
        return options.level, 'given'
    if small:
        return 0, f'the top level, as the sample is too small for any: {small}'
    return choose_level(index, specialist_nodes, options.min_per_cluster), f'deepest with >= {rule}'


def spread_to_leaves(index: CISIndex, level: int, node_mass: np.ndarray) -> np.ndarray:
    """Spread each level-`level` node's mass over its leaves by their generalist sample counts."""
    ancestor = index.leaf_ancestors(level)
    leaf_samples = index.leaf_samples.astype(np.float64)
    node_samples = np.bincount(ancestor, weights=leaf_samples, minlength=index.levels[level])
    return node_mass[ancestor] * leaf_samples / node_samples[ancestor]


def effective_sample_fraction(target: np.ndarray, generalist: np.ndarray) -> float:
    """Importance sampling's effective sample size as a fraction of the pool: 1 / Σ p(c)²/q(c).

    Drawing the pool (q = P(c|gen)) reweighted to p costs this share of its samples' worth of
    information; 1 means p = q, small means a few clusters carry the mixture.
    """
    seen = generalist > 0
    return 1.0 / float(np.sum(target[seen] ** 2 / generalist[seen]))


def compute_weights(index: str | CISIndex, tasks: list[tuple[list[str], float]],
                    options: WeightOptions | None = None, output: str | None = None, progress: bool = True) -> dict:
    """The weights record for `tasks` ([(files, weight)], one task for a single specialist set).

    With a specialist stream (options.with_specialist), the stream is built beside `output`, the
    weights file to be written (specialist.stream_dir), from every task's files.
    """
    index = index if isinstance(index, CISIndex) else CISIndex.open(index)
    options = options or WeightOptions()
    options.validate(index)
    if options.with_specialist and output is None:
        raise ValueError('a specialist stream is built beside its weights file: pass output=')
    placed = [(place_specialist(index, files, options.text_field), weight) for files, weight in tasks]
    all_nodes = np.concatenate([nodes for (nodes, _), _ in placed])
    level, level_rule = level_and_rule(index, all_nodes, options)
    size = index.levels[level]
    generalist = index.counts(level, 'windows').astype(np.float64)
    generalist /= generalist.sum()
    task_records, specialist = [], np.zeros(size)
    total_weight = sum(weight for _, weight in placed)
    for (nodes, inputs), weight in placed:
        histogram = np.bincount(nodes[:, level], minlength=size) / len(nodes)
        specialist += weight / total_weight * histogram
        task_records.append({'weight': weight, 'inputs': inputs, 'windows': int(len(nodes)),
                             'windows_per_level': [np.bincount(nodes[:, level], minlength=n).tolist()
                                                   for level, n in enumerate(index.levels)]})
    target = (1 - options.smoothing) * specialist + options.smoothing * generalist
    leaf = spread_to_leaves(index, level, target)
    leaf_samples = index.leaf_samples
    seq_len = index.manifest['options']['seq_len']
    budget = (options.tokens // seq_len) if options.tokens else int(leaf_samples.sum())
    stream = None
    if options.with_specialist:
        files = [path for files, _ in tasks for path in files]
        built = build_stream(index, files, output, options.text_field, options.decontaminate, progress)
        fraction = fraction_for(int(built.leaf_samples.sum()), budget, options.specialist_repeats,
                                           options.specialist_fraction, options.specialist_max_fraction)
        stream = stream_record(built, fraction, options.specialist_repeats, budget)
    leaves_budget = budget * (1 - stream['fraction'] if stream else 1)  # the leaves' share of the draws
    if options.max_repeat is not None:
        leaf = cap_proportions(leaf, options.max_repeat * leaf_samples / leaves_budget)
    leaf = leaf / leaf.sum()
    final_node = np.bincount(index.leaf_ancestors(level), weights=leaf, minlength=size)
    importance = np.divide(final_node, generalist, out=np.zeros(size), where=generalist > 0)
    ess_fraction = effective_sample_fraction(final_node, generalist)
    return {
        'format': WEIGHTS_FORMAT,
        'index_fingerprint': index.fingerprint,
        'options': asdict(options),
        'level': level,
        'level_rule': level_rule,
        'tasks': task_records,
        'generalist_histogram': generalist.tolist(),
        'specialist_histogram': specialist.tolist(),
        'target_histogram': final_node.tolist(),
        'importance_weights': importance.tolist(),
        'coverage': float(np.mean(final_node > 0)),
        'ess_fraction': ess_fraction,
        'ess_samples': ess_fraction * int(leaf_samples.sum()),
        'budget_samples': budget,
        'leaf_proportions': leaf.tolist(),
        'expected_repeats': (leaf * leaves_budget / leaf_samples).tolist(),
        'specialist': stream,
    }


def write_weights(weights: dict, path: str) -> None:
    """Canonical JSON (sorted keys, fixed separators, trailing newline): byte-identical reruns."""
    with replacing(path) as tmp, open(tmp, 'wb') as handle:
        handle.write(canonical_json(weights) + b'\n')


def read_weights(path: str, index: CISIndex) -> dict:
    """Load and check a weights file against `index`; every failure names the file and the fix."""
    try:
        with open(path, encoding='utf-8') as handle:
            weights = json.load(handle)
    except FileNotFoundError:
        raise ValueError(f'{path}: no such weights file; make one with `cis-stream weights`') from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise ValueError(f'{path}: not a weights file ({err})') from err
    if not isinstance(weights, dict) or weights.get('format') != WEIGHTS_FORMAT:
        raise ValueError(f'{path}: not a {WEIGHTS_FORMAT} weights file')
    check_weights(weights, path)
    if weights['level'] >= len(index.levels):
        raise ValueError(f"{path}: field level: {weights['level']}, but {index.root} has levels "
                         f'0..{len(index.levels) - 1}; {WEIGHTS_ADVICE}')
    earlier = [step for step in index.manifest.get('history', [])
               if step['fingerprint'] == weights['index_fingerprint']]
    if earlier:
        raise ValueError(f'{path} was made for an earlier version of {index.root} ({earlier[0]["fingerprint"][:16]}), '
                         f'before `cis-stream add` grew it to {index.fingerprint[:16]}: the cluster sizes changed, '
                         f'so recompute it with `cis-stream weights --index {index.root} ...` on the same '
                         f'specialist files')
    if weights['index_fingerprint'] != index.fingerprint:
        raise ValueError(f'{path} was made for index {weights["index_fingerprint"][:16]}, '
                         f'but {index.root} is {index.fingerprint[:16]}: recompute it with '
                         f'`cis-stream weights --index {index.root} ...`')
    check_proportions(weights['leaf_proportions'], path, index.num_leaves)
    if weights.get('specialist') is not None:
        check_specialist(weights, path)
    return weights


