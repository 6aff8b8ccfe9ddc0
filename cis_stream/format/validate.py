"""The shapes of the JSON files cis_stream reads (manifest, leaf index.json, weights), in one place.

Any of them may come from another machine or have been edited by hand, so each is checked
before anything in it is used. A failure names the file and the field
(`tree.levels[1].nodes[7].samples`), says what is wrong and what to do, and never surfaces as a
KeyError deep inside the code. Nothing in these files is ever a path to follow: leaf directories
are derived from leaf numbers, and shard names must be plain `shard.NNNNN.mds[.zstd]` names.
"""

from __future__ import annotations

import math
import re
from typing import Any, Callable

Spec = Callable[[Any, str], None]

HEX64 = re.compile(r'[0-9a-f]{64}')
# A file name inside the index: no directory part, so it cannot point outside.
PLAIN_NAME = re.compile(r'[A-Za-z0-9_-][A-Za-z0-9._-]*')
# A leaf's shards, at its root or in the add-<version>/ folder of a `cis-stream add` (index/add.py).
SHARD_NAME = re.compile(r'(add-\d+/)?shard\.\d{5,}\.mds(\.zstd)?')
EMBEDDER_NAME = re.compile(r'[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?')
TOKEN_COLUMNS = ('ndarray:uint16', 'ndarray:int32')


class _Bad(Exception):
    def __init__(self, where: str, problem: str):
        super().__init__(where, problem)
        self.where, self.problem = where, problem


