"""Session fixtures for the indexer tests: real text written at test time, indexes built once.

The text is the 10,033 real Wikipedia summaries that `cis_stream.corpora.load_wiki_summaries()`
reads out of an installed package; nothing is committed and nothing is fetched.

Streaming keeps state in shared memory: run these tests serially (never under xdist), with a
TMPDIR of their own (`make test` does both), and never call clean_stale_shared_memory().
"""

from __future__ import annotations

import bz2
import gzip
import json
import os
import sys
import tempfile
from dataclasses import dataclass, field

# Nothing may come from a model hub at run time: set before anything imports huggingface_hub.
os.environ.setdefault('HF_HUB_OFFLINE', '1')
os.environ.setdefault('TRANSFORMERS_OFFLINE', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')
# faiss's OpenMP threads spin while waiting: on 2 cores shared with another job, each tiny k-means
# call then takes seconds instead of milliseconds. Passive waiting changes no result, only speed.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')

import numpy as np
import pytest
import zstandard

# tests/ on sys.path, so helper modules here import by name (e.g. 'helper_embedders:VocabEmbedder').
TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
if TESTS_DIR not in sys.path:
    sys.path.insert(0, TESTS_DIR)

# Fixtures of the mixture, dataset and training tests (one topic as the specialist domain).
pytest_plugins = ['fixtures_mixture']

# Five clearly different topics of the wiki summaries; at most this many documents each.
WIKI_TOPICS = ('Mathematics', 'Biology and health sciences', 'Geography', 'Arts', 'Technology')
WIKI_PER_TOPIC = 600
WIKI_LEVELS = [5, 20]
WIKI_WINDOW = 128
# The small corpus comes from a topic not in the wiki index, so it is also "new text" for it.
SMALL_TOPIC = 'History'
SMALL_DOCS = 300

# Bad lines planted in the first wiki file: (raw bytes of the line, expected start of the reason).
PLANTED_BAD_LINES = [
    (b'{"text": "an unterminated string\n', 'malformed JSON'),
    (b'{"text": "bad bytes \xff\xfe here"}\n', 'invalid UTF-8'),
    (b'{"body": "no text field here"}\n', "missing text field 'text'"),
    (b'{"text": 42}\n', "text field 'text' is int, not a string"),
    (b'{"text": "   "}\n', 'empty document'),
    (b'\n', 'empty line'),
    (b'["a", "JSON", "array"]\n', 'expected a JSON object per line, got list'),
]


def pytest_configure(config):
    """Give a session that was started without a TMPDIR one of its own (Streaming's advice)."""
    if not os.environ.get('TMPDIR'):
        os.environ['TMPDIR'] = tempfile.mkdtemp(prefix='cis-test.', dir='/tmp')
        tempfile.tempdir = None  # forget the cached default, so tmp_path lands in the new TMPDIR


@dataclass
class Corpus:
    """Files written for a test session, and what an index of them must contain."""
    root: str
    files: list[str]
    # Good documents in index order (files sorted by path, then line): text, topic, file, line.
    docs: list[dict]
    # Planted rejects: {'file', 'line', 'reason'} (reason = the expected start of the message).
    rejects: list[dict] = field(default_factory=list)

    @property
    def texts(self) -> list[str]:
        return [d['text'] for d in self.docs]

    @property
    def topics(self) -> np.ndarray:
        return np.asarray([d['topic'] for d in self.docs])

    def per_file(self, path: str) -> dict:
        indexed = sum(d['file'] == path for d in self.docs)
        rejected = sum(r['file'] == path for r in self.rejects)
        return {'documents': indexed + rejected, 'indexed': indexed, 'rejected': rejected}


def json_line(record: dict) -> bytes:
    return (json.dumps(record, ensure_ascii=False) + '\n').encode('utf-8')


def write_lines(path: str, lines: list[bytes]) -> None:
    """Write raw lines as plain, gzip, zstd or bzip2 according to the suffix (any case)."""
    data = b''.join(lines)
    if path.lower().endswith('.gz'):
        data = gzip.compress(data, mtime=0)
    elif path.lower().endswith('.zst'):
        data = zstandard.ZstdCompressor(level=3).compress(data)
    elif path.lower().endswith('.bz2'):
        data = bz2.compress(data)
    with open(path, 'wb') as handle:
        handle.write(data)


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


# Options of the cheap builds: a 32-dim lsi, 64-token windows packed into 96-token samples.
SMALL_OPTIONS = dict(embedder='lsi', embedder_config={'dim': 32}, levels=[2, 4], window=64, seq_len=96,
                     seed=0, progress=False)


@pytest.fixture(scope='session')
def small_index(tmp_path_factory, small_corpus):
    from cis_stream.index.job import build_index
    out = str(tmp_path_factory.mktemp('small_index') / 'index')
    return build_index([small_corpus.root], out, **SMALL_OPTIONS)


@pytest.fixture
def out_dir(tmp_path) -> str:
    """A not-yet-existing index path under this test's tmp_path (inside the session's TMPDIR)."""
    return str(tmp_path / 'out' / 'index')


def fuzz_texts(count: int, extra_pieces: tuple[str, ...] = ()) -> list[str]:
    """Seeded random strings over scripts, emoji, digits, punctuation and whitespace runs."""
    rng = np.random.default_rng(0)
    ranges = [(0x20, 0x7e), (0xa0, 0x17f), (0x370, 0x3ff), (0x400, 0x4ff), (0x600, 0x6ff), (0x900, 0x97f),
              (0x3040, 0x30ff), (0x4e00, 0x4fff), (0xac00, 0xad00), (0x1f300, 0x1f64f), (0x300, 0x36f)]
    pieces = [' ', '  ', '\n', '\n\n', '\t', " '", "'s", "'ll", '123', ' 4.5', '...', '--', *extra_pieces]
    texts = []
    for _ in range(count):
        chars = []
        for _ in range(rng.integers(1, 80)):
            if rng.random() < 0.3:
                chars.append(pieces[rng.integers(len(pieces))])
            else:
                low, high = ranges[rng.integers(len(ranges))]
                chars.append(chr(rng.integers(low, high + 1)))
        texts.append(''.join(chars))
    return texts
