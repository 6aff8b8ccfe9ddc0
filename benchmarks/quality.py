"""Quality: does training on the CIS mixture beat the alternatives on real specialist text?

    .venv/bin/python -m benchmarks.corpus.build                  # the corpus (cached)
    .venv/bin/python benchmarks/quality.py [--steps 300] [--seeds 17] [--only main,multitask,...]

Out-of-pool setting: the generalist pool is the corpus's common pool (no text of any specialist
source), one index for every domain: lsi, 256-token windows, 128-token samples, 16 -> 128 -> 1024
clusters, the pool's own 8k BPE tokenizer. Each domain's train split is the specialist sample;
its test split and a held-out slice of the pool (1 document in 400, kept out of the index) give
the specialist and generalist perplexities. Every run trains the same model (GPT-2 shape,
d_model 128, 2 layers) for the same steps, batch and seed with `train.py` (Composer), on:

  uniform       the pool as is (ClusteredImportanceDataset without weights)
  cis           the CIS mixture, default level rule; cis@L at each tree level L
  dsir          DSIR (data-selection HashedNgramDSIR importance weights over the pool documents,
                then Gumbel top-k sampling up to the training token budget)
  dsir-chunks   the same, on the pool documents cut into ~2,000-character pieces
  classifier    logistic regression on the index's own lsi embeddings (specialist train vs
                pool), pool documents sampled by p/(1-p) up to the token budget
  specialist    the specialist train split alone, repeated

plus a two-domain mixture, continued pretraining (a uniform checkpoint continued on CIS vs on
uniform), and ablations (tree level x specialist-set size, smoothing, max-repeat, and the embedder:
minilm against lsi on a ~10 MB subset of the pool, `--only embedders`), and the in-pool setting
(`--only in_pool`: the pool plus every domain's `rest` documents, uniform against CIS). Selected
documents are trained on through a one-cluster index, so every method uses the same loader.
Everything is cached under benchmarks/out/quality: rerunning resumes where it stopped.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import subprocess
import sys
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from common import OUT, ROOT  # noqa: E402

from cis_stream.format.reader import CISIndex  # noqa: E402
from cis_stream.index.job import build_index  # noqa: E402
from cis_stream.text.readers import read_documents  # noqa: E402

WORK = os.path.join(OUT, 'quality')
PLOTS = os.path.join(ROOT, 'benchmarks', 'plots')
LEVELS = [16, 128, 1024]
WINDOW, SEQ_LEN, BATCH = 256, 128, 16
HOLDOUT_EVERY = 400
CHUNK_CHARS = 2000
EMBEDDER_SUBSET_EVERY = 30  # the pool subset for the minilm-vs-lsi ablation (~10 MB)
EMBEDDER_LEVELS = [16, 128]
EVAL_BATCHES = 20


def log(message: str) -> None:
    print(f'[{time.strftime("%H:%M:%S")}] {message}', flush=True)


def stable_hash(text: str) -> int:
    return int.from_bytes(hashlib.blake2b(text.encode('utf-8'), digest_size=8).digest(), 'little')


def write_jsonl(path: str, texts) -> str:
    tmp = path + '.tmp'
    with open(tmp, 'w', encoding='utf-8') as handle:
        for text in texts:
            handle.write(json.dumps({'text': text}, ensure_ascii=False) + '\n')
    os.replace(tmp, path)
    return path


def texts_of(files: list[str]) -> list[str]:
    return [d.text for d in read_documents(files) if hasattr(d, 'text')]


# Data ----------------------------------------------------------------------------------------

class Corpus:
    """The benchmark corpus (benchmarks/corpus/build.py) seen through its manifest."""

    def __init__(self, root: str):
        with open(os.path.join(root, 'corpus_manifest.json'), encoding='utf-8') as handle:
            self.manifest = json.load(handle)
        self.root = root
        self.domains = list(self.manifest['domains'])

    def files(self, relative: list[str] | str) -> list[str]:
        return [os.path.join(self.root, f) for f in ([relative] if isinstance(relative, str) else relative)]

    def split(self, domain: str, name: str) -> list[str]:
        return self.files(self.manifest['domains'][domain]['files'][name])


def prepare_pool(corpus: Corpus) -> tuple[list[str], str]:
    """The pool minus a held-out slice (1 document in HOLDOUT_EVERY, by a hash of its text)."""
    folder = os.path.join(WORK, 'pool')
    held_out = os.path.join(WORK, 'generalist_test.jsonl')
    files = [os.path.join(folder, os.path.basename(f).replace('.jsonl.zst', '.jsonl'))
             for f in corpus.manifest['pool']['files']]
    if os.path.exists(held_out):
        return files, held_out
    os.makedirs(folder, exist_ok=True)
    kept_out = []
    for source, target in zip(corpus.files(corpus.manifest['pool']['files']), files):
        texts = texts_of([source])
        kept_out += [t for t in texts if stable_hash(t) % HOLDOUT_EVERY == 0]
        write_jsonl(target, (t for t in texts if stable_hash(t) % HOLDOUT_EVERY))
    write_jsonl(held_out, kept_out)
    log(f'pool: {len(files)} files; {len(kept_out)} documents held out for generalist perplexity')
    return files, held_out


def tokenizer_path(pool: list[str]) -> str:
    from cis_stream.text.tokens import train_bpe_tokenizer
    path = os.path.join(WORK, 'tokenizer.json')
    if not os.path.exists(path):
        rng = np.random.default_rng(0)
        texts = [t for t in texts_of(pool) if rng.random() < 0.1]  # a 10% sample of the pool
        train_bpe_tokenizer(texts, 8192, path)
    return path


def pool_index(path: str, pool: list[str], tokenizer: str, processes: int, embedder: str = 'lsi',
               levels: list[int] | None = None) -> CISIndex:
    """An index of `pool` at `path` (built once): 256-token windows, 128-token samples."""
    if not os.path.exists(path):
        log(f'indexing {path} with {embedder} on {processes} process(es)')
        launcher = ([sys.executable, '-m', 'torch.distributed.run', '--standalone', '--nproc_per_node', str(processes)]
                    if processes > 1 else [sys.executable])
        subprocess.run(launcher + ['-m', 'cis_stream.index', *pool, '--out', path, '--embedder', embedder,
                                   '--levels', ','.join(map(str, levels or LEVELS)), '--window', str(WINDOW),
                                   '--seq-len', str(SEQ_LEN), '--tokenizer', tokenizer], check=True)
    return CISIndex.open(path)


def one_cluster_index(name: str, texts: list[str], tokenizer: str) -> str:
    """Selected documents as a trainable index (one cluster: the loader then draws uniformly)."""
    path = os.path.join(WORK, 'selected', name)
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        source = write_jsonl(path + '.jsonl', texts)
        build_index([source], path, embedder='lsi', embedder_config={'dim': 8}, levels=[1], window=WINDOW,
                    seq_len=SEQ_LEN, tokenizer=tokenizer, progress=False)
    return path


def weights_file(index: CISIndex, name: str, specialist: list[str], *extra: str) -> str:
    path = os.path.join(WORK, 'weights', f'{name}.weights.json')
    if not os.path.exists(path):
        os.makedirs(os.path.dirname(path), exist_ok=True)
        command = ['weights', '--index', index.root, *extra, '-o', path]
        if specialist:
            command[3:3] = ['--specialist', *specialist]
        from cis_stream.cli import main as cli
        if cli(command):
            raise SystemExit(f'cis-stream {" ".join(command)} failed')
    return path


def budget_tokens(steps: int) -> int:
    return steps * BATCH * SEQ_LEN


def take_to_budget(scores: np.ndarray, lengths: np.ndarray, budget: int, seed: int) -> np.ndarray:
    """Gumbel top-k on log scores (sampling without replacement) until the token budget is met."""
    noisy = scores + np.random.default_rng(seed).gumbel(size=len(scores))
    order = np.argsort(-noisy, kind='stable')
    count = int(np.searchsorted(np.cumsum(lengths[order]), budget)) + 1
    return np.sort(order[:count])


def pool_documents(pool: list[str]) -> tuple[list[str], np.ndarray]:
    texts = texts_of(pool)
    return texts, np.asarray([len(t) for t in texts], np.int64)


def read_records(path: str):
    """DSIR's loader for any input format (its default reads plain JSON lines only)."""
    for doc in read_documents([path]):
        if hasattr(doc, 'text'):
            yield {'text': doc.text}


