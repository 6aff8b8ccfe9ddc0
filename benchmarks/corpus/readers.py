"""Documents out of an unpacked package: `READERS[name](root, source)` yields (doc_id, text).

Generic readers clean every file that matches the source's globs with one cleaner of clean.py;
the rest know one data file each (a dictd database, an XML Bible, a JSON dump, an ontology).
Files and record pages come in a stable hash order, so a size cap takes a spread of the source.
"""

from __future__ import annotations

import bz2
import fnmatch
import gzip
import hashlib
import html
import json
import re
import sqlite3
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Callable, Iterator

from . import clean
from .sources import Source

Docs = Iterator[tuple[str, str]]
PAGE_CHARS = 8000  # short records (dictionary entries, ontology terms) are grouped into pages this big


def spread_key(name: str) -> str:
    """Stable pseudo-random order: a prefix of it is a spread of the source, not its first letters."""
    return hashlib.sha1(name.encode('utf-8')).hexdigest()


def matching_files(root: Path, source: Source) -> list[Path]:
    files = {p for pattern in source.include for p in root.glob(pattern) if p.is_file()}
    kept = [p for p in files if not any(fnmatch.fnmatch(str(p.relative_to(root)), ex) for ex in source.exclude)]
    return sorted(kept, key=lambda p: spread_key(str(p.relative_to(root))))


def read_text(path: Path) -> str:
    """UTF-8 text of a plain, .gz or .dz (dictzip is gzip) file; undecodable bytes become U+FFFD."""
    opener = gzip.open if path.suffix in ('.gz', '.dz') else open
    with opener(path, 'rb') as handle:
        return handle.read().decode('utf-8', errors='replace')


def _files(cleaner: Callable[[str], str]) -> Callable[[Path, Source], Docs]:
    def read(root: Path, source: Source) -> Docs:
        for path in matching_files(root, source):
            yield str(path.relative_to(root)), cleaner(read_text(path))
    return read


def _pages(name: str, records: list[str]) -> Docs:
    pages = clean.pack(records, PAGE_CHARS)
    for i in sorted(range(len(pages)), key=lambda i: spread_key(f'{name}:{i}')):
        yield f'{name}#page{i}', pages[i]


def _one(root: Path, source: Source) -> Path:
    files = matching_files(root, source)
    if len(files) != 1:
        raise FileNotFoundError(f'{source.name}: expected one file for {source.include} under {root}, '
                                f'found {len(files)}')
    return files[0]


# ------------------------------------------------------------ pool sources with their own format
_DICTD_B64 = {c: i for i, c in enumerate('ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/')}


def _b64(value: str) -> int:
    number = 0
    for char in value:
        number = number * 64 + _DICTD_B64[char]
    return number


def read_dictd(root: Path, source: Source) -> Docs:
    """dictd database: entries located through the .index file, markup braces dropped, pages of entries."""
    base = root / source.include[0]
    with gzip.open(base.with_name(base.name + '.dict.dz'), 'rb') as handle:
        data = handle.read()  # bytes: the index counts bytes, and a stray non-UTF-8 byte must not shift them
    spans = set()
    for line in read_text(base.with_name(base.name + '.index')).splitlines():
        word, offset, length = line.split('\t')[:3]
        if not word.startswith('00-database') and not word.startswith('00database'):
            spans.add((_b64(offset), _b64(length)))
    entries = []
    for offset, length in sorted(spans):
        entry = data[offset:offset + length].decode('utf-8', errors='replace')
        entry = re.sub(r'^\s*\[[^\]\n]{1,40}\]\s*$', '', entry, flags=re.M)  # "[1913 Webster]" source tags
        entries.append(clean.tidy(entry.replace('{', '').replace('}', '')))
    yield from _pages(source.name, entries)


def read_gutenberg(root: Path, source: Source) -> Docs:
    """Project Gutenberg texts without the licence header and footer."""
    for path in matching_files(root, source):
        text = read_text(path)
        start = re.search(r'^\*\*\* ?START OF .*$', text, flags=re.M)
        end = re.search(r'^\*\*\* ?END OF .*$|^End of (the )?Project Gutenberg', text, flags=re.M)
        text = text[start.end() if start else 0:end.start() if end else len(text)]
        yield str(path.relative_to(root)), clean.tidy(text)


