"""Markup → plain text, one small function per format, plus the paragraph helpers of dedupe.

Each cleaner keeps the prose and code a reader would see and drops what only the renderer needs
(tags, directives, roff requests, formatting codes). They are deliberately simple: regular
expressions and the standard library's HTML parser, no full parsers. Boilerplate that survives
(navigation lines repeated on every page) is removed later by the exact paragraph dedupe.
"""

from __future__ import annotations

import hashlib
import html
import re
import unicodedata

_BLANKS = re.compile(r'\n[ \t]*(\n[ \t]*)+')


def tidy(text: str) -> str:
    """Right-strip lines, collapse runs of blank lines to one, strip the ends."""
    text = '\n'.join(line.rstrip() for line in text.replace('\r\n', '\n').replace('\r', '\n').split('\n'))
    return _BLANKS.sub('\n\n', text).strip()


# ---------------------------------------------------------------- HTML
_BLOCK = frozenset('address article aside blockquote caption dd details div dl dt fieldset figcaption figure '
                   'h1 h2 h3 h4 h5 h6 hr li main ol p pre section summary table tbody td th thead tr ul'.split())
_SKIP = frozenset('script style head nav header footer form button noscript svg math select textarea iframe'.split())
_VOID = frozenset('area base br col embed hr img input link meta param source track wbr'.split())
# class/id/role words of navigation chrome in Sphinx, javadoc, rustdoc, haddock, DocBook and texinfo pages
_CHROME = re.compile(r'\b(sphinxsidebar|sidebar|related|navigation|navbar|nav|breadcrumbs?|headerlink|'
                     r'footer|header|topbar|top-nav|sub-nav|subNav|skip-?nav|search|menu|toc|navheader|'
                     r'navfooter|src-link|sourceLink|leftnav|prev-next-area|left-prev|right-next|'
                     r'bd-sidebar[\w-]*|bd-header[\w-]*|bd-footer[\w-]*)\b', re.I)


_RAW = re.compile(r'<(script|style|svg|math|textarea)\b.*?</\1\s*>|<!--.*?-->|<!\[CDATA\[.*?\]\]>', re.S | re.I)
_TAG = re.compile(r'<(/?)([a-zA-Z][\w:-]*)((?:[^>"\']|"[^"]*"|\'[^\']*\')*)>|<[!?][^>]*>')
_MARKS = re.compile(r'\b(?:class|id|role)\s*=\s*(?:"([^"]*)"|\'([^\']*)\'|(\S+))', re.I)


def html_to_text(markup: str) -> str:
    """Visible text of an HTML page, blocks as paragraphs, without scripts, styles and navigation.

    A regular-expression tokenizer (several times faster than html.parser on generated docs):
    elements whose tag or class/id/role marks them as page chrome are skipped with their content.
    """
    markup = _RAW.sub(' ', markup)
    parts: list[str] = []
    stack: list[tuple[str, bool]] = []  # open elements: (tag, skipped)
    skipping = pre = 0
    position = 0

    def text(chunk: str) -> None:
        if skipping or not chunk:
            return
        chunk = html.unescape(chunk)
        if not pre:
            chunk = re.sub(r'\s+', ' ', chunk)
            if not parts or parts[-1].endswith('\n'):
                chunk = chunk.lstrip()  # no indent at the start of a block
        parts.append(chunk)

    for match in _TAG.finditer(markup):
        text(markup[position:match.start()])
        position = match.end()
        closing, tag = match.group(1), (match.group(2) or '').lower()
        if not tag:
            continue  # doctype, processing instruction
        if closing:
            if not any(t == tag for t, _ in stack):
                continue  # stray end tag: ignore rather than unwind the stack
            while stack:
                open_tag, skip = stack.pop()
                skipping -= skip
                pre -= open_tag == 'pre'
                if open_tag == tag:
                    break
            if tag in _BLOCK and not skipping:
                parts.append('\n\n')
        elif tag in _VOID or match.group(3).rstrip().endswith('/'):
            if tag == 'br' and not skipping:
                parts.append('\n')
        else:
            marks = ' '.join(next(g for g in m.groups() if g is not None) for m in _MARKS.finditer(match.group(3)))
            skip = tag in _SKIP or bool(marks and _CHROME.search(marks))
            stack.append((tag, skip))
            skipping += skip
            pre += tag == 'pre'
            if tag in _BLOCK and not skipping:
                parts.append('\n\n')
    text(markup[position:])
    return tidy(''.join(parts))


# ---------------------------------------------------------------- reStructuredText
_RST_ADORN = re.compile(r'^([=\-~^"\'`#*+.:_])\1{2,}\s*$')
_RST_DIRECTIVE = re.compile(r'^\s*\.\.\s+(\|[^|]+\|\s+)?[\w:-]+::')
_RST_TARGET = re.compile(r'^\s*\.\.\s+(_[^:]*:|\[[^\]]*\]|\s*$)')
_RST_OPTION = re.compile(r'^\s+:[\w -]+:(\s.*)?$')
_RST_ROLE = re.compile(r'(?::[\w:+.-]+:)?`([^`]+)`_{0,2}')