def chunk_pool(pool: list[str]) -> list[str]:
    """The pool cut into pieces of about CHUNK_CHARS at whitespace, as DSIR is used on the Pile
    (examples of similar length): its log importance weight is a sum over n-grams, so on whole
    documents it grows with length and picks a few very long ones."""
    folder = os.path.join(WORK, 'pool_chunks')
    files = [os.path.join(folder, os.path.basename(f)) for f in pool]
    if not os.path.isdir(folder):
        os.makedirs(folder + '.tmp', exist_ok=True)
        for source, target in zip(pool, files):
            pieces = []
            for text in texts_of([source]):
                start = 0
                while start < len(text):
                    stop = text.rfind(' ', start + CHUNK_CHARS // 2, start + CHUNK_CHARS)
                    if len(text) - start <= CHUNK_CHARS:
                        stop = len(text)
                    elif stop < 0:  # no space in the second half: cut mid-word
                        stop = start + CHUNK_CHARS
                    if text[start:stop].strip():
                        pieces.append(text[start:stop])
                    start = stop
            write_jsonl(os.path.join(folder + '.tmp', os.path.basename(target)), pieces)
        os.rename(folder + '.tmp', folder)
    return files


def dsir_log_weights(pool: list[str], targets: dict[str, list[str]], name: str = 'dsir') -> dict[str, np.ndarray]:
    """DSIR's own log importance weights (data-selection HashedNgramDSIR) of every pool document,
    for every domain. One pass over the pool serves all domains (`separate_targets`: one target
    model per domain against the same raw model, exactly what a DSIR run per domain computes)."""
    from data_selection import HashedNgramDSIR
    cache = os.path.join(WORK, name)
    path, names = os.path.join(cache, 'log_weights.npy'), os.path.join(cache, 'domains.json')
    domains = list(targets)
    if os.path.exists(path):
        with open(names, encoding='utf-8') as handle:
            cached = json.load(handle)  # the columns, by domain name: --domains may differ per run
        if set(domains) - set(cached):
            raise SystemExit(f'{cache} holds DSIR weights for {cached} only: delete it to recompute for {domains}')
        logw = np.load(path)
        return {d: logw[:, cached.index(d)] for d in domains}
    dsir = HashedNgramDSIR(pool, [targets[d][0] for d in domains], cache_dir=cache, num_proc=2,
                           target_load_dataset_fn=read_records, min_example_length=1, separate_targets=True)
    dsir.fit_importance_estimator(num_tokens_to_fit='auto')
    dsir.compute_importance_weights()
    shards = dsir._get_virtually_sharded_datasets(pool)
    logw = np.concatenate([np.load(os.path.join(dsir.log_importance_weights_dir, f'{i}.npy'))
                           for i in range(len(shards))])
    logw = logw.reshape(len(logw), len(domains))
    with open(names, 'w', encoding='utf-8') as handle:
        json.dump(domains, handle)
    np.save(path, logw)
    return {d: logw[:, i] for i, d in enumerate(domains)}


def dsir_selection(logw: np.ndarray, texts, chars, budget_chars: int, seed: int) -> list[str]:
    """Sampling by DSIR's weights up to the token budget (the package's `resample` takes a
    document count; the comparison needs equal tokens)."""
    assert len(logw) == len(texts), 'DSIR saw another number of pool documents'
    return [texts[i] for i in take_to_budget(logw, chars, budget_chars, seed)]


def classifier_selection(index: CISIndex, target: list[str], texts, chars, budget_chars: int,
                         seed: int) -> list[str]:
    """The paper's classifier baseline on the index's embeddings (first 1,000 characters)."""
    from sklearn.linear_model import LogisticRegression
    embed = lambda docs: np.concatenate([index.embedder.embed([d[:1000] for d in docs[i:i + 4096]])
                                         for i in range(0, len(docs), 4096)])
    cache = os.path.join(WORK, 'pool_embeddings.npy')
    if not os.path.exists(cache):
        np.save(cache, embed(texts))
    pool_vectors = np.load(cache)
    positives = embed(texts_of(target))
    rng = np.random.default_rng(seed)
    negatives = pool_vectors[rng.choice(len(pool_vectors), min(len(pool_vectors), 10 * len(positives)), replace=False)]
    model = LogisticRegression(max_iter=1000, class_weight='balanced')
    model.fit(np.concatenate([positives, negatives]), np.r_[np.ones(len(positives)), np.zeros(len(negatives))])
    log_odds = model.decision_function(pool_vectors)  # log p/(1-p): the importance weight's log
    return [texts[i] for i in take_to_budget(log_odds, chars, budget_chars, seed)]


# Training ------------------------------------------------------------------------------------

def train(name: str, index: str, weights: str | None, evals: dict[str, str], steps: int, seed: int,
          load_path: str | None = None) -> dict:
    """One train.py run (cached by its results file)."""
    out = os.path.join(WORK, 'runs', name)
    results = os.path.join(out, 'results.json')
    if not os.path.exists(results):
        eval_loaders = ', '.join(f'{{label: {label}, dataset: {{files: [{path}]}}}}' for label, path in evals.items())
        overrides = [
            f'run_name={name}', f'seed={seed}', f'train_loader.dataset.shuffle_seed={seed}',
            f'max_seq_len={SEQ_LEN}', f'global_train_batch_size={BATCH}', f'device_train_microbatch_size={BATCH}',
            f'max_duration={steps}ba', f'eval_interval={steps}ba', f'save_interval={steps}ba',
            f'eval_subset_num_batches={EVAL_BATCHES}', f'train_loader.dataset.index={index}',
            f'eval_loaders=[{eval_loaders}]', f'save_folder={out}/ckpt', f'results_path={results}',
            'console_log_interval=1000ba', 'callbacks={}',
        ]
        if weights:
            overrides.append(f'train_loader.dataset.weights={weights}')
        else:
            overrides.append('train_loader.dataset.weights=null')
        if load_path:
            overrides += [f'load_path={load_path}', 'load_weights_only=true']
        started = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), os.path.join(ROOT, 'yamls', 'cis.yaml'),
                        *overrides], check=True, stdout=subprocess.DEVNULL)
        log(f'trained {name} in {time.perf_counter() - started:.0f} s')
    with open(results, encoding='utf-8') as handle:
        return {label: metrics['LanguagePerplexity'] for label, metrics in json.load(handle).items()}