def read_kjv(root: Path, source: Source) -> Docs:
    """OSIS King James Bible: one document per chapter, notes dropped, one verse per line."""
    xml = read_text(_one(root, source))
    for match in re.finditer(r'<chapter osisID="([^"]+)"[^>]*>(.*?)</chapter>', xml, flags=re.S):
        body = re.sub(r'<note\b.*?</note>', '', match.group(2), flags=re.S)
        body = re.sub(r'<verse [^>]*sID[^>]*/>', '\n', body)
        body = re.sub(r'<title[^>]*>(.*?)</title>', r'\n\1\n\n', body, flags=re.S)
        yield match.group(1), clean.tidy(html.unescape(re.sub(r'<[^>]+>', '', body)))


def read_fortunes(root: Path, source: Source) -> Docs:
    """fortune(6) files: records split by '%' lines, grouped into pages per file."""
    for path in matching_files(root, source):
        records = re.split(r'^%\s*$', read_text(path), flags=re.M)
        yield from _pages(str(path.relative_to(root)), records)


def read_wiki_summaries(root: Path, source: Source) -> Docs:
    raw = json.loads(read_text(_one(root, source)))
    for key in sorted(raw, key=spread_key):
        record = raw[key]
        if record.get('extract', '').strip():
            yield key, f"{record.get('title', key)}\n\n{record['extract'].strip()}"


def read_mediawiki(root: Path, source: Source) -> Docs:
    """Wikipedia XML dump (bz2): one document per article, redirects skipped, markup cleaned."""
    for path in matching_files(root, source):
        with bz2.open(path, 'rb') as handle:
            for _, elem in ET.iterparse(handle):
                if elem.tag.rsplit('}', 1)[-1] != 'page':
                    continue
                title = next((e.text for e in elem.iter() if e.tag.endswith('title')), '')
                text = next((e.text for e in elem.iter() if e.tag.endswith('}text') or e.tag == 'text'), '') or ''
                if not text.lstrip().lower().startswith('#redirect'):
                    yield title, f'{title}\n\n{clean.wikitext_to_text(text)}'
                elem.clear()


def read_apt_descriptions(root: Path, source: Source) -> Docs:
    """`apt-cache dumpavail`: 'package: description' records (one per name), grouped into pages."""
    descriptions: dict[str, str] = {}
    for stanza in read_text(root / 'apt-dumpavail.txt').split('\n\n'):
        fields = re.search(r'^Package: (\S+)', stanza, flags=re.M), re.search(
            r'^Description(?:-en)?: (.*(?:\n .*)*)', stanza, flags=re.M)
        if fields[0] and fields[1]:
            lines = [line[1:] if line.startswith(' ') else line for line in fields[1].group(1).split('\n')]
            body = '\n'.join('' if line.strip() == '.' else line for line in lines)
            descriptions.setdefault(fields[0].group(1), f'{fields[0].group(1)}: {body}')
    yield from _pages(source.name, [descriptions[name] for name in sorted(descriptions)])


def read_spdx(root: Path, source: Source) -> Docs:
    licences = json.loads(read_text(_one(root, source)))
    for key in sorted(licences):
        text = licences[key].get('licenseText', '')
        if text.strip():
            yield key, f"{licences[key].get('name', key)}\n\n{clean.tidy(text)}"


def read_constitution(root: Path, source: Source) -> Docs:
    articles = [f"Article {a['article']}. {a['title']}\n\n{a['description']}"
                for a in json.loads(read_text(_one(root, source)))]
    yield from _pages(source.name, [clean.tidy(a) for a in articles])


def read_go_terms(root: Path, source: Source) -> Docs:
    with sqlite3.connect(f'file:{_one(root, source)}?mode=ro', uri=True) as db:
        rows = db.execute('SELECT go_id, term, definition FROM go_term ORDER BY go_id').fetchall()
    yield from _pages(source.name, [f'{term} ({go_id}): {definition}' for go_id, term, definition in rows
                                    if definition])


