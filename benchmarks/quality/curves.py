"""Budget curves: as the training budget grows to many passes over a small specialist sample, which
of uniform, CIS, CIS + the specialist stream, DSIR and the specialist sample alone is best?

The paper's regime: the specialist sample is small next to the budget, so training on it alone
repeats it many times. Each (domain, specialist set, method) is one long run with a constant
learning rate after a 25-batch warm-up (`constant_with_warmup`), evaluated at the budgets of
CURVE_POINTS (dense early, where specialist-alone turns, sparse later), so one run gives the curve
and every point of every method is a model at the same learning rate (a cosine schedule would make
each intermediate point a half-annealed model; the price is that no point is annealed, the same for
every method).

Specialist sets: `small` (the domain's train split cut to its first documents up to SMALL_CHARS
characters, about 100 KB) and `split` (the whole train split, 0.5 to 2.7 MB). Methods:
  uniform           the pool as is (one run, evaluated on every domain)
  cis               the CIS mixture from the set (default level rule)
  cis+specialist    the same plus the set itself as a stream: --specialist-repeats 20 over the
                    curve's whole budget (at most half the mixture: 25-30% for the 100 KB sets)
  specialist        the set alone, repeated
  dsir-chunks       DSIR on ~2,000-character pieces of the pool, the set as target, to the budget
The small sets of LONG_DOMAINS get `--curve-steps` batches; every other (domain, set) half as many
(the train splits are 5-27x the small sets, so half the budget still repeats them only 1-5 times).
`--only curves_big` repeats cis+specialist, cis, specialist and uniform with a bigger model (4
layers, d_model 256) on the small sets of LONG_DOMAINS at the short budget.

`--only schedules` (issue 17) compares, on the small sets of LONG_DOMAINS at the short budget
(one run per `--seeds`), static CIS (the `cis` curve of that seed, run at the short budget where the
long one is missing) with:
  cis-adaptive      a schedule of three equal phases: CIS, then twice an adaptive phase measured on
                    the small set itself (held out from training here, and the text CIS's weights
                    come from, so no extra specialist data), rule step 1
  uniform-then-cis  half the budget uniform, then the CIS mixture
"""

from __future__ import annotations

import fcntl
import os

from benchmarks.quality.baselines import chunk_pool, dsir_log_weights, dsir_selection
from benchmarks.quality.data import BATCH, SEQ_LEN, one_cluster_index, pool_documents, pool_index, texts_of, write_jsonl
from cis_stream.format.reader import CISIndex

# Evaluations, as fractions of the run's batches: 25, 50, 100, 200, 400, 600, ... 1,200 for 1,200 batches.
CURVE_POINTS = (1 / 48, 1 / 24, 1 / 12, 1 / 6, 1 / 3, 1 / 2, 2 / 3, 5 / 6, 1)
WARMUP_BATCHES = 25
SAVE_EVERY = 200  # batches between checkpoints (a killed run resumes from the last)
SMALL_CHARS = 100_000
SPECIALIST_REPEATS = 20
# The runs began with this cap (then the default): 20 passes over a 100 KB set take 25-30% of 1,200 batches.
MAX_FRACTION = 0.5
LONG_DOMAINS = ('biomedical', 'news')
METHODS = ('specialist', 'cis+specialist', 'cis', 'dsir-chunks')
SIZES = ('small', 'split')
BIG_MODEL = ('model.d_model=256', 'model.n_layers=4', 'model.n_heads=4')


def schedule(steps: int) -> tuple[str, ...]:
    """Constant LR after warm-up, the CURVE_POINTS evaluations, and checkpoints to resume from."""
    points = sorted({max(1, round(steps * f)) for f in CURVE_POINTS})
    return ('scheduler.name=constant_with_warmup', f'scheduler.t_warmup={WARMUP_BATCHES}ba',
            f'eval_interval=[{", ".join(map(str, points))}]', f'save_interval={SAVE_EVERY}ba',
            'save_num_checkpoints_to_keep=1', 'autoresume=true')