# The experiments -------------------------------------------------------------------------------

class Bench:
    def __init__(self, args):
        self.args = args
        self.corpus = Corpus(args.corpus)
        if args.domains:
            self.corpus.domains = args.domains.split(',')
        os.makedirs(WORK, exist_ok=True)
        self.pool, self.generalist_test = prepare_pool(self.corpus)
        self.tokenizer = tokenizer_path(self.pool)
        self.index = pool_index(os.path.join(WORK, 'index'), self.pool, self.tokenizer, args.processes)
        totals = self.index.manifest['totals']
        self.chars_per_token = totals['input_bytes'] / totals['tokens']
        self.evals = {d: self.corpus.split(d, 'test')[0] for d in self.corpus.domains}
        self.evals.update({f'{d}_validation': self.corpus.split(d, 'validation')[0] for d in self.corpus.domains})
        self.evals['generalist'] = self.generalist_test
        self.rows: dict[str, dict] = {}  # every run so far (results.json), so reports cover them all
        results = os.path.join(WORK, 'results.json')
        if os.path.exists(results):
            with open(results, encoding='utf-8') as handle:
                self.rows = {row['name']: row for row in json.load(handle)['rows']}
        self._pool_docs = None

    def pool_docs(self):
        if self._pool_docs is None:
            self._pool_docs = pool_documents(self.pool)
        return self._pool_docs

    def run(self, table: str, method: str, domain: str, index: str, weights: str | None, seed: int,
            steps: int | None = None, **extra) -> dict:
        steps = steps or self.args.steps
        name = re.sub(r'[^A-Za-z0-9.+_-]', '', f'{table}-{method}-{domain}-s{seed}'.replace('@', 'L'))
        started = time.perf_counter()
        ppl = train(name, index, weights, self.evals, steps, seed, extra.pop('load_path', None))
        row = {'name': name, 'table': table, 'method': method, 'domain': domain, 'seed': seed, 'steps': steps,
               'perplexity': ppl, 'seconds': round(time.perf_counter() - started, 1), **extra}
        self.rows[name] = row  # a run asked for twice (continued reuses uniform) is one row
        self.save()
        return row

    def selection(self, method: str, domain: str, seed: int) -> str:
        budget_chars = int(budget_tokens(self.args.steps) * self.chars_per_token)
        target = self.corpus.split(domain, 'train')
        name = f'{method}-{domain}-s{seed}'
        if not os.path.exists(os.path.join(WORK, 'selected', name)):
            texts, chars = self.pool_docs()
            targets = {d: self.corpus.split(d, 'train') for d in self.corpus.domains}
            if method == 'dsir':
                chosen = dsir_selection(dsir_log_weights(self.pool, targets)[domain], texts, chars, budget_chars, seed)
            elif method == 'dsir-chunks':
                chunks = chunk_pool(self.pool)
                texts, chars = pool_documents(chunks)
                chosen = dsir_selection(dsir_log_weights(chunks, targets, 'dsir_chunks')[domain], texts, chars,
                                        budget_chars, seed)
            else:
                chosen = classifier_selection(self.index, target, texts, chars, budget_chars, seed)
            log(f'{method} selected {len(chosen)} documents for {domain}')
            return one_cluster_index(name, chosen, self.tokenizer)
        return os.path.join(WORK, 'selected', name)

    def wanted(self, method: str) -> bool:
        return not self.args.methods or method in self.args.methods

    def main_table(self) -> None:
        for seed in self.args.seeds:
            if self.wanted('uniform'):
                self.run('main', 'uniform', 'all', self.index.root, None, seed)
            for domain in self.corpus.domains:
                train_split = self.corpus.split(domain, 'train')
                default = weights_file(self.index, f'{domain}-default', train_split)
                with open(default, encoding='utf-8') as handle:
                    level = json.load(handle)['level']
                if self.wanted('cis'):
                    self.run('main', 'cis', domain, self.index.root, default, seed, level=level)
                for other in range(len(LEVELS)):
                    if other != level and self.wanted(f'cis@{other}'):
                        self.run('main', f'cis@{other}', domain, self.index.root,
                                 weights_file(self.index, f'{domain}-L{other}', train_split, '--level', str(other)),
                                 seed, level=other)
                for method in ('dsir', 'dsir-chunks', 'classifier'):
                    if self.wanted(method):
                        self.run('main', method, domain, self.selection(method, domain, seed), None, seed)
                if self.wanted('specialist'):
                    self.run('main', 'specialist', domain,
                             one_cluster_index(f'specialist-{domain}', texts_of(train_split), self.tokenizer),
                             None, seed)

    def multitask(self) -> None:
        a, b = self.corpus.domains[:2]
        weights = weights_file(self.index, f'{a}+{b}', [], '--task', f'{self.corpus.split(a, "train")[0]}:0.5',
                               '--task', f'{self.corpus.split(b, "train")[0]}:0.5')
        self.run('multitask', 'cis', f'{a}+{b}', self.index.root, weights, self.args.seeds[0])

    def continued(self) -> None:
        """Phase 1 is the main table's uniform run; phase 2 continues it for half as many steps."""
        seed, steps = self.args.seeds[0], self.args.steps
        phase1 = self.run('main', 'uniform', 'all', self.index.root, None, seed)
        checkpoint = os.path.join(WORK, 'runs', phase1['name'], 'ckpt', 'latest-rank0.pt')
        domain = self.args.ablation_domain
        default = weights_file(self.index, f'{domain}-default', self.corpus.split(domain, 'train'))
        self.run('continued', 'uniform -> cis', domain, self.index.root, default, seed, steps // 2,
                 load_path=checkpoint)
        self.run('continued', 'uniform -> uniform', 'all', self.index.root, None, seed, steps // 2,
                 load_path=checkpoint)

    def ablations(self) -> None:
        seed, domain = self.args.seeds[0], self.args.ablation_domain
        texts = texts_of(self.corpus.split(domain, 'train') + self.corpus.split(domain, 'rest'))
        windows = windows_per_doc(self.index, texts)
        for size in (100, 300, 1000):
            count = int(np.searchsorted(np.cumsum(windows), size)) + 1
            sample = write_jsonl(os.path.join(WORK, f'{domain}-spec{size}.jsonl'), texts[:count])
            actual = int(sum(windows[:count]))
            for level in (0, len(LEVELS) - 1):  # the coarsest and the finest level (CPU time)
                weights = weights_file(self.index, f'{domain}-n{size}-L{level}', [sample], '--level', str(level))
                self.run('size x level', f'cis@{level} n{size}', domain, self.index.root, weights, seed,
                         level=level, specialist_windows=actual)
        train_split = self.corpus.split(domain, 'train')
        for smoothing in (0.1,):
            weights = weights_file(self.index, f'{domain}-smooth{smoothing}', train_split, '--smoothing', str(smoothing))
            self.run('smoothing', f'cis smoothing {smoothing}', domain, self.index.root, weights, seed)
        for cap in (1,):
            weights = weights_file(self.index, f'{domain}-cap{cap}', train_split, '--level', str(len(LEVELS) - 1),
                                   '--max-repeat', str(cap), '--tokens', str(budget_tokens(self.args.steps)))
            self.run('max-repeat', f'cis@{len(LEVELS) - 1} max-repeat {cap}', domain, self.index.root, weights, seed)

    def embedders(self) -> None:
        """minilm (the paper's SBERT) against lsi, on a 1-in-EMBEDDER_SUBSET_EVERY subset of the pool.

        minilm embeds ~30-50 windows/s on 2 CPU cores, so the whole pool would take hours; both
        indexes cover the same subset documents, with a 16 -> 128 tree, and one uniform run is the
        reference (uniform draws the same samples from either index).
        """
        seed = self.args.seeds[0]
        subset = os.path.join(WORK, 'embedders', 'pool.jsonl')
        if not os.path.exists(subset):
            os.makedirs(os.path.dirname(subset), exist_ok=True)
            write_jsonl(subset, (t for t in texts_of(self.pool) if stable_hash(t) % EMBEDDER_SUBSET_EVERY == 0))
        indexes = {name: pool_index(os.path.join(WORK, 'embedders', f'index-{name}'), [subset], self.tokenizer, 1,
                                    name, EMBEDDER_LEVELS) for name in ('lsi', 'minilm')}
        self.run('embedder', 'uniform (subset)', 'all', indexes['lsi'].root, None, seed)
        budget = str(budget_tokens(self.args.steps))
        for domain in self.corpus.domains:
            for name, index in indexes.items():
                # The subset is small, so a concentrated mixture repeats its clusters many times;
                # the max-repeat 2 rows compare the two clusterings with that effect capped.
                for label, extra in (('', ()), (' max-repeat 2', ('--max-repeat', '2', '--tokens', budget))):
                    weights = weights_file(index, f'embedder-{name}-{domain}{label.replace(" ", "-")}',
                                           self.corpus.split(domain, 'train'), *extra)
                    with open(weights, encoding='utf-8') as handle:
                        chosen = json.load(handle)
                    self.run('embedder', f'cis {name}{label}', domain, index.root, weights, seed,
                             level=chosen['level'], ess=round(chosen['ess_fraction'], 3))

    def in_pool(self) -> None:
        """The in-pool setting: the pool plus every domain's `rest` documents, indexed together.

        The specialist train/validation/test splits stay out; CIS then has real in-domain text in
        the pool to find, and uniform dilutes it with the rest of the pool.
        """
        seed = self.args.seeds[0]
        extra = [f for f in self.corpus.manifest['settings'][self.corpus.domains[0]]['in_pool'] if not f.startswith('pool/')]
        index = pool_index(os.path.join(WORK, 'index-in-pool'), self.pool + self.corpus.files(extra), self.tokenizer,
                           self.args.processes)
        self.run('in-pool', 'uniform', 'all', index.root, None, seed)
        for domain in self.corpus.domains:
            weights = weights_file(index, f'in-pool-{domain}', self.corpus.split(domain, 'train'))
            with open(weights, encoding='utf-8') as handle:
                level = json.load(handle)['level']
            self.run('in-pool', 'cis', domain, index.root, weights, seed, level=level)

    def save(self) -> None:
        with open(os.path.join(WORK, 'results.json'), 'w', encoding='utf-8') as handle:
            json.dump({'corpus_manifest_sha256': self.corpus.manifest['manifest_sha256'], 'steps': self.args.steps,
                       'batch': BATCH, 'seq_len': SEQ_LEN, 'levels': LEVELS, 'rows': list(self.rows.values())}, handle, indent=1)


