"""Where an index may be built: --out never harms an input, --overwrite replaces only an index, one
build of an --out at a time; and every file under the inputs is read or listed as skipped."""

from __future__ import annotations

import json
import logging
import os
import shutil
import subprocess
import sys
import time

import pytest

from cis_stream.format.layout import staging_dir
from cis_stream.format.publish import BuildLockedError, lock_staging
from cis_stream.index.job import build_index
from cis_stream.report.summary import index_summary as summary
from cis_stream.text.readers import InputError
from tests.helpers import SMALL_OPTIONS, json_line, leftovers, snapshot, start_gated, wait_for_staging, write_lines

BIN = os.path.dirname(sys.executable)


def _corpus_dir(tmp_path, small_corpus, notes: bool = True) -> str:
    """A directory with the small corpus file, and a notes.txt that is an input too."""
    root = tmp_path / 'corpus'
    root.mkdir()
    shutil.copy(small_corpus.files[0], root / 'small.jsonl')
    if notes:
        (root / 'notes.txt').write_text('Notes: these files are the corpus.')
    return str(root)


# --out never harms an input ----------------------------------------------------------------------

@pytest.mark.parametrize('where', ['the input directory', 'an input file', 'inside the input directory',
                                   'the parent of an input', 'an --exclude file'])
def test_an_out_that_is_holds_or_lies_inside_an_input_is_refused(tmp_path, small_corpus, where):
    root = _corpus_dir(tmp_path, small_corpus)
    inputs, exclude = [root], []
    out = {'the input directory': root, 'an input file': os.path.join(root, 'small.jsonl'),
           'inside the input directory': os.path.join(root, 'idx'), 'the parent of an input': str(tmp_path),
           'an --exclude file': str(tmp_path / 'eval.jsonl')}[where]
    if where == 'an input file':
        inputs = [out]
    if where == 'the parent of an input':
        inputs = [os.path.join(root, 'small.jsonl')]
    if where == 'an --exclude file':
        write_lines(out, [json_line({'text': 'an evaluation document'})])
        exclude = [out]
    before = snapshot(str(tmp_path))
    with pytest.raises(ValueError) as info:
        build_index(inputs, out, overwrite=True, **{**SMALL_OPTIONS, 'exclude': exclude})
    assert str(info.value).startswith(f'--out {out}: ') and 'choose an --out outside every' in str(info.value)
    assert snapshot(str(tmp_path)) == before, 'nothing written, moved or deleted'


@pytest.mark.parametrize('kind', ['directory', 'file'])
def test_overwrite_replaces_only_an_index(tmp_path, small_corpus, kind):
    out = tmp_path / 'notes'
    if kind == 'directory':
        out.mkdir()
        (out / 'keep-me.txt').write_text('not an index')
    else:
        out.write_text('not an index')
    before = snapshot(str(tmp_path))
    with pytest.raises(FileExistsError) as info:
        build_index([small_corpus.root], str(out), overwrite=True, **SMALL_OPTIONS)
    assert str(info.value).startswith(f'{out} is a {kind}')
    assert '--overwrite replaces only a cis_stream index' in str(info.value)
    assert snapshot(str(tmp_path)) == before and leftovers(str(out)) == []


# One build of an --out at a time -------------------------------------------------------------------

def test_a_second_build_of_the_same_out_fails_at_once_and_the_first_publishes(small_corpus, small_index, tmp_path):
    out, go = str(tmp_path / 'index'), str(tmp_path / 'go')
    first = start_gated(go, 'api', small_corpus.root, out, json.dumps(SMALL_OPTIONS))
    try:
        wait_for_staging(first, out)
        staged = snapshot(staging_dir(out))
        # The second job, even with --restart, must not touch the live build's staging directory.
        second = subprocess.run([os.path.join(BIN, 'cis-stream'), 'index', small_corpus.root, '--out', out,
                                 '--restart', '--levels', '2,4', '--window', '64'],
                                capture_output=True, text=True, timeout=300)
        assert second.returncode == 2, second.stderr
        assert second.stderr.startswith(f'cis-stream index: error: another build of {out} is running '
                                         f'(pid {first.pid}, lock {out}.building.lock)'), second.stderr
        assert 'Traceback' not in second.stderr
        assert snapshot(staging_dir(out)) == staged
    finally:
        open(go, 'w').close()
        stdout, stderr = first.communicate(timeout=300)
    assert first.returncode == 0, stderr
    assert stdout.split()[-1] == small_index.fingerprint, 'the first build publishes the clean index'
    assert leftovers(out) == []


def test_a_held_lock_refuses_before_anything_is_staged(small_corpus, out_dir):
    with lock_staging(out_dir):
        started = time.perf_counter()
        with pytest.raises(BuildLockedError, match=f'another build of {out_dir} is running \\(pid {os.getpid()},'):
            build_index([small_corpus.root], out_dir, **SMALL_OPTIONS)
        assert time.perf_counter() - started < 5
        assert leftovers(out_dir) == [os.path.basename(out_dir) + '.building.lock']
    assert leftovers(out_dir) == [], 'the lock file goes with the lock'