def _role_text(match: re.Match) -> str:
    inner = match.group(1)
    inner = re.sub(r'\s*<[^<>]*>$', '', inner) or inner  # `text <target>` → text
    return inner.lstrip('~!')


def rst_to_text(source: str) -> str:
    """reST without adornment lines, directive and target lines, directive options, and role markup."""
    out: list[str] = []
    after_directive = False
    for line in source.split('\n'):
        if _RST_ADORN.match(line) or _RST_TARGET.match(line):
            after_directive = False
            continue
        if _RST_DIRECTIVE.match(line):
            after_directive = True
            continue
        if after_directive and _RST_OPTION.match(line):
            continue
        after_directive = False
        line = line.replace('``', '`')
        line = _RST_ROLE.sub(_role_text, line)
        line = re.sub(r'\*\*(\S(?:.*?\S)?)\*\*', r'\1', line)
        line = re.sub(r'(\S)::\s*$', r'\1:', line)
        out.append(line)
    return tidy('\n'.join(out))


# ---------------------------------------------------------------- Perl POD
_POD_CODE = re.compile(r'[A-Z]<([^<>]*)>')
_POD_CODE_MULTI = re.compile(r'[A-Z]<{2,}\s+(.*?)\s+>{2,}')
_POD_ESCAPES = {'lt': '<', 'gt': '>', 'verbar': '|', 'sol': '/'}


def _pod_code(match: re.Match) -> str:
    code, inner = match.group(0)[0], match.group(1)
    if code in 'XZ':
        return ''
    if code == 'E':
        return _POD_ESCAPES.get(inner, html.unescape(f'&{inner};') if not inner.isdigit() else chr(int(inner)))
    if code == 'L':
        return inner.split('|', 1)[0] if '|' in inner else inner.replace('/"', ' ').strip('"/')
    return inner


def pod_to_text(source: str) -> str:
    """POD: headings and items keep their text; =begin/=end blocks, =for, =cut lines and codes go."""
    out: list[str] = []
    in_begin = False
    for line in source.split('\n'):
        if line.startswith('='):
            command, _, rest = line[1:].partition(' ')
            if command == 'begin':
                in_begin = True
            elif command == 'end':
                in_begin = False
            elif command.startswith('head') or command == 'item':
                out.append(rest)
            continue
        if not in_begin:
            out.append(line)
    text = '\n'.join(out)
    text = _POD_CODE_MULTI.sub(lambda m: m.group(1), text)
    previous = None
    while previous != text:  # innermost codes first, until none is left
        previous, text = text, _POD_CODE.sub(_pod_code, text)
    return tidy(text)


# ---------------------------------------------------------------- man pages (roff)
_ROFF_ESCAPES = [
    (re.compile(r'\\f(\(..|\[[^\]]*\]|.)'), ''),
    (re.compile(r'\\\((em|en)'), '\u2014'), (re.compile(r'\\\((aq|cq|oq)'), "'"),
    (re.compile(r'\\\((lq|rq|dq)'), '"'), (re.compile(r'\\\((bu|pc)'), '\u2022'),
    (re.compile(r'\\\*?\(..'), ''), (re.compile(r'\\\*?\[[^\]]*\]'), ''), (re.compile(r'\\\*.'), ''),
    (re.compile(r'\\[-]'), '-'), (re.compile(r'\\e'), '\\\\'), (re.compile(r'\\[&%c:|^)]'), ''),
    (re.compile(r'\\ '), ' '), (re.compile(r'\\s[-+]?\d'), ''), (re.compile(r'\\\\'), '\\\\'),
]
_ROFF_BREAK = frozenset('PP LP P TP IP HP SH SS sp br nf fi TS TE EX EE RS RE'.split())
_ROFF_FONT = frozenset('B I SM SB BR RB IR RI BI IB'.split())


def roff_to_text(source: str) -> str:
    """man(7) roff: section headings and font macros keep their words; other requests and escapes go."""
    out: list[str] = []
    for line in source.split('\n'):
        if line.startswith(('.\\"', "'\\\"", '.\\}', '\\"')) or line in ('.', "'"):
            continue
        if line.startswith(('.', "'")):
            request, _, args = line[1:].strip().partition(' ')
            if request in ('SH', 'SS'):
                out.extend(['', args.strip().strip('"'), ''])
            elif request in _ROFF_FONT:
                words = re.findall(r'"[^"]*"|\S+', args)
                joiner = ' ' if len(request) == 1 else ''
                out.append(joiner.join(w.strip('"') for w in words))
            elif request == 'IP' and args:
                out.extend(['', args.split('"')[1] if args.startswith('"') else args.split()[0]])
            elif request in _ROFF_BREAK:
                out.append('')
            continue
        out.append(line)
    text = '\n'.join(out)
    for pattern, replacement in _ROFF_ESCAPES:
        text = pattern.sub(replacement, text)
    return tidy(text)