def windows_per_doc(index: CISIndex, texts: list[str]) -> np.ndarray:
    from cis_stream.text.tokens import make_windows
    return np.bincount(make_windows(index.tokenizer, texts, WINDOW).doc_index, minlength=len(texts))


def main() -> None:
    global WORK, LEVELS  # --work and --levels replace the defaults (a smoke run on a small corpus)
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--corpus', default=os.path.join(ROOT, 'benchmarks', 'corpus', 'cache', 'corpus'))
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--seeds', type=lambda s: [int(x) for x in s.split(',')], default=[17])
    parser.add_argument('--processes', type=int, default=2, help='indexing processes (torchrun)')
    parser.add_argument('--ablation-domain', default='biomedical')
    parser.add_argument('--only', default='main,multitask,continued,ablations,embedders,in_pool',
                        help='parts to run (cached runs are reused); `report` alone prints the tables')
    parser.add_argument('--domains', default=None, help='comma-separated specialist domains (default: all)')
    parser.add_argument('--methods', type=lambda s: s.split(','), default=None,
                        help='main-table methods to run, e.g. uniform,cis,dsir,dsir-chunks (default: all)')
    parser.add_argument('--levels', default=','.join(map(str, LEVELS)), help='tree of the pool index')
    parser.add_argument('--work', default=WORK, help='cache of every step (default: %(default)s)')
    args = parser.parse_args()
    WORK, LEVELS = args.work, [int(n) for n in args.levels.split(',')]
    bench = Bench(args)
    for part in args.only.split(','):
        {'main': bench.main_table, 'multitask': bench.multitask, 'continued': bench.continued,
         'ablations': bench.ablations, 'embedders': bench.embedders, 'in_pool': bench.in_pool, 'report': lambda: None}[part]()
    log(f'done: {len(bench.rows)} runs')
    print(report(list(bench.rows.values()), bench.corpus.domains))