def _show(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + '...'


def integer(minimum: int | None = None, maximum: int | None = None) -> Spec:
    def check(value, where):
        if not isinstance(value, int) or isinstance(value, bool):
            raise _Bad(where, f'expected an integer, got {_show(value)}')
        if (minimum is not None and value < minimum) or (maximum is not None and value > maximum):
            bounds = f'>= {minimum}' if maximum is None else f'between {minimum} and {maximum}'
            raise _Bad(where, f'{value} is not {bounds}')
    return check


def number() -> Spec:
    """Any JSON number; NaN and infinities pass here and are refused where their meaning is known."""
    def check(value, where):
        if not isinstance(value, (int, float)) or isinstance(value, bool):
            raise _Bad(where, f'expected a number, got {_show(value)}')
    return check


def string(pattern: re.Pattern | None = None, choices: tuple | None = None) -> Spec:
    def check(value, where):
        if not isinstance(value, str):
            raise _Bad(where, f'expected a string, got {_show(value)}')
        if choices is not None and value not in choices:
            raise _Bad(where, f'{_show(value)} is not one of {list(choices)}')
        if pattern is not None and not pattern.fullmatch(value):
            raise _Bad(where, f'{_show(value)} does not match {pattern.pattern!r}')
    return check


def array(item: Spec, min_items: int = 0, max_items: int | None = None) -> Spec:
    def check(value, where):
        if not isinstance(value, list):
            raise _Bad(where, f'expected a list, got {_show(value)}')
        if len(value) < min_items or (max_items is not None and len(value) > max_items):
            wanted = f'{min_items}' if max_items == min_items else f'at least {min_items}'
            raise _Bad(where, f'{len(value)} items, expected {wanted}')
        for i, element in enumerate(value):
            item(element, f'{where}[{i}]')
    return check


def mapping(fields: dict[str, Spec]) -> Spec:
    """An object with at least `fields` (other keys are allowed: newer writers may add some)."""
    def check(value, where):
        if not isinstance(value, dict):
            raise _Bad(where, f'expected an object, got {_show(value)}')
        for key, spec in fields.items():
            inner = f'{where}.{key}' if where else key
            if key not in value:
                raise _Bad(inner, 'missing')
            spec(value[key], inner)
    return check


def check(document: Any, spec: Spec, path: str, advice: str, error: type = ValueError) -> None:
    """Raise `error('<path>: field <where>: <problem>; <advice>')` if `document` breaks `spec`."""
    try:
        spec(document, '')
    except _Bad as bad:
        field = f'field {bad.where}: ' if bad.where else ''
        raise error(f'{path}: {field}{bad.problem}; {advice}') from None


NONNEG = integer(0)
POSITIVE = integer(1)
_NODE = mapping({'documents': NONNEG, 'windows': NONNEG, 'tokens': NONNEG, 'samples': NONNEG,
                 'pad_tokens': NONNEG, 'parent': integer(-1)})
MANIFEST_SPEC = mapping({
    'format_version': integer(),
    'fingerprint': string(HEX64),
    'leaf_indexes_sha256': string(HEX64),
    'options': mapping({
        'embedder': mapping({'name': string(EMBEDDER_NAME), 'config': mapping({})}),
        'tokenizer': mapping({'eos_id': NONNEG, 'vocab_size': POSITIVE}),
        'window': POSITIVE, 'seq_len': POSITIVE, 'levels': array(POSITIVE, 1), 'seed': integer(),
        'text_field': string(), 'token_column': string(choices=TOKEN_COLUMNS),
    }),
    'tree': mapping({'levels': array(mapping({'nodes': array(_NODE, 1)}), 1)}),
    'totals': mapping({key: NONNEG for key in (
        'documents_read', 'documents_indexed', 'documents_rejected', 'windows', 'tokens', 'samples',
        'pad_tokens', 'sample_tokens', 'input_bytes')}),
    'rejects': mapping({'file': string(PLAIN_NAME), 'count': NONNEG}),
    'inputs': array(mapping({'bytes': NONNEG, 'documents': NONNEG, 'indexed': NONNEG, 'rejected': NONNEG})),
})
MANIFEST_ADVICE = 'the manifest is damaged or was edited by hand: rebuild the index with `cis-stream index`'


def check_manifest(manifest: Any, path: str, error: type = ValueError) -> None:
    """The manifest's shape, plus what the shape alone cannot say: a consistent, non-empty tree."""
    check(manifest, MANIFEST_SPEC, path, MANIFEST_ADVICE, error)
    levels = manifest['tree']['levels']
    above = None
    for level, info in enumerate(levels):
        for i, node in enumerate(info['nodes']):
            where = f'tree.levels[{level}].nodes[{i}]'
            if above is None and node['parent'] != -1:
                raise error(f'{path}: field {where}.parent: {node["parent"]}, but top-level nodes have '
                            f'parent -1; {MANIFEST_ADVICE}')
            if above is not None and not 0 <= node['parent'] < above:
                raise error(f'{path}: field {where}.parent: {node["parent"]} is not a node of level '
                            f'{level - 1} ({above} nodes); {MANIFEST_ADVICE}')
            if level == len(levels) - 1 and node['samples'] < 1:
                raise error(f'{path}: field {where}.samples: a leaf without samples; {MANIFEST_ADVICE}')
        above = len(info['nodes'])


def check_leaf_shards(shards: list, where: str, token_column: str, samples: int, error: type = ValueError) -> None:
    """One leaf's shards as Streaming parsed them from its index.json (checked on Streaming's own
    readers, so no file is read twice): one `tokens` column of the manifest's type, plain shard
    names inside the leaf, xxh64 hashes to verify shards with, and the manifest's sample count."""
    advice = 'the index is damaged or was tampered with: rebuild it with `cis-stream index`'
    for i, shard in enumerate(shards):
        at = f'{where}: shards[{i}]'
        names, encodings = getattr(shard, 'column_names', None), getattr(shard, 'column_encodings', None)
        if names != ['tokens'] or encodings != [token_column]:
            raise error(f'{at}: columns {names} of types {encodings}, expected one column tokens of type '
                        f'{token_column}; {advice}')
        if shard.compression not in (None, 'zstd') or 'xxh64' not in (shard.hashes or []):
            raise error(f'{at}: compression {shard.compression!r} and hashes {shard.hashes}, expected zstd '
                        f'(or none) and xxh64; {advice}')
        for info in (info for pair in shard.file_pairs for info in pair if info is not None):
            if not SHARD_NAME.fullmatch(info.basename):
                raise error(f'{at}: shard file {info.basename!r} is not a plain shard.NNNNN.mds[.zstd] name '
                            f'inside the leaf (never followed); {advice}')
    found = sum(shard.samples for shard in shards)
    if found != samples:
        raise error(f'{where}: {found} samples, but the manifest says {samples}; {advice}')


WEIGHTS = mapping({'index_fingerprint': string(HEX64), 'level': NONNEG,
                   'leaf_proportions': array(number(), 1)})
WEIGHTS_ADVICE = 'the weights file is damaged or was edited by hand: recompute it with `cis-stream weights`'


def check_weights(weights: Any, path: str) -> None:
    check(weights, WEIGHTS, path, WEIGHTS_ADVICE)


SPECIALIST = mapping({'dataset': string(PLAIN_NAME), 'fingerprint': string(HEX64), 'samples': POSITIVE,
                      'fraction': number()})


def check_specialist(weights: dict, path: str) -> None:
    """A weights file's specialist stream: a name beside the file (never a path), a share in (0, 1)."""
    check(weights, mapping({'specialist': SPECIALIST}), path, WEIGHTS_ADVICE)
    record = weights['specialist']
    if not 0 < record['fraction'] < 1:
        raise ValueError(f'{path}: field specialist.fraction: {record["fraction"]} is not between 0 and 1; '
                         f'{WEIGHTS_ADVICE}')


def check_proportions(proportions: list, path: str, leaves: int) -> None:
    """Leaf proportions a sampler can use: one per leaf, finite, non-negative, summing to 1."""
    if len(proportions) != leaves:
        raise ValueError(f'{path}: field leaf_proportions: {len(proportions)} leaf proportions for an index '
                         f'of {leaves} leaves; {WEIGHTS_ADVICE}')
    for i, p in enumerate(proportions):
        if not math.isfinite(p) or p < 0:
            raise ValueError(f'{path}: field leaf_proportions[{i}]: {p} (proportions must be finite and '
                             f'non-negative); {WEIGHTS_ADVICE}')
    total = math.fsum(proportions)
    if abs(total - 1) > 1e-6:
        raise ValueError(f'{path}: field leaf_proportions: proportions must sum to 1, these sum to '
                         f'{total:.6g}; {WEIGHTS_ADVICE}')