class Curves:
    """The budget curves of one Bench (its corpus, pool index, tokenizer and cache)."""

    def __init__(self, bench):
        self.bench = bench
        self.work = bench.work
        self.long_steps = bench.args.curve_steps
        self.domains = bench.corpus.domains
        self._dsir = None

    def steps(self, domain: str, size: str) -> int:
        return self.long_steps if domain in LONG_DOMAINS and size == 'small' else self.long_steps // 2

    def specialist_set(self, domain: str, size: str) -> list[str]:
        """The domain's train split, or (small) its first documents up to SMALL_CHARS characters."""
        split = self.bench.corpus.split(domain, 'train')
        if size == 'split':
            return split
        path = os.path.join(self.work, 'small', f'{domain}.jsonl')
        if not os.path.exists(path):
            os.makedirs(os.path.dirname(path), exist_ok=True)
            kept, chars = [], 0
            for text in texts_of(split):
                if chars >= SMALL_CHARS:
                    break
                kept.append(text)
                chars += len(text)
            write_jsonl(path, kept)
        return [path]

    def weights(self, domain: str, size: str, steps: int, with_stream: bool) -> str:
        """The CIS weights of a set; with the set as a stream, sized for the curve's whole budget."""
        files = self.specialist_set(domain, size)
        if not with_stream:
            return self.bench.weights(self.bench.index, f'curve-{domain}-{size}', files)
        tokens = steps * BATCH * SEQ_LEN
        return self.bench.weights(self.bench.index, f'curve-{domain}-{size}-stream{SPECIALIST_REPEATS}x{tokens}',
                                  files, '--specialist-repeats', str(SPECIALIST_REPEATS), '--tokens', str(tokens),
                                  '--specialist-max-fraction', str(MAX_FRACTION))

    def dsir_weights(self, domain: str, size: str):
        """DSIR's log importance weights of the pool pieces, every domain and set in one pass (under a
        lock: another benchmark process may need them at the same time)."""
        if self._dsir is None:
            domains = self.bench.corpus.manifest['domains']
            with open(os.path.join(self.work, 'dsir_curves.lock'), 'w') as lock:
                fcntl.flock(lock, fcntl.LOCK_EX)
                chunks = chunk_pool(self.work, self.bench.pool)
                targets = {f'{d}-{s}': self.specialist_set(d, s) for d in domains for s in SIZES}
                self._dsir = (chunks, dsir_log_weights(os.path.join(self.work, 'dsir_chunks_curves'), chunks,
                                                       targets))
        chunks, logw = self._dsir
        return chunks, logw[f'{domain}-{size}']

    def dsir_index(self, domain: str, size: str, steps: int, seed: int) -> str:
        name = f'curve-dsir-chunks-{domain}-{size}-{steps}ba-s{seed}'
        path = os.path.join(self.work, 'selected', name)
        if not os.path.exists(path):
            chunks, logw = self.dsir_weights(domain, size)
            texts, chars = pool_documents(chunks)
            budget_chars = int(steps * BATCH * SEQ_LEN * self.bench.chars_per_token)
            path = one_cluster_index(self.work, name, dsir_selection(logw, texts, chars, budget_chars, seed),
                                     self.bench.tokenizer)
        return path

    def one(self, method: str, domain: str, size: str, seed: int, steps: int, model: tuple[str, ...] = ()) -> dict:
        bench = self.bench
        evals = {domain: bench.evals[domain], 'generalist': bench.evals['generalist']}
        if method == 'specialist':
            index, weights = self.specialist_index(domain, size), None
        elif method == 'dsir-chunks':
            index, weights = self.dsir_index(domain, size, steps, seed), None
        else:
            index, weights = bench.index.root, self.weights(domain, size, steps, method == 'cis+specialist')
        tag = f'-{size}-{steps}ba' + ('-big' if model else '')
        set_tokens = CISIndex.open(self.specialist_index(domain, size)).manifest['totals']['tokens']
        return bench.run('curve', method, domain, index, weights, seed, steps, evals, schedule(steps) + model, tag,
                         size=size, model='big' if model else 'small', set_tokens=set_tokens)

    def specialist_index(self, domain: str, size: str) -> str:
        """The set as a one-cluster index: what `specialist` trains on, and the set's token count."""
        return one_cluster_index(self.work, f'curve-specialist-{domain}-{size}',
                                 texts_of(self.specialist_set(domain, size)), self.bench.tokenizer)

    def uniform(self, seed: int, steps: int, model: tuple[str, ...] = ()) -> dict:
        """The uniform run, evaluated on every domain of the corpus (whatever --domains says)."""
        bench = self.bench
        evals = {d: bench.corpus.split(d, 'test')[0] for d in bench.corpus.manifest['domains']}
        evals['generalist'] = bench.evals['generalist']
        tag = f'-{steps}ba' + ('-big' if model else '')
        return bench.run('curve', 'uniform', 'all', bench.index.root, None, seed, steps, evals,
                         schedule(steps) + model, tag, size='-', model='big' if model else 'small')

    def run(self) -> None:
        """Most telling first: the small sets of the long domains, then their splits, then the rest."""
        seed = self.bench.args.seeds[0]
        if self.bench.wanted('uniform'):
            self.uniform(seed, self.long_steps)
        sizes = [s for s in SIZES if s in self.bench.args.sizes]
        order = [(d, s) for s in sizes for d in self.domains if d in LONG_DOMAINS]
        order += [(d, s) for d in self.domains if d not in LONG_DOMAINS for s in sizes]
        for domain, size in order:
            for method in METHODS:
                if self.bench.wanted(method):
                    self.one(method, domain, size, seed, self.steps(domain, size))

    def one_schedule(self, method: str, domain: str, seed: int, steps: int) -> dict:
        """A scheduled run (cis-adaptive or uniform-then-cis) on the small set's CIS weights."""
        files = self.specialist_set(domain, 'small')
        weights = self.weights(domain, 'small', steps, False)
        if method == 'cis-adaptive':
            third = steps // 3 * BATCH
            adapt = f'adapt: {{validation: [{files[0]}], step: 1.0}}'
            phases = [f'{{weights: {weights}, samples: {third}}}', f'{{weights: {weights}, samples: {third}, {adapt}}}',
                      f'{{weights: {weights}, {adapt}}}']
        else:
            phases = [f'{{weights: null, samples: {steps // 2 * BATCH}}}', f'{{weights: {weights}}}']
        evals = {domain: self.bench.evals[domain], 'generalist': self.bench.evals['generalist']}
        set_tokens = CISIndex.open(self.specialist_index(domain, 'small')).manifest['totals']['tokens']
        return self.bench.run('curve', method, domain, self.bench.index.root, None, seed, steps, evals,
                              schedule(steps) + (f'train_loader.dataset.schedule=[{", ".join(phases)}]',),
                              f'-small-{steps}ba', size='small', model='small', set_tokens=set_tokens)

    def run_schedules(self) -> None:
        steps = self.long_steps // 2
        for seed in self.bench.args.seeds:
            for domain in (d for d in self.domains if d in LONG_DOMAINS):
                if self.bench.wanted('cis') and not self.static_cis(domain, seed, steps):
                    self.one('cis', domain, 'small', seed, steps)
                for method in ('cis-adaptive', 'uniform-then-cis'):
                    if self.bench.wanted(method):
                        self.one_schedule(method, domain, seed, steps)

    def static_cis(self, domain: str, seed: int, steps: int) -> dict | None:
        """A static CIS curve of the small set at least `steps` long: its point at `steps` is the model a
        `steps`-batch run would give (constant LR, and a sample order that does not depend on the budget)."""
        return next((r for r in self.bench.rows.values() if r['table'] == 'curve' and r['method'] == 'cis'
                     and r['domain'] == domain and r.get('size') == 'small' and r.get('model') == 'small'
                     and r['seed'] == seed and r['steps'] >= steps), None)

    def run_lsi_tokens(self) -> None:
        """lsi on token ids against lsi on words (issue 18): the pool indexed again with token features,
        then uniform and cis (from the train splits) on it at the short budget, as the `curve` rows of
        the words index ran (same schedule, seed, evaluations), in the table `lsi tokens`."""
        bench, seed, steps = self.bench, self.bench.args.seeds[0], self.long_steps // 2
        index = pool_index(os.path.join(self.work, 'index-lsi-tokens'), bench.pool, bench.tokenizer,
                           bench.args.processes, bench.levels, lsi_features='tokens')
        evals = {d: bench.corpus.split(d, 'test')[0] for d in bench.corpus.manifest['domains']}
        evals['generalist'] = bench.evals['generalist']
        if bench.wanted('uniform'):
            bench.run('lsi tokens', 'uniform', 'all', index.root, None, seed, steps, evals, schedule(steps),
                      f'-{steps}ba', size='-', model='small', lsi_index=index.fingerprint[:16])
        for domain in self.domains:
            if bench.wanted('cis'):
                weights = bench.weights(index, f'lsi-tokens-{domain}-split', self.specialist_set(domain, 'split'))
                bench.run('lsi tokens', 'cis', domain, index.root, weights, seed, steps,
                          {domain: bench.evals[domain], 'generalist': bench.evals['generalist']}, schedule(steps),
                          f'-split-{steps}ba', size='split', model='small', lsi_index=index.fingerprint[:16])

    def run_big(self) -> None:
        seed, steps = self.bench.args.seeds[0], self.long_steps // 2
        if self.bench.wanted('uniform'):
            self.uniform(seed, steps, BIG_MODEL)
        for domain in (d for d in self.domains if d in LONG_DOMAINS):
            for method in ('cis+specialist', 'specialist', 'cis'):
                if self.bench.wanted(method):
                    self.one(method, domain, 'small', seed, steps, BIG_MODEL)