def _cell(rows, domain, method, label):
    """Mean over seeds (± half their range); `cis@L` includes the default-rule run when it chose level L."""
    found = [r['perplexity'][label] for r in rows if r['domain'] in (domain, 'all') and label in r['perplexity'] and
             (r['method'] == method or (r['method'] == 'cis' and method == f"cis@{r.get('level')}"))]
    if not found:
        return '–'
    spread = f' ±{(max(found) - min(found)) / 2:.0f}' if len(found) > 1 else ''
    return f'{np.mean(found):.1f}{spread}'


def _by_level(main: list[dict], domain: str, label: str) -> dict[int, float]:
    """CIS perplexity on `label` per tree level for `domain`, mean over seeds."""
    per_level: dict[int, list[float]] = {}
    for r in main:
        if r['domain'] == domain and 'level' in r:
            per_level.setdefault(r['level'], []).append(r['perplexity'][label])
    return {level: float(np.mean(values)) for level, values in per_level.items()}


def report(rows: list[dict], domains: list[str]) -> str:
    """Markdown tables of `rows` and the two PNG plots (written to benchmarks/plots/)."""
    main = [r for r in rows if r['table'] == 'main']
    levels = sorted({r['level'] for r in main if 'level' in r})
    out = []
    for label, title in (('{d}', 'specialist test perplexity'), ('generalist', 'generalist held-out perplexity')):
        methods = ['uniform', 'cis'] + [f'cis@{l}' for l in levels] + ['dsir', 'dsir-chunks', 'classifier',
                                                                         'specialist']
        out.append(f'\n**{title}** (lower is better; mean over seeds, ± half the range between seeds)\n')
        out.append('| domain | ' + ' | '.join(methods) + ' | best CIS level (validation) |')
        out.append('|---' * (len(methods) + 2) + '|')
        for d in domains:
            cells = [_cell(main, d, m, label.format(d=d)) for m in methods]
            by_level = _by_level(main, d, f'{d}_validation')
            best = min(by_level, key=by_level.get) if by_level else '–'
            out.append(f'| {d} | ' + ' | '.join(cells) + f' | {best} |')
    other = [r for r in rows if r['table'] != 'main']
    if other:
        out.append('\n| table | method | domain | seed | ' + ' | '.join(domains) + ' | generalist | extra |')
        out.append('|---' * (len(domains) + 6) + '|')
        for r in other:
            extra = {k: v for k, v in r.items() if k in ('level', 'specialist_windows')}
            out.append(f"| {r['table']} | {r['method']} | {r['domain']} | {r['seed']} | "
                       + ' | '.join(f"{r['perplexity'][d]:.1f}" if d in r['perplexity'] else '–' for d in domains)
                       + f" | {r['perplexity']['generalist']:.1f} | {extra or ''} |")
    _plots(rows, domains, levels)
    return '\n'.join(out)


