"""Decontamination's pure parts: document digests that ignore case, spacing and compatibility forms,
word n-gram hashes that stay inside documents and are the same in every process.

The planted pool, end to end: e2e/test_decontam.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np

from cis_stream.text.decontam import _WordHasher, document_digest, ngram_hashes
from tests.helpers import WORD


def test_document_digest_ignores_case_spacing_and_compatibility_forms(wiki_records):
    text = wiki_records[0]['text']
    assert document_digest(text) == document_digest('\n ' + text.upper().replace(' ', '\t  '))
    assert document_digest('The ﬁrst ＡＢＣ') == document_digest('the first abc')
    assert document_digest(text) != document_digest(text + ' Extra.')


def test_ngram_hashes_stay_inside_documents():
    hasher = _WordHasher()
    a, b = [f'alpha{i}' for i in range(10)], [f'beta{i}' for i in range(10)]
    apart, _ = ngram_hashes(hasher(a + b), np.asarray([10, 10]), 5)
    together, starts = ngram_hashes(hasher(a + b), np.asarray([20]), 5)
    assert len(apart) == 2 * 6 and len(together) == 16 and starts.tolist() == list(range(16))
    assert set(apart.tolist()) < set(together.tolist())
    # A zero-word document in the middle changes nothing; runs shorter than n give none.
    gapped, _ = ngram_hashes(hasher(a + b), np.asarray([10, 0, 10]), 5)
    assert np.array_equal(gapped, apart)
    assert len(ngram_hashes(hasher(a[:4]), np.asarray([4]), 5)[0]) == 0
    # Word order matters.
    forward, backward = (ngram_hashes(hasher(words), np.asarray([5]), 5)[0] for words in (a[:5], a[4::-1]))
    assert forward[0] != backward[0]


def test_ngram_hashes_are_the_same_in_another_process(wiki_records):
    """Python's hash() of strings changes per process; ours must not (eval sets built elsewhere)."""
    text = wiki_records[1]['text']
    code = ('import sys, numpy as np, re; from cis_stream.text.decontam import _WordHasher, ngram_hashes; '
            'w = re.findall(r"\\w+", sys.stdin.read()); '
            'print(ngram_hashes(_WordHasher()(w), np.asarray([len(w)]), 13)[0].tolist())')
    words = WORD.findall(text)
    here = ngram_hashes(_WordHasher()(words), np.asarray([len(words)]), 13)[0].tolist()
    assert len(here) == len(words) - 12 > 0
    for seed in ('1', '2'):
        result = subprocess.run([sys.executable, '-c', code], input=text, capture_output=True, text=True,
                                env={**os.environ, 'PYTHONHASHSEED': seed}, check=True)
        assert json.loads(result.stdout) == here