def test_the_lock_file_of_a_killed_build_does_not_block(small_corpus, small_index, out_dir):
    os.makedirs(os.path.dirname(out_dir))
    with open(staging_dir(out_dir) + '.lock', 'w') as handle:
        handle.write('999999999\n')  # left by a build killed with -9: the kernel released its lock
    assert build_index([small_corpus.root], out_dir, **SMALL_OPTIONS).fingerprint == small_index.fingerprint
    assert leftovers(out_dir) == []


# Every file under the inputs is read or listed ---------------------------------------------------

def test_the_usual_suffixes_in_any_case_are_all_read(tmp_path, small_corpus, out_dir, capsys):
    """The directory of the report: 60 JSON-lines documents in each of four files and a compressed text
    file (one document): all 241 are read, nothing is skipped."""
    texts = small_corpus.texts[:240]
    root = tmp_path / 'mixed'
    root.mkdir()
    for name, chunk in zip(['good.jsonl', 'SPORTS.JSONL', 'sports.json', 'politics.jsonl.bz2'],
                           [texts[i:i + 60] for i in range(0, 240, 60)]):
        write_lines(str(root / name), [json_line({'text': t}) for t in chunk])
    write_lines(str(root / 'politics.txt.gz'), ['\n\n'.join(small_corpus.texts[240:300]).encode()])
    index = build_index([str(root)], out_dir, **{**SMALL_OPTIONS, 'progress': True})
    totals = index.manifest['totals']
    assert (totals['documents_read'], totals['documents_indexed']) == (241, 241)
    assert len(index.manifest['inputs']) == 5 and index.manifest['skipped_files'] == []
    assert 'skipped' not in summary(index.manifest)
    assert 'fit embedder on ' in capsys.readouterr().err, 'the embedder fit shows a progress line'


def test_skipped_files_are_warned_listed_and_leave_the_fingerprint_alone(tmp_path, small_corpus, small_index,
                                                                         out_dir, caplog):
    root = _corpus_dir(tmp_path, small_corpus, notes=False)
    (tmp_path / 'corpus' / 'README.md').write_text('About this corpus.')
    (tmp_path / 'corpus' / 'table.csv').write_text('text\nnot read\n')
    skipped = [os.path.join(root, 'README.md'), os.path.join(root, 'table.csv')]
    with pytest.raises(InputError, match=f'{skipped[0]}: not an input format .*--strict refuses to skip it'):
        build_index([root], out_dir, strict=True, **SMALL_OPTIONS)
    assert leftovers(out_dir) == []

    with caplog.at_level(logging.WARNING, logger='cis_stream'):
        index = build_index([root], out_dir, **SMALL_OPTIONS)
    assert [s['path'] for s in index.manifest['skipped_files']] == skipped
    assert '2 file(s) skipped, not read, see skipped_files in cis_index.json' in summary(index.manifest)
    assert [r.getMessage() for r in caplog.records if 'skipped, not read' in r.getMessage()] == [
        f'2 file(s) under the inputs skipped, not read: {skipped[0]}, {skipped[1]}; each is listed in the manifest '
        f'(skipped_files); pass --strict to make this an error']
    # Files that are not read change nothing in the index.
    assert index.fingerprint == small_index.fingerprint


# Messages that say what happened -----------------------------------------------------------------

def test_nothing_indexable_shows_the_first_rejects(tmp_path, out_dir):
    path = str(tmp_path / 'content.jsonl')
    write_lines(path, [json_line({'content': f'document {i}', 'id': i}) for i in range(20)])
    with pytest.raises(InputError) as info:
        build_index([path], out_dir, **SMALL_OPTIONS)
    assert str(info.value).endswith(
        f"the first rejects:\n  {path}:1: missing text field 'text': the record has 'content', 'id'; choose one "
        f"with --text-field\n  {path}:2: missing text field 'text': the record has 'content', 'id'; choose one with "
        f"--text-field\n  {path}:3: missing text field 'text': the record has 'content', 'id'; choose one with "
        f"--text-field")


def test_a_resumed_build_shows_no_rate(small_index):
    manifest = json.loads(json.dumps(small_index.manifest))
    assert 'MB/s' in summary(manifest)
    manifest['build']['resumed'] = True
    assert 'MB/s' not in summary(manifest) and f"{manifest['timings']['total']:.1f} s, resumed;" in summary(manifest)


def test_senseless_sizes_are_warned_with_the_numbers(small_corpus, out_dir, caplog):
    with caplog.at_level(logging.WARNING, logger='cis_stream'):
        index = build_index([small_corpus.files[0]], out_dir, **{**SMALL_OPTIONS, 'window': 8, 'levels': [4, 128],
                                                                  'seq_len': 512})
    t = index.manifest['totals']
    messages = [r.getMessage() for r in caplog.records]
    assert ('--window 8: windows of 8 token(s) give the embedder almost no text to place them by (the paper uses '
            '1,024; 128 or more is usual): use a larger --window') in messages
    (padding,) = [m for m in messages if 'are padding' in m]
    assert padding.startswith(f"{t['pad_tokens']:,} of the {t['sample_tokens']:,} sample tokens "
                              f"({100 * t['pad_tokens'] / t['sample_tokens']:.0f}%) are padding: each of the "
                              f"{index.num_leaves} leaves pads its last sample to --seq-len 512")
    assert 'use fewer leaves (a last --levels of about' in padding