def read_obo(root: Path, source: Source) -> Docs:
    """OBO ontology: 'name: definition comment' per term."""
    terms = []
    for stanza in read_text(_one(root, source)).split('\n\n'):
        name = re.search(r'^name: (.*)$', stanza, flags=re.M)
        definition = re.search(r'^def: "((?:[^"\\]|\\.)*)"', stanza, flags=re.M)
        comment = re.search(r'^comment: (.*)$', stanza, flags=re.M)
        if name and (definition or comment):
            parts = [definition.group(1).replace('\\"', '"') if definition else '', comment.group(1) if comment else '']
            terms.append(f"{name.group(1)}: {' '.join(p for p in parts if p)}")
    yield from _pages(source.name, terms)


def read_icd10(root: Path, source: Source) -> Docs:
    """ICD-10-CM tabular list: one document per section, 'code description' and notes as lines."""
    tree = ET.parse(_one(root, source))
    for section in tree.getroot().iter('section'):
        lines = [section.findtext('desc', '').strip()]
        for elem in section.iter():
            if elem.tag == 'diag':
                lines.append(f"{elem.findtext('name', '')} {elem.findtext('desc', '')}".strip())
            elif elem.tag == 'note' and elem.text:
                lines.append(elem.text.strip())
        yield section.get('id', ''), '\n'.join(line for line in lines if line)


# ------------------------------------------------------------ specialist sources
def read_bbc(root: Path, source: Source) -> Docs:
    """BBC News articles: first line is the title; the id is category/number."""
    for path in matching_files(root, source):
        yield f'{path.parent.name}/{path.stem}', clean.tidy(read_text(path))


def _olmo_docs(root: Path, source: Source) -> Iterator[dict]:
    for path in sorted(p for pattern in source.include for p in root.glob(pattern)):
        with gzip.open(path, 'rt', encoding='utf-8') as handle:
            for line in handle:
                yield json.loads(line)['doc']


def read_sciriff(root: Path, source: Source) -> Docs:
    """SciRIFF yes/no passages (biomedical research abstracts), one per distinct context."""
    seen = {}
    for doc in _olmo_docs(root, source):
        seen.setdefault(doc['context'], doc['id'])
    for context, doc_id in seen.items():
        yield doc_id, clean.tidy(context)


def read_medqa(root: Path, source: Source) -> Docs:
    """MedQA USMLE vignettes with their answer options (the question text as asked)."""
    seen = {}
    for doc in _olmo_docs(root, source):
        text = doc['query'].removeprefix('Question: ').removesuffix('Answer:').strip()
        seen.setdefault(doc['index'], text)
    for index, text in seen.items():
        yield f'medqa:{index}', clean.tidy(text)


def read_qasper(root: Path, source: Source) -> Docs:
    """QASPER papers: title, abstract, then each section's name and paragraphs; one per paper."""
    seen = set()
    for doc in _olmo_docs(root, source):
        paper = doc['id'].rsplit('_', 1)[0]
        if paper in seen:
            continue
        seen.add(paper)
        full = doc['full_text']
        parts = [doc['title'], doc['abstract']]
        for name, paras in zip(full['section_name'], full['paragraphs']):
            heading = (name or '').split(':::')[-1].strip()
            parts.extend(([heading] if heading else []) + [p for p in paras if p.strip()])
        yield paper, clean.tidy('\n\n'.join(parts))


READERS: dict[str, Callable[[Path, Source], Docs]] = {
    'html': _files(clean.html_to_text), 'rst': _files(clean.rst_to_text), 'pod': _files(clean.pod_to_text),
    'man': _files(clean.roff_to_text), 'md': _files(clean.markdown_to_text), 'tex': _files(clean.tex_to_text),
    'asciidoc': _files(clean.asciidoc_to_text), 'info': _files(clean.info_to_text), 'text': _files(clean.tidy),
    'dictd': read_dictd, 'gutenberg': read_gutenberg, 'kjv': read_kjv, 'fortunes': read_fortunes,
    'wiki_summaries': read_wiki_summaries, 'mediawiki': read_mediawiki, 'apt_descriptions': read_apt_descriptions,
    'spdx': read_spdx, 'constitution': read_constitution, 'go_terms': read_go_terms, 'obo': read_obo,
    'icd10': read_icd10, 'bbc': read_bbc, 'sciriff': read_sciriff, 'medqa': read_medqa, 'qasper': read_qasper,
}
