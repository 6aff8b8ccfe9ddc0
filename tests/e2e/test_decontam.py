"""Decontamination (`--exclude`): eval text planted in a real pool is dropped, counted and logged,
and nothing else is; the totals reconcile; the fingerprint names the eval set; bad eval input fails
clearly. The pool is 300 real History summaries, the eval set real Arts summaries."""

from __future__ import annotations

import gzip
import json
import os
import re
from dataclasses import dataclass, field

import pytest

from cis_stream import cli
from cis_stream.index.job import build_index
from cis_stream.report.summary import index_summary as summary
from cis_stream.text.readers import InputError
from cis_stream.text.tokens import load_tokenizer, make_windows
from tests.helpers import SMALL_OPTIONS, WORD, indexed_words, json_line, leftovers, read_leaves, words_of, write_lines

WINDOW = SMALL_OPTIONS['window']
# Pool lines (1-based) that receive each plant.
EXACT_LINES = (4, 151)      # exact copies of eval documents (the second with case, spacing, NFKC changes)
WHOLE_LINE = 78             # an eval document with one word changed: every window shares a 13-word run
INSIDE_LINE = 41            # a 13-word eval run inside one window of a long pool document
STRADDLE_LINE = 201         # a 13-word eval run across a window boundary
CONTROL_LINE = 121          # a 12-word eval run: below the threshold, must stay


@dataclass
class Planted:
    pool: str
    evals: str                   # a directory: arts.jsonl.gz and one.txt
    eval_texts: list[str]
    texts: list[str]             # the pool documents, line i + 1
    runs: dict[int, str]         # pool line → planted run (its text as in the pool document)
    spans: dict[int, tuple[int, int]]   # pool line → character span of the run in the document
    refs: dict[int, str] = field(default_factory=dict)   # pool line → the eval document it came from


def word_run(text: str, first: int, n: int) -> tuple[str, int, int]:
    """Exactly `n` words of `text` from word `first`: (the run, its start, its end)."""
    words = list(WORD.finditer(text))
    start, end = words[first].start(), words[first + n - 1].end()
    return text[start:end], start, end


def insert_run(text: str, space: int, run: str) -> tuple[str, tuple[int, int]]:
    """`run` inserted after the `space`-th space of `text`, as whole words."""
    pos = [i for i, c in enumerate(text) if c == ' '][space]
    return text[:pos] + ' ' + run + text[pos:], (pos + 1, pos + 1 + len(run))


def windows_hit(gpt2, text: str, span: tuple[int, int]) -> list[int]:
    spans = make_windows(gpt2, [text], WINDOW).char_spans
    return [i for i, (s, e) in enumerate(spans) if s < span[1] and e > span[0]]


def run_pieces(gpt2, text: str, span: tuple[int, int]) -> list[str]:
    """The run's words in each window it touches (' w w w'), without the two end words a cut may split."""
    spans = make_windows(gpt2, [text], WINDOW).char_spans
    return [' '.join(WORD.findall(text[max(s, span[0]):min(e, span[1])].lower())[1:-1])
            for s, e in spans if s < span[1] and e > span[0]]


@pytest.fixture(scope='module')
def gpt2():
    return load_tokenizer()


