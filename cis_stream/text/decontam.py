"""Decontamination: keep evaluation text out of the generalist pool (`cis-stream index --exclude`).

Two checks against the documents of the eval files (read like index inputs, same formats):
  exact    a pool document whose normalised text (NFKC, lower-case, whitespace collapsed) equals an
           eval document's is dropped whole;
  n-gram   a pool window is dropped when its text overlaps a run of N words (default 13, the GPT-3 /
           Llama convention) that also occurs in an eval document. Words are runs of \\w characters,
           NFKC-normalised and lower-cased, so punctuation, case and spacing do not hide a copy.
           Runs are found on the whole document and mapped to windows by character offsets: a run
           that straddles a window boundary drops both windows.
A document that loses every window counts as excluded, like an exact copy; one that loses some
stays indexed with fewer windows. Every affected document is logged to EXCLUDED_FILE with the eval
document it matched. Eval documents shorter than N words are caught only by the exact check.

Hashes are stable across processes (blake2b of each word, combined polynomially modulo 2^64), so
an exclusion set built in one process matches in any other.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import unicodedata
from dataclasses import dataclass
from typing import Callable

import numpy as np

from cis_stream.text.inputs import input_bytes, input_sha256
from cis_stream.text.readers import Document, InputError, expand_inputs, read_documents
from cis_stream.text.tokens import Windows

# Words in a run shared with an eval document that drops a window (GPT-3 and Llama use 13).
DEFAULT_NGRAM = 13

log = logging.getLogger(__name__)

EXCLUDED_FILE = 'excluded.jsonl'
NORMALISATION = 'NFKC, lower-case; documents: whitespace collapsed; n-grams: words are \\w+ runs'
_WORD = re.compile(r'\w+')
# Odd multiplier of the polynomial n-gram hash (2^64 / golden ratio): multiplying by it is a
# bijection modulo 2^64, so two n-grams differing in one word never collide.
_MULTIPLIER = np.uint64(0x9E3779B97F4A7C15)
# Word hashes memoised (words repeat: NFKC and blake2b run once per distinct word); the memo is
# emptied when it grows past this many words, which bounds memory on any corpus.
_WORD_MEMO_LIMIT = 1 << 21


def normalise_document(text: str) -> str:
    return ' '.join(unicodedata.normalize('NFKC', text).lower().split())


def document_digest(text: str) -> bytes:
    return hashlib.blake2b(normalise_document(text).encode('utf-8'), digest_size=16).digest()


class _WordHasher:
    """Stable 64-bit hashes of normalised words."""

    def __init__(self):
        self.memo: dict[str, int] = {}

    def __call__(self, words: list[str]) -> np.ndarray:
        memo = self.memo
        if len(memo) > _WORD_MEMO_LIMIT:
            memo.clear()
        for word in set(words).difference(memo):
            key = unicodedata.normalize('NFKC', word).lower().encode('utf-8')
            memo[word] = int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), 'little')
        return np.fromiter(map(memo.__getitem__, words), np.uint64, len(words))


def ngram_hashes(word_hashes: np.ndarray, doc_lengths: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Hashes of every run of `n` words inside one document of a batch (words flattened).

    Returns (hashes, first word's flat position); runs crossing a document boundary are left out.
    """
    count = len(word_hashes) - n + 1
    if count <= 0:
        return np.zeros(0, np.uint64), np.zeros(0, np.int64)
    hashes = word_hashes[:count].copy()
    for k in range(1, n):
        hashes = hashes * _MULTIPLIER + word_hashes[k:k + count]
    ends = np.cumsum(doc_lengths)
    start = np.arange(count)
    inside = start + n <= np.repeat(ends, doc_lengths)[:count]
    return hashes[inside], start[inside]