# ---------------------------------------------------------------- TeX, Markdown, AsciiDoc, texinfo, wikitext
def tex_to_text(source: str) -> str:
    """(plain) TeX: comments, environments and control words go; arguments and math content stay."""
    text = re.sub(r'(?<!\\)%.*', '', source)
    text = re.sub(r'\\(begin|end)\{[^}]*\}', '', text)
    text = re.sub(r'\\[a-zA-Z@]+\*?', ' ', text)
    text = re.sub(r'\\(.)', r'\1', text)
    text = re.sub(r'[{}$]', '', text)
    return tidy(re.sub(r'[ \t]{2,}', ' ', text))


def markdown_to_text(source: str) -> str:
    """Markdown: HTML comments, heading hashes, link targets and emphasis marks go."""
    text = re.sub(r'<!--.*?-->', '', source, flags=re.S)
    text = re.sub(r'^#{1,6}\s*', '', text, flags=re.M)
    text = re.sub(r'!?\[([^\]]*)\]\([^)]*\)', r'\1', text)
    text = re.sub(r'^\[[^\]]+\]:\s*\S+.*$', '', text, flags=re.M)
    text = re.sub(r'\[([^\]]*)\]\[[^\]]*\]', r'\1', text)
    text = re.sub(r'(\*\*|__)(\S(?:.*?\S)?)\1', r'\2', text)
    return tidy(re.sub(r'<[^>\n]+>', '', text))


def asciidoc_to_text(source: str) -> str:
    """AsciiDoc (git's manuals): block delimiters, attributes, include lines and link macros go."""
    text = re.sub(r'^(-{4,}|={4,}|\.{4,}|\+|\*{4,}|_{4,})\s*$', '', source, flags=re.M)
    text = re.sub(r'^(:[\w-]+:.*|include::.*|\[\[.*\]\]|\[[\w ,="-]*\])\s*$', '', text, flags=re.M)
    text = re.sub(r'linkgit:([\w.-]+)\[\d\]', r'\1', text)
    text = re.sub(r'(\w+)::\s*$', r'\1:', text, flags=re.M)
    return tidy(re.sub(r"(?<!\w)[`'*]([^`'*\n]+)[`'*](?!\w)", r'\1', text))


def info_to_text(source: str) -> str:
    """GNU info: node separators and their 'File: … Node: …' header lines go."""
    text = re.sub(r'\x1f\n?(File: [^\n]*)?', '\n', source)
    return tidy(re.sub(r'^Tag Table:.*', '', text, flags=re.M | re.S))


def _strip_nested(text: str, opening: str, closing: str) -> str:
    """Remove balanced opening…closing spans (templates, tables), innermost first."""
    pattern = re.compile(re.escape(opening) + r'(?:(?!' + re.escape(opening) + r').)*?' + re.escape(closing), re.S)
    previous = None
    while previous != text:
        previous, text = text, pattern.sub('', text)
    return text


def wikitext_to_text(source: str) -> str:
    """MediaWiki markup: templates, tables, refs, files and categories go; links keep their label."""
    text = html.unescape(source)
    text = re.sub(r'<!--.*?-->', '', text, flags=re.S)
    text = re.sub(r'<ref[^>]*/>|<ref[^>]*>.*?</ref>', '', text, flags=re.S)
    text = _strip_nested(text, '{{', '}}')
    text = _strip_nested(text, '{|', '|}')
    text = re.sub(r'\[\[(File|Image|Category|[a-z]{2,3}(-[a-z]+)?):[^\[\]]*(\[\[[^\]]*\]\][^\[\]]*)*\]\]', '', text)
    text = re.sub(r'\[\[(?:[^|\]]*\|)?([^\]]*)\]\]', r'\1', text)
    text = re.sub(r'\[https?://\S+\s([^\]]*)\]', r'\1', text)
    text = re.sub(r'\[https?://\S+\]', '', text)
    text = re.sub(r"'{2,}", '', text)
    text = re.sub(r'^(=+)\s*(.*?)\s*\1\s*$', r'\2', text, flags=re.M)
    return tidy(re.sub(r'<[^>\n]+>', '', text))


# ---------------------------------------------------------------- paragraphs, dedupe keys, reshaping
def paragraphs(text: str) -> list[str]:
    """Blank-line separated blocks: the unit of dedupe."""
    return [p for p in re.split(r'\n\s*\n', text) if p.strip()]


def paragraph_key(paragraph: str) -> int:
    """64-bit hash of the normalised paragraph: NFKC, lower case, whitespace runs as one space."""
    norm = ' '.join(unicodedata.normalize('NFKC', paragraph).lower().split())
    return int.from_bytes(hashlib.blake2b(norm.encode('utf-8'), digest_size=8).digest(), 'little')


def chunk(text: str, max_chars: int) -> list[str]:
    """Split a long text at paragraph boundaries into pieces of at most ~max_chars."""
    pieces, current, size = [], [], 0
    for para in paragraphs(text):
        if current and size + len(para) > max_chars:
            pieces.append('\n\n'.join(current))
            current, size = [], 0
        current.append(para)
        size += len(para) + 2
    if current:
        pieces.append('\n\n'.join(current))
    return pieces


def pack(records: list[str], target_chars: int) -> list[str]:
    """Group short records (dictionary entries, ontology terms) into page-sized documents, in order."""
    return chunk('\n\n'.join(r.strip() for r in records if r.strip()), target_chars)
