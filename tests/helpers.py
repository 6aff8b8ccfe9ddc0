"""The one home of what several test modules share: the test corpora's constants, writing input
files, reading an index back, the checks every index must pass, and a custom embedder class.

Test modules import from here (`from tests.helpers import ...`); fixtures live in conftest.py and
fixtures_mixture.py. Pytest puts the repository root on sys.path (pyproject: pythonpath = ["."]),
and a subprocess that needs these names gets the root on its PYTHONPATH (see REPO_ROOT).
"""

from __future__ import annotations

import bz2
import collections
import glob
import gzip
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

import numpy as np
import zstandard

from cis_stream.embedders.base import Embedder, l2_normalise
from cis_stream.format.layout import staging_dir
from cis_stream.text.inputs import input_bytes

TESTS_DIR = os.path.dirname(os.path.abspath(__file__))
REPO_ROOT = os.path.dirname(TESTS_DIR)

# The shared wiki index: five clearly different topics of the wiki summaries, at most this many
# documents each, 5 -> 20 clusters over 128-token windows.
WIKI_TOPICS = ('Mathematics', 'Biology and health sciences', 'Geography', 'Arts', 'Technology')
WIKI_PER_TOPIC = 600
WIKI_LEVELS = [5, 20]
WIKI_WINDOW = 128
# The small corpus comes from a topic not in the wiki index, so it is also "new text" for it.
SMALL_TOPIC = 'History'
SMALL_DOCS = 300
# Options of the cheap builds: a 32-dim lsi, 64-token windows packed into 96-token samples.
SMALL_OPTIONS = dict(embedder='lsi', embedder_config={'dim': 32}, levels=[2, 4], window=64, seq_len=96,
                     seed=0, progress=False)
# The mixture fixtures (fixtures_mixture.py): the specialist topic, and a second one for multi-task.
MIX_TOPIC = 'Biology and health sciences'
MIX_OTHER_TOPIC = 'Mathematics'
# The training budget, in 64-token samples, that the specialist-stream weights fixture is made for.
STREAM_BUDGET = 40_000

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

# Words, as decontamination and the tests that probe indexed text count them.
WORD = re.compile(r'\w+')


# Input files ----------------------------------------------------------------------------------------

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


def words_of(text: str) -> str:
    return ' '.join(WORD.findall(text.lower()))


# Files on disk -----------------------------------------------------------------------------------------

def leftovers(out: str) -> list[str]:
    """Temporary siblings (`<out>.building`, `<out>.building.lock`, ...) a build may leave next to `out`."""
    parent, name = os.path.split(os.path.abspath(out))
    return sorted(n for n in os.listdir(parent) if n.startswith(name + '.')) if os.path.isdir(parent) else []


def snapshot(root: str) -> dict[str, bytes]:
    """Every file under `root` (relative path → bytes)."""
    files = {}
    for folder, _, names in os.walk(root):
        for name in names:
            path = os.path.join(folder, name)
            with open(path, 'rb') as handle:
                files[os.path.relpath(path, root)] = handle.read()
    return files


# Decompressed copies of shards that Streaming makes next to the originals when it reads them.
RAW_SHARD = re.compile(r'shard\.\d+\.mds')


def copy_index(index, dst) -> str:
    """A pristine copy of an index: shards only in their published, compressed form."""
    shutil.copytree(index.root, dst, ignore=lambda _, names: [n for n in names if RAW_SHARD.fullmatch(n)])
    return str(dst)


# An index read back ---------------------------------------------------------------------------------------

def read_leaves(index) -> dict[int, tuple[int, list[np.ndarray]]]:
    """Every leaf through Streaming: leaf → (len(dataset), its samples in order)."""
    from streaming import StreamingDataset
    leaves = {}
    for leaf, path in enumerate(index.leaf_paths):
        dataset = StreamingDataset(local=path, batch_size=1)
        leaves[leaf] = (len(dataset), [dataset[i]['tokens'] for i in range(dataset.num_samples)])
        del dataset
    return leaves


def window_tokens(index, texts: list[str]) -> list[np.ndarray]:
    """The token ids of each window the index's tokenizer and window cut `texts` into."""
    from cis_stream.text.tokens import make_windows
    windows = make_windows(index.tokenizer, texts, index.manifest['options']['window'])
    return [windows.tokens[s:s + n] for s, n in zip(windows.starts, windows.lengths)]


def indexed_words(index) -> str:
    """Every published sample decoded and reduced to ' word word ... ' (EOS splits windows apart)."""
    parts = []
    for _, samples in read_leaves(index).values():
        ids = np.concatenate(samples).astype(np.int64)
        eos = ids == index.tokenizer.eos_id
        for piece in np.split(ids, np.flatnonzero(eos)):
            piece = piece[piece != index.tokenizer.eos_id]
            parts.append(' '.join(WORD.findall(index.tokenizer.tokenizer.decode(piece.tolist()).lower())))
    return ' | '.join(parts)


