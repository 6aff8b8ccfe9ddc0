"""Session fixtures for the indexer tests: real text written at test time, indexes built once.

The text is the 10,033 real Wikipedia summaries that `cis_stream.demo.corpora.load_wiki_summaries()`
reads out of an installed package; nothing is committed and nothing is fetched. What test modules
share besides fixtures (constants, file writers, checks) is in tests/helpers.py.

Streaming keeps state in shared memory: run these tests serially (never under xdist), with a
TMPDIR of their own (`make test` does both), and never call clean_stale_shared_memory().
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

# Nothing may come from a model hub at run time: set before anything imports huggingface_hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
# faiss's OpenMP threads spin while waiting: on 2 cores shared with another job, each tiny k-means
# call then takes seconds instead of milliseconds. Passive waiting changes no result, only speed.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

# The recorded index fingerprints (e2e/test_fingerprints.py) come from faiss's AVX2 and OpenBLAS's
# Haswell kernels. Pin those where the CPU has them (read when faiss and numpy load), so that on other
# CPUs the indexes more often match the record than skip for want of one.
if os.path.exists('/proc/cpuinfo') and ' avx2' in Path('/proc/cpuinfo').read_text():
    os.environ.setdefault('FAISS_SIMD_LEVEL', 'AVX2')
    os.environ.setdefault('OPENBLAS_CORETYPE', 'Haswell')

import numpy as np
import pytest

from tests.helpers import (
    PLANTED_BAD_LINES,
    SMALL_DOCS,
    SMALL_OPTIONS,
    SMALL_TOPIC,
    WIKI_LEVELS,
    WIKI_PER_TOPIC,
    WIKI_TOPICS,
    WIKI_WINDOW,
    Corpus,
    json_line,
    write_lines,
)

# Fixtures of the mixture, dataset and training tests (one topic as the specialist domain).
pytest_plugins = ['tests.fixtures_mixture', 'tests.fixtures_s3']


def pytest_configure(config):
    """Give a session that was started without a TMPDIR one of its own (Streaming's advice)."""
    if not os.environ.get('TMPDIR'):
        os.environ['TMPDIR'] = tempfile.mkdtemp(prefix='cis-test.', dir='/tmp')
        tempfile.tempdir = None  # forget the cached default, so tmp_path lands in the new TMPDIR


@pytest.fixture(scope='session')
def wiki_records() -> list[dict]:
    from cis_stream.demo.corpora import load_wiki_summaries
    records = load_wiki_summaries()
    assert len(records) > 10000, 'the wiki summaries package is incomplete'
    return records


@pytest.fixture(scope='session')
def wiki_corpus(tmp_path_factory, wiki_records) -> Corpus:
    """~2,650 real summaries of five topics in a .jsonl (with planted bad lines), .jsonl.gz, .jsonl.zst."""
    rng = np.random.default_rng(0)
    chosen = []
    for topic in WIKI_TOPICS:
        pool = [r for r in wiki_records if r['topic'] == topic]
        keep = np.sort(rng.permutation(len(pool))[:WIKI_PER_TOPIC])
        chosen += [pool[i] for i in keep]
    chosen = [chosen[i] for i in rng.permutation(len(chosen))]
    root = str(tmp_path_factory.mktemp('wiki_corpus'))
    names = ['part-0.jsonl', 'part-1.jsonl.gz', 'part-2.jsonl.zst']  # sorted: the index's file order
    parts = np.array_split(np.arange(len(chosen)), len(names))
    docs, rejects, files = [], [], []
    for name, part in zip(names, parts):
        path = os.path.join(root, name)
        lines: list[bytes] = []
        planted = list(PLANTED_BAD_LINES) if name == 'part-0.jsonl' else []
        for k, i in enumerate(part):
            # The first file gets a bad line every 37 good ones, starting at its third line.
            if planted and k % 37 == 2:
                raw, reason = planted.pop(0)
                lines.append(raw)
                rejects.append({'file': path, 'line': len(lines), 'reason': reason})
            record = chosen[i]
            lines.append(json_line({'text': record['text'], 'topic': record['topic'],
                                    'title': record['title']}))
            docs.append({'text': record['text'], 'topic': record['topic'], 'file': path,
                         'line': len(lines)})
        assert not planted, 'every planted line must be written'
        write_lines(path, lines)
        files.append(path)
    return Corpus(root, files, docs, rejects)


@pytest.fixture(scope='session')
def wiki_index(tmp_path_factory, wiki_corpus):
    """The shared index: lsi, 5 → 20 clusters, 128-token windows, seed 0."""
    from cis_stream.index.job import build_index
    out = str(tmp_path_factory.mktemp('wiki_index') / 'index')
    return build_index([wiki_corpus.root], out, embedder='lsi', levels=WIKI_LEVELS, window=WIKI_WINDOW,
                       seed=0, progress=False)


@pytest.fixture(scope='session')
def wiki_placement(wiki_index, wiki_corpus):
    """The wiki index's own documents placed in its tree again (windows in corpus order)."""
    return wiki_index.place(wiki_corpus.texts)


@pytest.fixture(scope='session')
def small_corpus(tmp_path_factory, wiki_records) -> Corpus:
    """300 real summaries of one topic in one .jsonl file: for the cheap builds."""
    pool = [r for r in wiki_records if r['topic'] == SMALL_TOPIC][:SMALL_DOCS]
    root = str(tmp_path_factory.mktemp('small_corpus'))
    path = os.path.join(root, 'small.jsonl')
    write_lines(path, [json_line({'text': r['text'], 'topic': r['topic']}) for r in pool])
    docs = [{'text': r['text'], 'topic': r['topic'], 'file': path, 'line': i + 1} for i, r in enumerate(pool)]
    return Corpus(root, [path], docs)


@pytest.fixture(scope='session')
def small_index(tmp_path_factory, small_corpus):
    from cis_stream.index.job import build_index
    out = str(tmp_path_factory.mktemp('small_index') / 'index')
    return build_index([small_corpus.root], out, **SMALL_OPTIONS)


@pytest.fixture
def out_dir(tmp_path) -> str:
    """A not-yet-existing index path under this test's tmp_path (inside the session's TMPDIR)."""
    return str(tmp_path / 'out' / 'index')