@dataclass
class EvalSet:
    """What pool text is checked against: eval document digests and sorted n-gram hashes."""
    ngram: int
    digests: dict[bytes, int]   # normalised document digest → eval document number
    grams: np.ndarray           # sorted unique n-gram hashes (uint64)
    gram_docs: np.ndarray       # eval document number of each n-gram (the first holding it)
    refs: list[str]             # eval document number → 'file:line'
    files: list[dict]           # per eval file: path, bytes, sha256, documents, rejected, short_documents

    def matches(self, hashes: np.ndarray) -> np.ndarray:
        """For each n-gram hash, the eval document holding it, or -1."""
        if not len(self.grams):
            return np.full(len(hashes), -1, np.int64)
        at = np.minimum(np.searchsorted(self.grams, hashes), len(self.grams) - 1)
        return np.where(self.grams[at] == hashes, self.gram_docs[at], -1)


def load_eval_set(specs: list[str], ngram: int = DEFAULT_NGRAM, text_field: str = 'text',
                  strict: bool = False, hasher: _WordHasher | None = None) -> EvalSet:
    """Read the eval files (files, directories or globs) into an `EvalSet`.

    A bad eval record cannot protect its document: it is counted and warned about (an error
    with `strict`); a path that does not exist, or eval files with no document, are errors.
    """
    try:
        files = expand_inputs(specs)
    except InputError as err:
        raise InputError(f'--exclude {err}') from None
    hasher = hasher or _WordHasher()
    digests: dict[bytes, int] = {}
    refs: list[str] = []
    stats = {path: {'path': path, 'bytes': input_bytes(path), 'sha256': input_sha256(path),
                    'documents': 0, 'rejected': 0, 'short_documents': 0} for path in files}
    grams, gram_docs = [], []
    for item in read_documents(files, text_field):
        record = stats[item.path]
        if not isinstance(item, Document):
            if strict:
                raise InputError(f'--exclude {item.path}:{item.line}: {item.reason} (this eval record '
                                 f'would not be excluded; fix it, or drop --strict to skip and count it)')
            record['rejected'] += 1
            log.warning('--exclude %s:%d: %s; this record is not excluded from the index',
                        item.path, item.line, item.reason)
            continue
        number = len(refs)
        refs.append(f'{os.path.basename(item.path)}:{item.line}')
        record['documents'] += 1
        digests.setdefault(document_digest(item.text), number)
        words = hasher(_WORD.findall(item.text))
        hashes, _ = ngram_hashes(words, np.asarray([len(words)]), ngram)
        record['short_documents'] += not len(hashes)
        grams.append(hashes)
        gram_docs.append(np.full(len(hashes), number, np.int64))
    if not refs:
        raise InputError(f'--exclude {", ".join(specs)}: no eval document could be read '
                         f'({sum(s["rejected"] for s in stats.values())} rejected)')
    flat = np.concatenate(grams)
    unique, first = np.unique(flat, return_index=True)
    return EvalSet(ngram, digests, unique, np.concatenate(gram_docs)[first], refs, list(stats.values()))


