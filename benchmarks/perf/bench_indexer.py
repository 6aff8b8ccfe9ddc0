"""Indexer speed per stage, against DSIR and bare sentence-transformers in the same run.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m benchmarks.perf.bench_indexer [--repeats 3] [--minilm-docs 800]
        [--source benchmarks/corpus/cache/corpus/subsets/pool_100mb.jsonl.zst --files 16 --minilm-docs 0]
        [--minilm-only]

* lsi end to end (default options: token-id features, 1024-token windows, 16 -> 256 clusters) on all
  26,227 real Wikipedia summaries (11 MB, in 8 files), or on `--source` cut into `--files` files, on 1
  process and on 2 (torchrun), and lsi on words (`--lsi-features words`) on 1 process, vs DSIR
  (`data-selection` HashedNgramDSIR with num_proc=2: fit the importance estimator + compute
  importance weights over the same files). Target: lsi >= 5x DSIR's MB/s at 30 and 100 MB, >= 3x at
  11 MB, on 1 process. Times are the jobs' own (imports and the launcher excluded, as for DSIR, which
  runs in this process).
* lsi's hashed word n-grams (`cis_stream/embedders/hashing.py`) against scikit-learn's `HashingVectorizer`,
  which gives the same matrix, and the token-id n-grams lsi counts by default, on the 1024-token windows
  of the first ~6 MB of the corpus.
* minilm on the first `--minilm-docs` English summaries: the index's embed stage vs a bare
  `SentenceTransformer.encode` of the same window texts. Target: >= 0.9x the bare throughput.
  Then its backends on the same windows, PyTorch against ONNX Runtime fp32 and int8
  (`--minilm-backend`), and how many windows each int8/fp32-ONNX vector puts in the leaf the PyTorch
  vector is in, on a 16 -> 64 tree fit on the PyTorch vectors. Target: int8 >= 5x PyTorch, >= 95% same leaf.
Medians of `--repeats` runs, baseline and ours alternating.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import shutil
import sys
import tempfile

from benchmarks import OUT
from benchmarks.perf.common import launch_index, median, split_corpus, timed, wiki_corpus
from cis_stream.index.job import build_index

STAGES = ('read_tokenize', 'fit_embedder', 'embed', 'fit_tree', 'assign', 'pack_write')


def run_dsir(files: list[str], target: str, work: str) -> float:
    from data_selection import HashedNgramDSIR
    shutil.rmtree(work, ignore_errors=True)

    def job():
        dsir = HashedNgramDSIR(files, [target], cache_dir=work, num_proc=2, min_example_length=1)
        dsir.fit_importance_estimator(num_tokens_to_fit='auto')
        dsir.compute_importance_weights()
    return timed(job)[0]


def run_index(corpus: str, out: str, **options) -> dict:
    index = build_index([corpus], out, overwrite=True, progress=False, seed=0, **options)
    return index.manifest


def minilm_inputs(path: str, docs: int) -> str:
    subset = os.path.join(OUT, f'wiki_en_{docs}.jsonl')
    with open(path, encoding='utf-8') as src, open(subset, 'w', encoding='utf-8') as dst:
        dst.writelines(itertools.islice((line for line in src if '"en-us"' in line), docs))
    return subset


def bare_encode_seconds(subset: str) -> tuple[float, int]:
    """sentence-transformers alone on exactly the windows the indexer embeds."""
    from cis_stream.embedders.minilm import MiniLMEmbedder
    from cis_stream.text.readers import read_documents
    from cis_stream.text.tokens import load_tokenizer, make_windows
    texts = make_windows(load_tokenizer(), [d.text for d in read_documents([subset])], 1024).texts
    model = MiniLMEmbedder().model
    seconds, _ = timed(model.encode, texts, batch_size=64, convert_to_numpy=True, normalize_embeddings=True,
                       show_progress_bar=False)
    return seconds, len(texts)


def main() -> int:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.perf.bench_indexer')
    parser.add_argument('--repeats', type=int, default=3)
    parser.add_argument('--minilm-docs', type=int, default=800, help='0 skips the minilm comparison')
    parser.add_argument('--source', help='a corpus file to index instead of the Wikipedia summaries')
    parser.add_argument('--files', type=int, default=8, help='files the corpus is cut into')
    parser.add_argument('--minilm-only', action='store_true', help='only the minilm comparisons (no lsi, DSIR)')
    args = parser.parse_args()
    os.environ.setdefault('TMPDIR', tempfile.mkdtemp(prefix='cis-bench.'))
    if not args.minilm_only:
        lsi_against_dsir(args)
    if args.minilm_docs:
        minilm(args.minilm_docs, args.repeats)
    return 0


def lsi_against_dsir(args: argparse.Namespace) -> None:
    """lsi end to end on 1 and 2 processes against DSIR, its stages, and its n-gram hashing."""
    split = split_corpus(args.source or wiki_corpus(), args.files)
    files = sorted(os.path.join(split, name) for name in os.listdir(split))
    megabytes = sum(os.path.getsize(path) for path in files) / 1e6
    target = os.path.join(OUT, 'dsir_target.jsonl')
    with open(target, 'w', encoding='utf-8') as dst:
        for path in files:
            with open(path, encoding='utf-8') as src:   # a 2.5% sample as the "specialist" target
                dst.writelines(itertools.islice(src, 0, None, 40))

    dsir, lsi, lsi_two, lsi_words, stages = [], [], [], [], {s: [] for s in STAGES}
    for _ in range(args.repeats):
        dsir.append(run_dsir(files, target, os.path.join(OUT, 'dsir_cache')))
        manifest = run_index(split, os.path.join(OUT, 'bench_lsi_index'), embedder='lsi')
        lsi.append(manifest['timings']['total'])
        for stage in STAGES:
            stages[stage].append(manifest['timings'][stage])
        lsi_two.append(launch_index(2, split, os.path.join(OUT, 'bench_lsi_index_2'))['total'])
        lsi_words.append(run_index(split, os.path.join(OUT, 'bench_lsi_index'), embedder='lsi',
                                   embedder_config={'features': 'words'})['timings']['total'])
    windows = manifest['totals']['windows']
    print(f'\ncorpus: {split} ({megabytes:.1f} MB, {windows:,} windows of <= 1024 tokens)')
    print('\n| lsi stage | seconds (median) | MB/s | windows/s |\n|---|---|---|---|')
    for stage in STAGES:
        seconds = median(stages[stage])
        print(f'| {stage} | {seconds:.2f} | {megabytes / seconds:.1f} | {windows / seconds:,.0f} |')
    print('\n| end to end | seconds (median) | MB/s | ratio to DSIR |\n|---|---|---|---|')
    print(f'| DSIR fit + importance weights | {median(dsir):.2f} | {megabytes / median(dsir):.2f} | 1.00 |')
    for name, runs in (('cis_stream index, lsi, 1 process', lsi), ('cis_stream index, lsi, 2 processes', lsi_two),
                       ('cis_stream index, lsi on words, 1 process', lsi_words)):
        print(f'| {name} | {median(runs):.2f} | {megabytes / median(runs):.2f} | {median(dsir) / median(runs):.2f} |')

    print(json.dumps({'dsir_s': dsir, 'lsi_s': lsi, 'lsi_2_processes_s': lsi_two, 'lsi_words_s': lsi_words}))
    hashing(files, args.repeats)


def hashing(files: list[str], repeats: int, megabytes: float = 6.0) -> None:
    import numpy as np
    from sklearn.feature_extraction.text import HashingVectorizer

    from cis_stream.embedders.hashing import hashed_token_ngrams, hashed_word_ngrams
    from cis_stream.text.readers import read_documents
    from cis_stream.text.tokens import load_tokenizer, make_windows
    texts, size = [], 0
    for doc in read_documents(files):
        texts.append(doc.text)
        size += len(doc.text)
        if size > megabytes * 1e6:
            break
    cut = make_windows(load_tokenizer(), texts, 1024)
    windows, ids = cut.texts, cut.token_windows()
    reference = HashingVectorizer(n_features=1 << 16, ngram_range=(1, 2), alternate_sign=False, norm=None,
                                  dtype=np.float32)
    theirs, words, tokens = [], [], []
    for _ in range(repeats):
        theirs.append(timed(reference.transform, windows)[0])
        words.append(timed(hashed_word_ngrams, windows, 1 << 16)[0])
        tokens.append(timed(hashed_token_ngrams, ids, 1 << 16)[0])
    print(f'\nlsi n-gram hashing, {len(windows):,} windows ({size / 1e6:.1f} M characters)')
    print('| hashing | seconds (median) | ratio |\n|---|---|---|')
    print(f'| scikit-learn HashingVectorizer (words) | {median(theirs):.2f} | 1.00 |')
    print(f'| cis_stream.hashing, words (the same matrix) | {median(words):.2f} | '
          f'{median(theirs) / median(words):.2f} |')
    print(f'| cis_stream.hashing, token ids (the default) | {median(tokens):.2f} | '
          f'{median(theirs) / median(tokens):.2f} |')


def minilm(docs: int, repeats: int) -> None:
    subset = minilm_inputs(wiki_corpus(), docs)
    bare, ours = [], []
    for _ in range(repeats):
        seconds, count = bare_encode_seconds(subset)
        bare.append(count / seconds)
        manifest = run_index(subset, os.path.join(OUT, 'bench_minilm_index'), embedder='minilm', levels=[4, 16])
        ours.append(manifest['totals']['windows'] / manifest['timings']['embed'])
    print(f'\nminilm on {docs} English summaries ({count} windows)')
    print('| embedder | windows/s (median) | ratio |\n|---|---|---|')
    print(f'| bare sentence-transformers encode | {median(bare):.1f} | 1.00 |')
    print(f'| cis_stream embed stage | {median(ours):.1f} | {median(ours) / median(bare):.2f} |')
    print(json.dumps({'bare_wps': bare, 'ours_wps': ours}))
    minilm_backends(subset, repeats)


def minilm_backends(subset: str, repeats: int) -> None:
    from cis_stream.embedders.minilm import BACKENDS, MiniLMEmbedder
    from cis_stream.text.readers import read_documents
    from cis_stream.text.tokens import load_tokenizer, make_windows
    from cis_stream.tree import fit_tree
    texts = make_windows(load_tokenizer(), [d.text for d in read_documents([subset])], 1024).texts
    models = {name: MiniLMEmbedder(backend=name) for name in BACKENDS}
    rates: dict[str, list[float]] = {name: [] for name in BACKENDS}
    vectors = {}
    for _ in range(repeats):
        for name, model in models.items():  # alternating, so that the machine's drift hits each alike
            seconds, vectors[name] = timed(model.embed, texts)
            rates[name].append(len(texts) / seconds)
    tree = fit_tree(vectors['torch'], [16, 64], seed=0)
    leaves = {name: tree.assign(v)[:, -1] for name, v in vectors.items()}
    base = median(rates['torch'])
    print(f'\nminilm backends on {len(texts)} windows (same-leaf: on a 16 -> 64 tree fit on the PyTorch vectors)')
    print('| backend | windows/s (median) | ratio | same leaf as PyTorch |\n|---|---|---|---|')
    for name in BACKENDS:
        same = float((leaves[name] == leaves['torch']).mean())
        print(f'| {name} | {median(rates[name]):.1f} | {median(rates[name]) / base:.2f} | {same:.1%} |')
    print(json.dumps({'backend_wps': rates}))


if __name__ == '__main__':
    sys.exit(main())