def leaf_sample_ids(dataset, leaf: int) -> np.ndarray:
    """The sample ids of a ClusteredImportanceDataset that come from `leaf`."""
    return np.flatnonzero(dataset.leaf_of(np.arange(dataset.num_samples)) == leaf)


def purity(clusters: np.ndarray, labels: np.ndarray) -> float:
    """Fraction of items whose cluster's majority label is their own."""
    return sum(collections.Counter(labels[clusters == c].tolist()).most_common(1)[0][1]
               for c in np.unique(clusters)) / len(labels)


# What every index must satisfy ----------------------------------------------------------------------------

def assert_totals_reconcile(index, corpus: Corpus):
    """Nothing lost: documents in = indexed + rejected, per file and in total; windows and tokens as the
    tokenizer cuts the documents; every level's node counts add up to the totals and each parent holds
    its children; each leaf's samples are its windows EOS-joined and padded to whole samples."""
    m = index.manifest
    t = m['totals']
    seq_len, window = m['options']['seq_len'], m['options']['window']
    # Documents: every one read is indexed or rejected, per file and in total.
    assert t['documents_read'] == t['documents_indexed'] + t['documents_rejected']
    assert t['documents_indexed'] == len(corpus.docs)
    assert t['documents_rejected'] == len(corpus.rejects)
    assert [s['path'] for s in m['inputs']] == corpus.files
    for stats in m['inputs']:
        assert {k: stats[k] for k in ('documents', 'indexed', 'rejected')} == corpus.per_file(stats['path'])
        assert stats['bytes'] == input_bytes(stats['path'])
    for key, total in [('documents', 'documents_read'), ('indexed', 'documents_indexed'),
                       ('rejected', 'documents_rejected'), ('bytes', 'input_bytes')]:
        assert sum(s[key] for s in m['inputs']) == t[total], key
    assert m['rejects']['count'] == t['documents_rejected'] == sum(m['rejects']['by_reason'].values())
    with open(os.path.join(index.root, 'rejects.jsonl'), encoding='utf-8') as handle:
        assert sum(1 for _ in handle) == t['documents_rejected']
    # Windows and tokens: as the tokenizer cuts the indexed documents.
    lengths = [len(w) for w in window_tokens(index, corpus.texts)]
    assert t['windows'] == len(lengths) and t['tokens'] == sum(lengths)
    assert t['eos_tokens'] == t['windows']
    assert t['sample_tokens'] == t['samples'] * seq_len == t['tokens'] + t['eos_tokens'] + t['pad_tokens']
    # Per-node counts sum to the totals at every level, and each parent holds its children.
    levels = m['tree']['levels']
    for level, info in enumerate(levels):
        nodes = info['nodes']
        for key in ('windows', 'tokens', 'samples', 'pad_tokens'):
            assert sum(n[key] for n in nodes) == t[key], (level, key)
        assert sum(n['documents'] for n in nodes) >= t['documents_indexed']
        for n in nodes:
            assert 0 < n['documents'] <= n['windows'] and n['samples'] > 0, 'no empty node is published'
            assert n['tokens'] <= n['windows'] * window
        if level == 0:
            assert all(n['parent'] == -1 for n in nodes)
            continue
        for parent, above in enumerate(levels[level - 1]['nodes']):
            kids = [n for n in nodes if n['parent'] == parent]
            assert kids, 'every parent keeps a child'
            for key in ('windows', 'tokens', 'samples', 'pad_tokens'):
                assert sum(n[key] for n in kids) == above[key], (level, parent, key)
            assert sum(n['documents'] for n in kids) >= above['documents']
    # Each leaf: its windows EOS-joined, rounded up to whole samples with pad.
    for n in levels[-1]['nodes']:
        used = n['tokens'] + n['windows']
        assert n['samples'] == -(-used // seq_len) and n['pad_tokens'] == n['samples'] * seq_len - used
        assert 0 <= n['pad_tokens'] < seq_len


# A custom embedder ------------------------------------------------------------------------------------------

class VocabEmbedder(Embedder):
    """A custom embedder, passed to the indexer by its import path 'tests.helpers:VocabEmbedder'.

    It needs fitting (it learns a vocabulary of the most frequent words of the sample), stores its
    fitted state as .npz, and rebuilds from (config, state_dir): everything the plug-in interface of
    `cis_stream.embedders` asks of a user's class.
    """
    name = 'vocab'
    needs_fit = True
    # Observability for the tests: how instances came to be.
    fit_calls = 0
    loaded_from: list[str] = []
    WORD = re.compile(r'[a-z]{3,}')

    def __init__(self, n_words: int = 48, vocab=None):
        self.n_words = n_words
        self.vocab = None if vocab is None else [str(w) for w in vocab]

    @property
    def dim(self) -> int:
        return self.n_words + 1

    def fit(self, texts: list[str], seed: int) -> None:
        type(self).fit_calls += 1
        counts = collections.Counter(w for t in texts for w in self.WORD.findall(t.lower()))
        ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        self.vocab = [w for w, _ in ranked[:self.n_words]]
        self.vocab += [f'<unused{i}>' for i in range(self.n_words - len(self.vocab))]

    def embed(self, texts: list[str]) -> np.ndarray:
        if self.vocab is None:
            raise RuntimeError('VocabEmbedder used before fit')
        position = {w: i for i, w in enumerate(self.vocab)}
        out = np.zeros((len(texts), self.dim), np.float32)
        out[:, -1] = 1.0  # a constant feature: no all-zero vector
        for row, text in enumerate(texts):
            for word in self.WORD.findall(text.lower()):
                if word in position:
                    out[row, position[word]] += 1.0
        return l2_normalise(np.log1p(out))

    def config(self) -> dict:
        return {'n_words': self.n_words}

    def save(self, state_dir: str) -> None:
        np.savez(os.path.join(state_dir, 'vocab.npz'), vocab=np.asarray(self.vocab))

    @classmethod
    def load(cls, config: dict, state_dir: str) -> 'VocabEmbedder':
        cls.loaded_from.append(state_dir)
        with np.load(os.path.join(state_dir, 'vocab.npz'), allow_pickle=False) as state:
            return cls(**config, vocab=state['vocab'].tolist())


# A build whose reading waits for a file to appear: it holds its lock meanwhile.
GATED_BUILD = '''
import json, os, sys, time
import cis_stream.index.job as index
real = index.read_part
def gated(*args, **kwargs):
    while not os.path.exists(sys.argv[1]):
        time.sleep(0.05)
    return real(*args, **kwargs)
index.read_part = gated
if sys.argv[2] == 'cli':
    from cis_stream.cli import main
    sys.exit(main(sys.argv[3:]))
built = index.build_index([sys.argv[3]], sys.argv[4], **json.loads(sys.argv[5]))
print(built.fingerprint)
'''


def start_gated(go: str, *args: str) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, '-c', GATED_BUILD, go, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env={**os.environ, 'HF_HUB_OFFLINE': '1'},
                            cwd=REPO_ROOT)