@pytest.fixture(scope='module')
def planted(tmp_path_factory, wiki_records, gpt2) -> Planted:
    root = tmp_path_factory.mktemp('decontam')
    texts = [r['text'] for r in wiki_records if r['topic'] == 'History'][:300]
    arts = [r['text'] for r in wiki_records if r['topic'] == 'Arts' and len(WORD.findall(r['text'])) >= 80][:12]
    evals = root / 'evals'
    evals.mkdir()
    with gzip.open(evals / 'arts.jsonl.gz', 'wb') as handle:
        handle.write(b''.join(json_line({'text': t}) for t in arts[1:]))
    (evals / 'one.txt').write_text(arts[0], encoding='utf-8')
    runs, spans, refs = {}, {}, {}

    texts[EXACT_LINES[0] - 1] = arts[3]
    refs[EXACT_LINES[0]] = 'arts.jsonl.gz:3'
    variant = '  ' + arts[0].upper().replace(' ', ' \n\t ').replace('A', '\uff21') + '\n'
    assert variant != arts[0] and 'Ａ' in variant  # fullwidth A: NFKC makes it A
    texts[EXACT_LINES[1] - 1] = variant
    refs[EXACT_LINES[1]] = 'one.txt:1'

    words = list(WORD.finditer(arts[5]))
    middle = words[len(words) // 2]
    texts[WHOLE_LINE - 1] = arts[5][:middle.start()] + 'Zyzzogeton' + arts[5][middle.end():]
    refs[WHOLE_LINE] = 'arts.jsonl.gz:5'

    lines = (*EXACT_LINES, WHOLE_LINE, INSIDE_LINE, STRADDLE_LINE, CONTROL_LINE)
    long_docs = [i for i, t in enumerate(texts) if len(make_windows(gpt2, [t], WINDOW).lengths) >= 3
                 and i + 1 not in lines]
    # A long document moves to the plant's line (the one there takes its place), and gets a run:
    # inside one window, or cut by a window boundary with at least 4 whole words on each side.
    for line, base, eval_doc, words, want in ((INSIDE_LINE, long_docs[0], 7, 13, 1),
                                              (STRADDLE_LINE, long_docs[1], 8, 13, 2),
                                              (CONTROL_LINE, long_docs[2], 9, 12, 1)):
        run = word_run(arts[eval_doc], 30, words)[0]
        for space in range(30, 200):
            text, span = insert_run(texts[base], space, run)
            pieces = run_pieces(gpt2, text, span)
            if len(pieces) == want and min(len(p.split()) for p in pieces) >= 4:
                break
        else:
            raise AssertionError(f'no insertion point gives {want} window(s)')
        texts[base], texts[line - 1], runs[line], spans[line] = texts[line - 1], text, run, span
        refs[line] = f'arts.jsonl.gz:{eval_doc}'
    # The control's neighbouring words differ from the eval's, so no 13-word run is shared.
    eval_words, (start, end) = WORD.findall(arts[9]), spans[CONTROL_LINE]
    text = texts[CONTROL_LINE - 1]
    assert WORD.findall(text[:start])[-1] != eval_words[29] and WORD.findall(text[end:])[0] != eval_words[42]

    pool = str(root / 'pool.jsonl')
    write_lines(pool, [json_line({'text': t}) for t in texts])
    return Planted(pool, str(evals), arts, texts, runs, spans, refs)


@pytest.fixture(scope='module')
def clean(planted, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('clean') / 'index')
    return build_index([planted.pool], out, exclude=[planted.evals], **SMALL_OPTIONS)


@pytest.fixture(scope='module')
def plain(planted, tmp_path_factory):
    out = str(tmp_path_factory.mktemp('plain') / 'index')
    return build_index([planted.pool], out, **SMALL_OPTIONS)


def excluded_log(index) -> dict[int, dict]:
    with open(os.path.join(index.root, 'excluded.jsonl'), encoding='utf-8') as handle:
        return {entry['line']: entry for entry in map(json.loads, handle)}


# The planted pool ---------------------------------------------------------------------------------

def test_exactly_the_planted_documents_and_windows_are_dropped(clean, planted, gpt2):
    log = excluded_log(clean)
    assert sorted(log) == sorted([*EXACT_LINES, WHOLE_LINE, INSIDE_LINE, STRADDLE_LINE])
    for line in (*EXACT_LINES, WHOLE_LINE, INSIDE_LINE, STRADDLE_LINE):
        entry = log[line]
        assert entry['file'] == planted.pool and planted.refs[line] in entry['reason'], entry
        assert entry['windows'] == len(make_windows(gpt2, [planted.texts[line - 1]], WINDOW).lengths)
    for line in EXACT_LINES:
        assert log[line]['reason'].startswith('exact copy of') and log[line]['document_excluded']
        assert log[line]['windows_dropped'] == log[line]['windows']
    assert log[WHOLE_LINE]['reason'].startswith('shares a 13-word run with')
    assert log[WHOLE_LINE]['document_excluded'] and log[WHOLE_LINE]['windows_dropped'] == log[WHOLE_LINE]['windows'] > 1
    for line, dropped in ((INSIDE_LINE, 1), (STRADDLE_LINE, 2)):
        assert not log[line]['document_excluded'] and log[line]['windows_dropped'] == dropped
        assert log[line]['windows'] >= 3
        windows = make_windows(gpt2, [planted.texts[line - 1]], WINDOW)
        assert log[line]['tokens_dropped'] == int(windows.lengths[windows_hit(gpt2, planted.texts[line - 1],
                                                                              planted.spans[line])].sum())
    d = clean.manifest['decontamination']
    assert d['documents_excluded'] == {'exact': 2, 'ngram': 1} and d['documents_trimmed'] == 2
    assert d['windows_excluded'] == sum(e['windows_dropped'] for e in log.values())
    assert d['tokens_excluded'] == sum(e['tokens_dropped'] for e in log.values())


def test_no_planted_run_survives_in_the_published_samples(clean, plain, planted, gpt2):
    kept, unfiltered = indexed_words(clean), indexed_words(plain)
    probes = {line: run_pieces(gpt2, planted.texts[line - 1], planted.spans[line])
              for line in (INSIDE_LINE, STRADDLE_LINE, CONTROL_LINE)}
    assert len(probes[STRADDLE_LINE]) == 2
    for line in (*EXACT_LINES, WHOLE_LINE):
        probes[line] = [' '.join(words_of(planted.texts[line - 1]).split()[:6])]
    for line, pieces in probes.items():
        for probe in pieces:
            assert probe in unfiltered, f'line {line}: {probe!r} must be findable in an unfiltered index'
            assert (probe in kept) == (line == CONTROL_LINE), (line, probe)
    # The trimmed documents keep their other windows.
    for line in (INSIDE_LINE, STRADDLE_LINE):
        text = planted.texts[line - 1]
        hit = windows_hit(gpt2, text, planted.spans[line])
        others = [t for i, t in enumerate(make_windows(gpt2, [text], WINDOW).texts) if i not in hit]
        assert len(others) >= 1
        for other in others:
            assert ' '.join(words_of(other).split()[1:-1]) in kept


def test_totals_reconcile_and_nothing_else_is_lost(clean, plain, planted):
    t, p = clean.manifest['totals'], plain.manifest['totals']
    assert t['documents_read'] == p['documents_read'] == 300
    assert t['documents_read'] == t['documents_indexed'] + t['documents_rejected'] + t['documents_excluded']
    assert (t['documents_indexed'], t['documents_excluded']) == (297, 3)
    [stats] = clean.manifest['inputs']
    assert (stats['documents'], stats['indexed'], stats['rejected'], stats['excluded']) == (300, 297, 0, 3)
    assert t['windows'] + t['windows_excluded'] == p['windows']
    assert t['tokens'] + t['tokens_excluded'] == p['tokens']
    assert (p['windows_excluded'], p['tokens_excluded'], p['documents_excluded']) == (0, 0, 0)
    assert plain.manifest['decontamination'] is None
    assert 'excluded.jsonl' not in os.listdir(plain.root)
    for key in ('windows', 'tokens', 'samples'):
        assert sum(n[key] for n in clean.manifest['tree']['levels'][-1]['nodes']) == t[key]
    assert sum(length for length, _ in read_leaves(clean).values()) == t['samples']
    text = summary(clean.manifest)
    assert text.startswith('indexed 297 of 300 documents (0 rejected, see rejects.jsonl; 3 excluded and '
                           f"{t['windows_excluded']} windows ({t['tokens_excluded']:,} tokens) dropped")


def test_manifest_records_the_eval_files(clean, planted):
    d = clean.manifest['decontamination']
    assert d['ngram'] == 13 and d['eval_documents'] == 12 and d['log'] == 'excluded.jsonl'
    names = [os.path.basename(f['path']) for f in d['files']]
    assert names == ['arts.jsonl.gz', 'one.txt']
    assert [f['documents'] for f in d['files']] == [11, 1]
    assert all(f['rejected'] == 0 and f['short_documents'] == 0 and len(f['sha256']) == 64 for f in d['files'])
    assert d['eval_ngrams'] == len({tuple(words_of(t).split()[i:i + 13]) for t in planted.eval_texts
                                    for i in range(len(words_of(t).split()) - 12)})


def test_fingerprint_changes_with_the_eval_set_alone(clean, plain, planted, tmp_path):
    """An unrelated extra eval document drops nothing more, yet the fingerprint must differ."""
    evals = tmp_path / 'evals'
    evals.mkdir()
    for name in os.listdir(planted.evals):
        (evals / name).write_bytes(open(os.path.join(planted.evals, name), 'rb').read())
    (evals / 'extra.txt').write_text('A wholly unrelated evaluation passage about tide pools and the small '
                                     'animals that live in them between the tides.', encoding='utf-8')
    wider = build_index([planted.pool], str(tmp_path / 'wider'), exclude=[str(evals)], **SMALL_OPTIONS)
    assert wider.manifest['totals'] == clean.manifest['totals']
    assert wider.manifest['decontamination']['files'][-1]['short_documents'] == 0
    assert len({wider.fingerprint, clean.fingerprint, plain.fingerprint}) == 3
    # Same eval bytes under another path: the same index.
    moved = build_index([planted.pool], str(tmp_path / 'moved'), exclude=[str(evals / 'arts.jsonl.gz'),
                        str(evals / 'one.txt')], **SMALL_OPTIONS)
    assert moved.fingerprint == clean.fingerprint


def test_cli_exclude_ngram_changes_the_threshold(planted, tmp_path, capsys):
    out = str(tmp_path / 'n12')
    assert cli.main(['index', planted.pool, '--out', out, '--levels', '2,4', '--window', str(WINDOW),
                     '--exclude', os.path.join(planted.evals, 'arts.jsonl.gz'), '--exclude-ngram', '12']) == 0
    printed = capsys.readouterr().out
    assert 'excluded and' in printed and 'see excluded.jsonl' in printed
    from cis_stream.format.reader import CISIndex
    index = CISIndex.open(out)
    assert index.manifest['decontamination']['ngram'] == 12
    log = excluded_log(index)
    # one.txt was not given: its exact copy stays; the 12-word control run is now caught.
    assert EXACT_LINES[1] not in log and EXACT_LINES[0] in log
    assert log[CONTROL_LINE]['windows_dropped'] >= 1 and not log[CONTROL_LINE]['document_excluded']


# Bad eval input -----------------------------------------------------------------------------------

def test_missing_eval_path_is_a_clear_error_and_publishes_nothing(planted, out_dir, capsys):
    missing = os.path.join(os.path.dirname(out_dir), 'no-such-eval.jsonl')
    with pytest.raises(InputError, match=f'^--exclude {re.escape(missing)}: no such file or directory$'):
        build_index([planted.pool], out_dir, exclude=[missing], **SMALL_OPTIONS)
    assert not os.path.exists(out_dir) and leftovers(out_dir) == []
    assert cli.main(['index', planted.pool, '--out', out_dir, '--exclude', missing]) == 2
    assert capsys.readouterr().err.strip() == f'cis-stream index: error: --exclude {missing}: no such file or directory'
    assert cli.main(['index', planted.pool, '--out', out_dir, '--exclude', planted.pool,
                     '--exclude-ngram', '0']) == 2
    assert '--exclude-ngram 0' in capsys.readouterr().err


def test_bad_eval_records_are_counted_or_stop_a_strict_run(planted, tmp_path, out_dir, caplog):
    path = str(tmp_path / 'eval.jsonl')
    write_lines(path, [json_line({'text': planted.eval_texts[3]}), b'{"text": "cut off\n',
                       json_line({'text': 'Too short to hold a run.'})])
    index = build_index([planted.pool], out_dir, exclude=[path], **SMALL_OPTIONS)
    [record] = index.manifest['decontamination']['files']
    assert (record['documents'], record['rejected'], record['short_documents']) == (2, 1, 1)
    assert f'--exclude {path}:2: malformed JSON' in caplog.text
    assert sorted(excluded_log(index)) == [EXACT_LINES[0]]
    with pytest.raises(InputError, match=f'--exclude {re.escape(path)}:2: malformed JSON'):
        build_index([planted.pool], str(tmp_path / 'strict'), exclude=[path], strict=True, **SMALL_OPTIONS)
    empty = str(tmp_path / 'empty.jsonl')
    write_lines(empty, [b'{"body": "no text"}\n'])
    with pytest.raises(InputError, match='no eval document could be read'):
        build_index([planted.pool], str(tmp_path / 'empty'), exclude=[empty], **SMALL_OPTIONS)
    with pytest.raises(InputError, match='^--exclude .*unsupported file type'):
        build_index([planted.pool], str(tmp_path / 'csv'), exclude=[__file__], **SMALL_OPTIONS)