class Decontaminator:
    """Screens each batch of pool documents and windows against an `EvalSet`; counts and logs drops."""

    def __init__(self, eval_set: EvalSet, log_path: str):
        self.eval_set = eval_set
        self.hasher = _WordHasher()
        self.log = open(log_path, 'w', encoding='utf-8')
        self.documents = {'exact': 0, 'ngram': 0}
        self.documents_trimmed = 0
        self.windows = 0
        self.tokens = 0

    def screen(self, docs: list[Document], windows: Windows,
               exclude_document: Callable[[Document], None]) -> Windows:
        """`windows` (cut from `docs`) without those overlapping eval text.

        `exclude_document` is called for each document that loses every window.
        """
        drop = np.zeros(len(windows.lengths), bool)
        matched: dict[int, tuple[str, str]] = {}
        unmatched = []
        for d, doc in enumerate(docs):
            number = self.eval_set.digests.get(document_digest(doc.text))
            if number is None:
                unmatched.append(d)
            else:
                matched[d] = ('exact', f'exact copy of {self.eval_set.refs[number]}')
                drop |= windows.doc_index == d
        for d, spans, number in self._ngram_hits([docs[d] for d in unmatched]):
            d = unmatched[d]
            rows = np.flatnonzero(windows.doc_index == d)
            ws, we = windows.char_spans[rows, 0], windows.char_spans[rows, 1]
            overlap = ((spans[:, :1] < we) & (spans[:, 1:] > ws)).any(axis=0)
            drop[rows[overlap]] = True
            matched[d] = ('ngram', f'shares a {self.eval_set.ngram}-word run with {self.eval_set.refs[number]}')
        if not matched:
            return windows
        for d, (kind, reason) in sorted(matched.items()):
            mine = windows.doc_index == d
            dropped, tokens = int((drop & mine).sum()), int(windows.lengths[drop & mine].sum())
            whole = dropped == int(mine.sum())
            if whole:
                self.documents[kind] += 1
                exclude_document(docs[d])
            else:
                self.documents_trimmed += 1
            self.windows += dropped
            self.tokens += tokens
            self.log.write(json.dumps({'file': docs[d].path, 'line': docs[d].line, 'reason': reason,
                                       'document_excluded': whole, 'windows_dropped': dropped,
                                       'windows': int(mine.sum()), 'tokens_dropped': tokens},
                                      ensure_ascii=False) + '\n')
        return windows.select(~drop)

    def _ngram_hits(self, docs: list[Document]):
        """(batch position, character spans [k, 2] of the shared runs, an eval document) per hit document."""
        n = self.eval_set.ngram
        words = [_WORD.findall(doc.text) for doc in docs]
        lengths = np.asarray([len(w) for w in words], np.int64)
        hashes, starts = ngram_hashes(self.hasher([w for ws in words for w in ws]), lengths, n)
        found = self.eval_set.matches(hashes)
        hit = found >= 0
        if not hit.any():
            return
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        doc_of = np.searchsorted(offsets, starts[hit], side='right') - 1
        for d in np.unique(doc_of):
            first = starts[hit][doc_of == d] - offsets[d]
            bounds = np.asarray([m.span() for m in _WORD.finditer(docs[d].text)], np.int64)
            spans = np.stack([bounds[first, 0], bounds[first + n - 1, 1]], axis=1)
            yield int(d), spans, int(found[hit][doc_of == d][0])

    def close(self) -> dict:
        """Close the exclusion log; returns this screen's counts (summed over parts by `record`)."""
        self.log.close()
        return {'documents_excluded': dict(self.documents), 'documents_trimmed': self.documents_trimmed,
                'windows_excluded': self.windows, 'tokens_excluded': self.tokens}


def record(eval_set: EvalSet, counts: list[dict]) -> dict:
    """The manifest's `decontamination` section: the eval set and the summed counts of every part."""
    total = {'documents_excluded': {'exact': 0, 'ngram': 0}, 'documents_trimmed': 0, 'windows_excluded': 0,
             'tokens_excluded': 0}
    for part in counts:
        for kind, n in part['documents_excluded'].items():
            total['documents_excluded'][kind] += n
        for key in ('documents_trimmed', 'windows_excluded', 'tokens_excluded'):
            total[key] += part[key]
    log.info('decontamination against %d eval documents (%d distinct %d-word runs): %d exact copies and '
             '%d wholly overlapping documents excluded, %d documents trimmed; %d windows, %d tokens '
             'dropped; each document is listed in %s', len(eval_set.refs), len(eval_set.grams), eval_set.ngram,
             total['documents_excluded']['exact'], total['documents_excluded']['ngram'],
             total['documents_trimmed'], total['windows_excluded'], total['tokens_excluded'], EXCLUDED_FILE)
    return {'ngram': eval_set.ngram, 'normalisation': NORMALISATION, 'files': eval_set.files,
            'eval_documents': len(eval_set.refs), 'eval_ngrams': int(len(eval_set.grams)),
            'log': EXCLUDED_FILE, **total}
