"""Quality: does training on the CIS mixture beat the alternatives on real specialist text?

    .venv/bin/python -m benchmarks.corpus.build                  # the corpus (cached)
    .venv/bin/python -m benchmarks.quality [--steps 300] [--seeds 17] [--only main,multitask,...]

Out-of-pool setting: the generalist pool is the corpus's common pool (no text of any specialist
source), one index for every domain: lsi (on words), 256-token windows, 128-token samples, 16 -> 128 -> 1024
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
(`--only in_pool`: the pool plus every domain's `rest` documents, uniform against CIS), and lsi on token
ids against lsi on words (`--only lsi_tokens`: the pool indexed again with token features; uniform and
cis from the train splits at the short curve budget, against the words index's curves). Selected
documents are trained on through a one-cluster index, so every method uses the same loader.
Everything is cached under benchmarks/out/quality: rerunning resumes where it stopped.
"""

from __future__ import annotations

import argparse
import os

from benchmarks import OUT, ROOT
from benchmarks.quality.curves import Curves
from benchmarks.quality.data import LEVELS, log
from benchmarks.quality.experiments import Bench
from benchmarks.quality.report import report


def main() -> None:
    parser = argparse.ArgumentParser(prog='python -m benchmarks.quality', description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--corpus', default=os.path.join(ROOT, 'benchmarks', 'corpus', 'cache', 'corpus'))
    parser.add_argument('--steps', type=int, default=300)
    parser.add_argument('--seeds', type=lambda s: [int(x) for x in s.split(',')], default=[17])
    parser.add_argument('--processes', type=int, default=2, help='indexing processes (torchrun)')
    parser.add_argument('--ablation-domain', default='biomedical')
    parser.add_argument('--curve-steps', type=int, default=1200,
                        help='batches of the long budget curves (the other domains get half; default: %(default)s)')
    parser.add_argument('--only', default='main,multitask,continued,ablations,embedders,in_pool,curves,curves_big,'
                                          'schedules,lsi_tokens',
                        help='parts to run (cached runs are reused); `report` alone prints the tables')
    parser.add_argument('--domains', default=None, help='comma-separated specialist domains (default: all)')
    parser.add_argument('--methods', type=lambda s: s.split(','), default=None,
                        help='main-table methods to run, e.g. uniform,cis,dsir,dsir-chunks (default: all)')
    parser.add_argument('--sizes', type=lambda s: s.split(','), default=['small', 'split'],
                        help='specialist sets of the budget curves (default: small,split)')
    # --work and --levels replace the defaults for a smoke run on a small corpus.
    parser.add_argument('--levels', type=lambda s: [int(n) for n in s.split(',')], default=LEVELS,
                        help=f'tree of the pool index (default: {",".join(map(str, LEVELS))})')
    parser.add_argument('--work', default=os.path.join(OUT, 'quality'),
                        help='cache of every step (default: %(default)s)')
    args = parser.parse_args()
    bench = Bench(args)
    parts = {'main': bench.main_table, 'multitask': bench.multitask, 'continued': bench.continued,
             'ablations': bench.ablations, 'embedders': bench.embedders, 'in_pool': bench.in_pool,
             'curves': Curves(bench).run, 'curves_big': Curves(bench).run_big,
             'lsi_tokens': Curves(bench).run_lsi_tokens,
             'schedules': Curves(bench).run_schedules,
             'report': lambda: None}
    for part in args.only.split(','):
        parts[part]()
    log(f'done: {len(bench.rows)} runs')
    print(report(list(bench.rows.values()), bench.corpus.domains, bench.levels))


if __name__ == '__main__':
    main()
