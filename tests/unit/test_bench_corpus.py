"""The benchmark corpus's pure steps: cleaners on real markup, dedupe, split determinism, subsets,
pool settings, and the output format that `cis-stream index` reads. No package is downloaded here."""

import gzip

import pytest

from benchmarks.corpus import assemble, clean
from benchmarks.corpus.readers import read_dictd
from benchmarks.corpus.sources import DOMAINS, POOL, Source
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
