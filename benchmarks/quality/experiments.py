"""The runs: one training run (train.py with Composer, cached by its results file) and the tables
of runs (Bench: the main table, multi-task, continued pretraining, ablations, the embedders and the
in-pool setting). Every run so far is kept in results.json under the work folder, and in the
committed record (benchmarks/results/quality_runs.json, for runs on the default work folder): the
work folder is a cache that a fresh checkout lacks, the record is what the tables and plots come from."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time

import numpy as np

from benchmarks import OUT, ROOT
from benchmarks.quality.baselines import chunk_pool, classifier_selection, dsir_log_weights, dsir_selection
from benchmarks.quality.data import (
    BATCH,
    SEQ_LEN,
    Corpus,
    budget_tokens,
    log,
    one_cluster_index,
    pool_documents,
    pool_index,
    prepare_pool,
    stable_hash,
    texts_of,
    tokenizer_path,
    weights_file,
    windows_per_doc,
    write_jsonl,
)

EMBEDDER_SUBSET_EVERY = 30  # the pool subset for the minilm-vs-lsi ablation (~10 MB)
EMBEDDER_LEVELS = [16, 128]
EVAL_BATCHES = 20
RECORD = os.path.join(ROOT, 'benchmarks', 'results', 'quality_runs.json')


def load_rows(path: str) -> dict[str, dict]:
    """The runs a results file holds, by name (none if it does not exist)."""
    if not os.path.exists(path):
        return {}
    with open(path, encoding='utf-8') as handle:
        return {row['name']: row for row in json.load(handle)['rows']}


def eval_history(work: str, name: str) -> list[dict]:
    """A run's evaluations in batch order ({batch, tokens, metrics}); a batch evaluated twice (a
    resumed run replays from its checkpoint) keeps its last record."""
    path = os.path.join(work, 'runs', name, 'evals.jsonl')
    if not os.path.exists(path):
        return []
    records = {}
    with open(path, encoding='utf-8') as handle:
        for line in handle:
            record = json.loads(line)
            records[record['batch']] = record
    return [records[batch] for batch in sorted(records)]


def train(work: str, name: str, index: str, weights: str | None, evals: dict[str, str], steps: int, seed: int,
          load_path: str | None = None, overrides: tuple[str, ...] = ()) -> tuple[dict, float | None]:
    """One train.py run (cached by its results file): final perplexity per eval label, and the run's
    wall seconds (None for a run cached before they were recorded); `overrides` go last (they win)."""
    out = os.path.join(work, 'runs', name)
    results = os.path.join(out, 'results.json')
    if not os.path.exists(results):
        eval_loaders = ', '.join(f'{{label: {label}, dataset: {{files: [{path}]}}}}' for label, path in evals.items())
        command = [
            f'run_name={name}', f'seed={seed}', f'train_loader.dataset.shuffle_seed={seed}',
            f'max_seq_len={SEQ_LEN}', f'global_train_batch_size={BATCH}', f'device_train_microbatch_size={BATCH}',
            f'max_duration={steps}ba', f'eval_interval={steps}ba', f'save_interval={steps}ba',
            f'eval_subset_num_batches={EVAL_BATCHES}', f'train_loader.dataset.index={index}',
            f'eval_loaders=[{eval_loaders}]', f'save_folder={out}/ckpt', f'results_path={results}',
            'console_log_interval=1000ba', f'callbacks={{eval_history: {{path: {out}/evals.jsonl}}}}',
            f'train_loader.dataset.weights={weights or "null"}',
        ]
        if load_path:
            command += [f'load_path={load_path}', 'load_weights_only=true']
        started = time.perf_counter()
        subprocess.run([sys.executable, os.path.join(ROOT, 'train.py'), os.path.join(ROOT, 'yamls', 'cis.yaml'),
                        *command, *overrides], check=True, stdout=subprocess.DEVNULL)
        seconds = round(time.perf_counter() - started, 1)
        with open(os.path.join(out, 'wall_seconds.json'), 'w', encoding='utf-8') as handle:
            json.dump(seconds, handle)
        log(f'trained {name} in {seconds:.0f} s')
    with open(results, encoding='utf-8') as handle:
        ppl = {label: metrics['LanguagePerplexity'] for label, metrics in json.load(handle).items()}
    timing = os.path.join(out, 'wall_seconds.json')
    if not os.path.exists(timing):
        return ppl, None
    with open(timing, encoding='utf-8') as handle:
        return ppl, json.load(handle)


class Bench:
    """The experiments on one corpus, cached under `args.work`, with the pool index's tree `args.levels`."""

    def __init__(self, args):
        self.args = args
        self.work, self.levels = args.work, args.levels
        self.corpus = Corpus(args.corpus)
        if args.domains:
            self.corpus.domains = args.domains.split(',')
        os.makedirs(self.work, exist_ok=True)
        self.pool, self.generalist_test = prepare_pool(self.work, self.corpus)
        self.tokenizer = tokenizer_path(self.work, self.pool)
        self.index = pool_index(os.path.join(self.work, 'index'), self.pool, self.tokenizer, args.processes,
                                self.levels)
        totals = self.index.manifest['totals']
        self.chars_per_token = totals['input_bytes'] / totals['tokens']
        self.evals = {d: self.corpus.split(d, 'test')[0] for d in self.corpus.domains}
        self.evals.update({f'{d}_validation': self.corpus.split(d, 'validation')[0] for d in self.corpus.domains})
        self.evals['generalist'] = self.generalist_test
        # Every run so far (the record, then the cache's results.json), so reports cover them all.
        self.record = RECORD if os.path.abspath(self.work) == os.path.join(OUT, 'quality') else None
        self.rows: dict[str, dict] = (load_rows(self.record) if self.record else {}) | \
            load_rows(os.path.join(self.work, 'results.json'))
        self._pool_docs = None

    def weights(self, index, name: str, specialist: list[str], *extra: str) -> str:
        return weights_file(self.work, index, name, specialist, *extra)

    def pool_docs(self):
        if self._pool_docs is None:
            self._pool_docs = pool_documents(self.pool)
        return self._pool_docs

    def run(self, table: str, method: str, domain: str, index: str, weights: str | None, seed: int,
            steps: int | None = None, evals: dict[str, str] | None = None, overrides: tuple[str, ...] = (),
            tag: str = '', **extra) -> dict:
        steps = steps or self.args.steps
        name = re.sub(r'[^A-Za-z0-9.+_-]', '', f'{table}-{method}-{domain}{tag}-s{seed}'.replace('@', 'L'))
        ppl, seconds = train(self.work, name, index, weights, evals or self.evals, steps, seed,
                             extra.pop('load_path', None), overrides)
        previous = self.rows.get(name, {}).get('seconds')  # a run cached before wall times were kept
        row = {'name': name, 'table': table, 'method': method, 'domain': domain, 'seed': seed, 'steps': steps,
               'perplexity': ppl, 'seconds': seconds if seconds is not None else previous,
               'corpus': self.corpus.manifest['manifest_sha256'][:16], 'pool_index': self.index.fingerprint[:16],
               **extra}
        curve = eval_history(self.work, name)
        if len(curve) > 1:
            row['curve'] = [{'tokens': r['tokens'], 'perplexity': {label: m['LanguagePerplexity']
                                                                   for label, m in r['metrics'].items()}}
                            for r in curve]
        self.rows[name] = row  # a run asked for twice (continued reuses uniform) is one row
        self.save()
        return row

    def selection(self, method: str, domain: str, seed: int) -> str:
        budget_chars = int(budget_tokens(self.args.steps) * self.chars_per_token)
        target = self.corpus.split(domain, 'train')
        name = f'{method}-{domain}-s{seed}'
        if not os.path.exists(os.path.join(self.work, 'selected', name)):
            texts, chars = self.pool_docs()
            targets = {d: self.corpus.split(d, 'train') for d in self.corpus.domains}
            if method == 'dsir':
                logw = dsir_log_weights(os.path.join(self.work, 'dsir'), self.pool, targets)[domain]
                chosen = dsir_selection(logw, texts, chars, budget_chars, seed)
            elif method == 'dsir-chunks':
                chunks = chunk_pool(self.work, self.pool)
                texts, chars = pool_documents(chunks)
                logw = dsir_log_weights(os.path.join(self.work, 'dsir_chunks'), chunks, targets)[domain]
                chosen = dsir_selection(logw, texts, chars, budget_chars, seed)
            else:
                chosen = classifier_selection(self.work, self.index, target, texts, chars, budget_chars, seed)
            log(f'{method} selected {len(chosen)} documents for {domain}')
            return one_cluster_index(self.work, name, chosen, self.tokenizer)
        return os.path.join(self.work, 'selected', name)

    def wanted(self, method: str) -> bool:
        return not self.args.methods or method in self.args.methods

    def main_table(self) -> None:
        for seed in self.args.seeds:
            if self.wanted('uniform'):
                self.run('main', 'uniform', 'all', self.index.root, None, seed)
            for domain in self.corpus.domains:
                train_split = self.corpus.split(domain, 'train')
                default = self.weights(self.index, f'{domain}-default', train_split)
                with open(default, encoding='utf-8') as handle:
                    level = json.load(handle)['level']
                if self.wanted('cis'):
                    self.run('main', 'cis', domain, self.index.root, default, seed, level=level)
                for other in range(len(self.levels)):
                    if other != level and self.wanted(f'cis@{other}'):
                        self.run('main', f'cis@{other}', domain, self.index.root,
                                 self.weights(self.index, f'{domain}-L{other}', train_split, '--level', str(other)),
                                 seed, level=other)
                for method in ('dsir', 'dsir-chunks', 'classifier'):
                    if self.wanted(method):
                        self.run('main', method, domain, self.selection(method, domain, seed), None, seed)
                if self.wanted('specialist'):
                    self.run('main', 'specialist', domain,
                             one_cluster_index(self.work, f'specialist-{domain}', texts_of(train_split),
                                               self.tokenizer),
                             None, seed)

    def multitask(self) -> None:
        a, b = self.corpus.domains[:2]
        weights = self.weights(self.index, f'{a}+{b}', [], '--task', f'{self.corpus.split(a, "train")[0]}:0.5',
                               '--task', f'{self.corpus.split(b, "train")[0]}:0.5')
        self.run('multitask', 'cis', f'{a}+{b}', self.index.root, weights, self.args.seeds[0])

    def continued(self) -> None:
        """Phase 1 is the main table's uniform run; phase 2 continues it for half as many steps."""
        seed, steps = self.args.seeds[0], self.args.steps
        phase1 = self.run('main', 'uniform', 'all', self.index.root, None, seed)
        checkpoint = os.path.join(self.work, 'runs', phase1['name'], 'ckpt', 'latest-rank0.pt')
        domain = self.args.ablation_domain
        default = self.weights(self.index, f'{domain}-default', self.corpus.split(domain, 'train'))
        self.run('continued', 'uniform -> cis', domain, self.index.root, default, seed, steps // 2,
                 load_path=checkpoint)
        self.run('continued', 'uniform -> uniform', 'all', self.index.root, None, seed, steps // 2,
                 load_path=checkpoint)

    def ablations(self) -> None:
        seed, domain = self.args.seeds[0], self.args.ablation_domain
        finest = len(self.levels) - 1
        texts = texts_of(self.corpus.split(domain, 'train') + self.corpus.split(domain, 'rest'))
        windows = windows_per_doc(self.index, texts)
        for size in (100, 300, 1000):
            count = int(np.searchsorted(np.cumsum(windows), size)) + 1
            sample = write_jsonl(os.path.join(self.work, f'{domain}-spec{size}.jsonl'), texts[:count])
            actual = int(sum(windows[:count]))
            for level in (0, finest):  # the coarsest and the finest level (CPU time)
                weights = self.weights(self.index, f'{domain}-n{size}-L{level}', [sample], '--level', str(level))
                self.run('size x level', f'cis@{level} n{size}', domain, self.index.root, weights, seed,
                         level=level, specialist_windows=actual)
        train_split = self.corpus.split(domain, 'train')
        for smoothing in (0.1,):
            weights = self.weights(self.index, f'{domain}-smooth{smoothing}', train_split,
                                   '--smoothing', str(smoothing))
            self.run('smoothing', f'cis smoothing {smoothing}', domain, self.index.root, weights, seed)
        for cap in (1,):
            weights = self.weights(self.index, f'{domain}-cap{cap}', train_split, '--level', str(finest),
                                   '--max-repeat', str(cap), '--tokens', str(budget_tokens(self.args.steps)))
            self.run('max-repeat', f'cis@{finest} max-repeat {cap}', domain, self.index.root, weights, seed)

    def embedders(self) -> None:
        """minilm (the paper's SBERT) against lsi, on a 1-in-EMBEDDER_SUBSET_EVERY subset of the pool.

        minilm embeds ~30-50 windows/s on 2 CPU cores, so the whole pool would take hours; both
        indexes cover the same subset documents, with a 16 -> 128 tree, and one uniform run is the
        reference (uniform draws the same samples from either index).
        """
        seed = self.args.seeds[0]
        subset = os.path.join(self.work, 'embedders', 'pool.jsonl')
        if not os.path.exists(subset):
            os.makedirs(os.path.dirname(subset), exist_ok=True)
            write_jsonl(subset, (t for t in texts_of(self.pool) if stable_hash(t) % EMBEDDER_SUBSET_EVERY == 0))
        indexes = {name: pool_index(os.path.join(self.work, 'embedders', f'index-{name}'), [subset], self.tokenizer,
                                    1, EMBEDDER_LEVELS, name) for name in ('lsi', 'minilm')}
        self.run('embedder', 'uniform (subset)', 'all', indexes['lsi'].root, None, seed)
        budget = str(budget_tokens(self.args.steps))
        for domain in self.corpus.domains:
            for name, index in indexes.items():
                # The subset is small, so a concentrated mixture repeats its clusters many times;
                # the max-repeat 2 rows compare the two clusterings with that effect capped.
                for label, extra in (('', ()), (' max-repeat 2', ('--max-repeat', '2', '--tokens', budget))):
                    weights = self.weights(index, f'embedder-{name}-{domain}{label.replace(" ", "-")}',
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
        settings = self.corpus.manifest['settings'][self.corpus.domains[0]]
        extra = [f for f in settings['in_pool'] if not f.startswith('pool/')]
        index = pool_index(os.path.join(self.work, 'index-in-pool'), self.pool + self.corpus.files(extra),
                           self.tokenizer, self.args.processes, self.levels)
        self.run('in-pool', 'uniform', 'all', index.root, None, seed)
        for domain in self.corpus.domains:
            weights = self.weights(index, f'in-pool-{domain}', self.corpus.split(domain, 'train'))
            with open(weights, encoding='utf-8') as handle:
                level = json.load(handle)['level']
            self.run('in-pool', 'cis', domain, index.root, weights, seed, level=level)

    def save(self) -> None:
        """results.json and the record, each merged with rows another benchmark process saved meanwhile
        (several may run at once on disjoint runs, e.g. one per domain), written to a temporary name
        and renamed."""
        for path in filter(None, (os.path.join(self.work, 'results.json'), self.record)):
            self.rows = load_rows(path) | self.rows
            with open(path + f'.{os.getpid()}', 'w', encoding='utf-8') as handle:
                json.dump({'corpus_manifest_sha256': self.corpus.manifest['manifest_sha256'],
                           'steps': self.args.steps, 'batch': BATCH, 'seq_len': SEQ_LEN, 'levels': self.levels,
                           'rows': sorted(self.rows.values(), key=lambda row: row['name'])}, handle, indent=1)
            os.replace(path + f'.{os.getpid()}', path)
