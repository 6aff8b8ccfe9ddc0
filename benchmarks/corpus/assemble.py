"""Pure steps between extracted documents and the published corpus: split, dedupe, subsets, file lists.

Documents are dicts {'text', 'source', 'id'}. Nothing here touches the network or the package cache.
"""

from __future__ import annotations

import io
import json
import os
import random
from pathlib import Path
from typing import Iterable, Iterator

import zstandard

from .clean import paragraph_key, paragraphs

MIN_PARA_CHARS = 32   # shorter paragraphs ("Parameters", "Examples", speaker names) are never deduped
MIN_DOC_CHARS = 200   # documents shorter than this after cleaning or dedupe are dropped (and counted)


def split_documents(docs: list[dict], sizes: dict[str, int], seed: int, domain: str) -> dict[str, list[dict]]:
    """Document-level splits: sort by (source, id), shuffle with a seed named for the domain, cut in
    the order of `sizes` (e.g. test, validation, train); what is left is 'rest'.

    The result depends only on the documents, the seed and the domain name, not on reading order.
    """
    order = sorted(docs, key=lambda d: (d['source'], d['id'], d['text']))
    random.Random(f'{seed}:{domain}').shuffle(order)
    splits, start = {}, 0
    for name, size in sizes.items():
        splits[name] = order[start:start + size]
        start += size
    splits['rest'] = order[start:]
    return splits


class Deduper:
    """Exact dedupe of normalised paragraphs across everything it is fed, in feeding order.

    The first document that holds a paragraph keeps it; later copies are cut from their documents.
    Feed evaluation splits first so that they keep their text and the pool loses the copies.
    """

    def __init__(self) -> None:
        self.seen: set[int] = set()
        self.paragraphs_dropped = 0
        self.documents_dropped = 0

    def __call__(self, doc: dict) -> dict | None:
        kept = []
        for para in paragraphs(doc['text']):
            if len(para.strip()) >= MIN_PARA_CHARS:
                key = paragraph_key(para)
                if key in self.seen:
                    self.paragraphs_dropped += 1
                    continue
                self.seen.add(key)
            kept.append(para)
        text = '\n\n'.join(kept)
        if len(text) < MIN_DOC_CHARS:
            self.documents_dropped += 1
            return None
        return dict(doc, text=text)


def prefix_by_size(docs: list[dict], max_bytes: float) -> list[dict]:
    """The longest prefix of docs whose UTF-8 text fits in max_bytes (docs are in spread order)."""
    out, total = [], 0
    for doc in docs:
        size = len(doc['text'].encode('utf-8'))
        if total + size > max_bytes:
            break
        out.append(doc)
        total += size
    return out


def subset(pool: dict[str, list[dict]], target_mb: float) -> list[dict]:
    """About target_mb of the pool: the same fraction of every source, each a prefix of its spread order,
    so a smaller subset is contained in a larger one and keeps the mix of sources."""
    total = sum(text_bytes(docs) for docs in pool.values())
    fraction = min(1.0, target_mb * 1e6 / total)
    return [doc for docs in pool.values() for doc in prefix_by_size(docs, fraction * text_bytes(docs))]


def text_bytes(docs: Iterable[dict]) -> int:
    return sum(len(d['text'].encode('utf-8')) for d in docs)


def write_jsonl_zst(path: Path, docs: Iterable[dict]) -> int:
    """Write docs as zstd-compressed JSON lines (atomically); return how many were written."""
    tmp = path.with_name(path.name + '.building-tmp')
    path.parent.mkdir(parents=True, exist_ok=True)
    count = 0
    with open(tmp, 'wb') as raw, zstandard.ZstdCompressor(level=10).stream_writer(raw) as writer:
        for doc in docs:
            writer.write((json.dumps(doc, ensure_ascii=False) + '\n').encode('utf-8'))
            count += 1
    os.replace(tmp, path)
    return count


def read_jsonl_zst(path: Path) -> Iterator[dict]:
    with open(path, 'rb') as raw, zstandard.ZstdDecompressor().stream_reader(raw) as reader:
        for line in io.TextIOWrapper(reader, encoding='utf-8'):
            yield json.loads(line)


def pool_files(manifest: dict, domain: str, setting: str) -> list[str]:
    """The generalist pool for one specialist domain, as files relative to the corpus directory.

    in_pool: the common pool plus the 'rest' of every specialist domain, the target's included.
    out_of_pool: the same without the target domain's rest, so none of its source is in the pool.
    """
    if setting not in ('in_pool', 'out_of_pool'):
        raise ValueError(f'setting {setting!r}: use in_pool or out_of_pool')
    if domain not in manifest['domains']:
        raise ValueError(f'domain {domain!r}: the corpus has {sorted(manifest["domains"])}')
    rests = [d['files']['rest'] for name, d in manifest['domains'].items()
             if setting == 'in_pool' or name != domain]
    return list(manifest['pool']['files']) + rests
