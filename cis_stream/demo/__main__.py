"""`make demo`: the whole job end to end on real text, on a CPU, in a few minutes.

1. corpus    10,033 real Wikipedia summaries (12 topics): one topic is the specialist domain; a
             few hundred of its articles are the specialist sample, others its test set, the rest
             stay in the generalist pool (the in-pool setting).
2. tokenizer a byte-level BPE of 8,192 tokens trained on the pool (keeps a CPU model's output
             layer cheap; the indexer's default is GPT-2 BPE).
3. index     `cis-stream index` the pool: lsi embedder, 8 → 64 clusters, 128-token windows; both
             held-out test files are passed as --exclude, so no test text is trained on.
4. weights   `cis-stream weights` from the specialist sample; and again with the sample itself
             mixed in as a stream (--specialist-repeats: at most 3 passes over it in the budget).
5. train     `composer train.py yamls/uniform.yaml` and `yamls/cis.yaml` (on each weights file):
             same model, steps and seed; then every model's specialist and generalist perplexity.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

from cis_stream.cli import main as cli_main
from cis_stream.demo.corpora import make_wiki_split
from cis_stream.training.train import load_config

# The repository root (train.py and yamls/ live there): cis_stream/demo/__main__.py is three levels below it.
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# Passes over the specialist sample that the cis+specialist mixture may make in the training budget.
SPECIALIST_REPEATS = 3


def _cli(argv: list[str]) -> None:
    if cli_main(argv):
        raise SystemExit(f'demo stopped: cis-stream {argv[0]} failed')


def _step(title: str) -> None:
    print(f'\n=== {title}', flush=True)


def _train(yaml_name: str, out: str, run_name: str, steps: int, weights: str | None = None) -> dict:
    overrides = [
        f'max_duration={steps}ba', f'eval_interval={steps}ba', f'save_interval={steps}ba',
        f'train_loader.dataset.index={out}/index',
        f'eval_loaders=[{{label: specialist, dataset: {{files: [{out}/corpus/specialist_test.jsonl]}}}}, '
        f'{{label: generalist, dataset: {{files: [{out}/corpus/generalist_test.jsonl]}}}}]',
        f'save_folder={out}/runs/{run_name}', f'results_path={out}/runs/{run_name}/results.json',
        f'callbacks.cluster_loss.path={out}/runs/{run_name}/cluster_loss.jsonl',
    ]
    if weights:
        overrides.append(f'train_loader.dataset.weights={weights}')
    command = [sys.executable, os.path.join(ROOT, 'train.py'), os.path.join(ROOT, 'yamls', yaml_name)] + overrides
    print('$ ' + ' '.join(command[1:3] + [f"'{o}'" if ' ' in o else o for o in overrides]), flush=True)
    subprocess.run(command, check=True)
    with open(f'{out}/runs/{run_name}/results.json', encoding='utf-8') as handle:
        return json.load(handle)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument('--out', default='demo_out')
    parser.add_argument('--topic', default='Biology and health sciences')
    parser.add_argument('--embedder', default='lsi', help='lsi (fast) or minilm (the paper; slower)')
    parser.add_argument('--steps', type=int, default=300, help='training steps per model')
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    started = time.perf_counter()

    _step(f'1. corpus: Wikipedia summaries, specialist topic {args.topic!r}')
    manifest = make_wiki_split(os.path.join(out, 'corpus'), topic=args.topic)
    print(json.dumps(manifest['documents']))

    _step('2. tokenizer: byte-level BPE, 8,192 tokens, trained on the pool')
    from cis_stream.text.readers import read_documents
    from cis_stream.text.tokens import train_bpe_tokenizer
    pool = os.path.join(out, 'corpus', 'pool.jsonl')
    tokenizer = train_bpe_tokenizer((d.text for d in read_documents([pool])), 8192,
                                    os.path.join(out, 'tokenizer.json'))

    _step('3. index the generalist pool, excluding text that overlaps the test sets')
    _cli(['index', pool, '--out', f'{out}/index', '--embedder', args.embedder, '--levels', '8,64',
          '--window', '128', '--tokenizer', tokenizer, '--overwrite',
          '--exclude', f'{out}/corpus/specialist_test.jsonl', f'{out}/corpus/generalist_test.jsonl'])

    _step('4. weights from the specialist sample, without and with the sample itself as a stream')
    specialist = f'{out}/corpus/specialist.jsonl'
    _cli(['weights', '--index', f'{out}/index', '--specialist', specialist, '-o', f'{out}/specialist.weights.json'])
    cfg = load_config(os.path.join(ROOT, 'yamls', 'cis.yaml'), [])
    budget = args.steps * cfg['global_train_batch_size'] * cfg['max_seq_len']  # the tokens each model trains on
    _cli(['weights', '--index', f'{out}/index', '--specialist', specialist, '--specialist-repeats',
          str(SPECIALIST_REPEATS), '--tokens', str(budget), '-o', f'{out}/with-sample.weights.json'])

    _step(f'5. train the uniform baseline and the two CIS models, {args.steps} steps each')
    results = {'uniform': _train('uniform.yaml', out, 'uniform-demo', args.steps),
               'cis': _train('cis.yaml', out, 'cis-demo', args.steps, f'{out}/specialist.weights.json'),
               'cis+specialist': _train('cis.yaml', out, 'cis-stream-demo', args.steps,
                                        f'{out}/with-sample.weights.json')}

    _step('result: perplexity on held-out text (lower is better)')
    print(f'{"model":15s} {"specialist":>12s} {"generalist":>12s}')
    for name, metrics in results.items():
        print(f'{name:15s} {metrics["specialist"]["LanguagePerplexity"]:12.2f} '
              f'{metrics["generalist"]["LanguagePerplexity"]:12.2f}')
    for name in ('cis', 'cis+specialist'):
        gain = 1 - (results[name]['specialist']['LanguagePerplexity']
                    / results['uniform']['specialist']['LanguagePerplexity'])
        print(f'{name} specialist perplexity is {abs(gain):.1%} {"lower" if gain > 0 else "HIGHER"} than uniform '
              f'at the same steps')
    _step('what the CIS model learned where: its training loss per top-level cluster')
    _cli(['cluster-loss', f'{out}/runs/cis-demo/cluster_loss.jsonl', '--png', f'{out}/cis_cluster_loss.png'])
    print(f'({time.perf_counter() - started:.0f} s in all)')
    with open(os.path.join(out, 'demo_results.json'), 'w', encoding='utf-8') as handle:
        json.dump(results, handle, indent=1)
    return 0


if __name__ == '__main__':
    sys.exit(main())