def wait_for_staging(process: subprocess.Popen, out: str) -> None:
    """Until the build has locked and started its staging directory."""
    job = os.path.join(staging_dir(out), '_work', 'job.json')
    deadline = time.monotonic() + 240
    while not os.path.exists(job):
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, 'the first build never started'
        time.sleep(0.05)


# Training runs ---------------------------------------------------------------------------------------

def global_order(path, split=1):
    """Per step, the global batch: rank r holds positions r, r + world, ... (Streaming's split).

    A step logged twice (replayed after a resume) keeps its last record. With index samples split
    into `split` training sequences, each sample's id is logged once per sequence, in a row.
    """
    steps = {}
    for line in open(path, encoding='utf-8'):
        record = json.loads(line)
        ranks = [ids[::split] for ids in record['ids']]
        assert all(ids == [i for i in ids[::split] for _ in range(split)] for ids in record['ids'])
        steps[(record['epoch'], record['batch'])] = [r[i] for i in range(len(ranks[0])) for r in ranks]
    return [steps[key] for key in sorted(steps)]


def kill_between_checkpoints(process: subprocess.Popen, folder) -> None:
    """SIGKILL a training run (started in a session of its own) at a moment Composer's autoresume takes.

    Composer writes a checkpoint, then points latest-rank0.pt at it: a run killed between the two leaves
    a checkpoint newer than `latest`, which the resumed run refuses ("may conflict with a future
    checkpoint"). So the run is frozen, and killed only while `latest` names its newest checkpoint.
    """
    while process.poll() is None:
        os.killpg(process.pid, signal.SIGSTOP)
        saved = glob.glob(os.path.join(folder, 'ep*-ba*-rank0.pt'))
        latest = os.path.join(folder, 'latest-rank0.pt')
        newest = max(saved, key=lambda path: int(re.search(r'-ba(\d+)-', path).group(1)), default=None)
        if newest is None or (os.path.islink(latest) and os.path.realpath(latest) == os.path.realpath(newest)):
            break
        os.killpg(process.pid, signal.SIGCONT)
        time.sleep(0.01)
    if process.poll() is None:  # a run that already ended is left to the caller's assertions
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()