def _plots(rows, domains, levels) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    os.makedirs(PLOTS, exist_ok=True)
    main = [r for r in rows if r['table'] == 'main']
    fig, ax = plt.subplots(figsize=(6, 4))
    for d in domains:
        points = sorted(_by_level(main, d, d).items())
        if points:
            xs = [LEVELS[l] for l, _ in points]
            line, = ax.plot(xs, [p for _, p in points], marker='o', label=f'{d} (CIS)')
            uniform = [r['perplexity'][d] for r in main if r['method'] == 'uniform' and d in r['perplexity']]
            if uniform:
                ax.axhline(np.mean(uniform), color=line.get_color(), linestyle=':', linewidth=1)
    ax.set_xscale('log')
    ax.set_xlabel('clusters at the histogram level')
    ax.set_ylabel('specialist test perplexity')
    ax.set_title('CIS by tree level (dotted: uniform)')
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(os.path.join(PLOTS, 'quality_level.png'), dpi=110)
    plt.close(fig)
    sized = [r for r in rows if r['table'] == 'size x level']
    if sized:
        fig, ax = plt.subplots(figsize=(6, 4))
        domain = sized[0]['domain']
        for level in sorted({r['level'] for r in sized}):
            by_size: dict[int, list[float]] = {}  # mean over seeds
            for r in sized:
                if r['level'] == level:
                    by_size.setdefault(r['specialist_windows'], []).append(r['perplexity'][domain])
            points = sorted((size, float(np.mean(values))) for size, values in by_size.items())
            ax.plot([p[0] for p in points], [p[1] for p in points], marker='o', label=f'{LEVELS[level]} clusters')
        ax.set_xscale('log')
        ax.set_xlabel('specialist windows')
        ax.set_ylabel(f'{domain} test perplexity')
        ax.set_title('specialist-set size x tree level (mean over seeds)')
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(PLOTS, 'quality_size.png'), dpi=110)
        plt.close(fig)


if __name__ == '__main__':
    main()
