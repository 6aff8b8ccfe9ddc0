"""What the commands print when they finish: one short summary each."""

from __future__ import annotations

import numpy as np

from cis_stream.format.layout import MANIFEST
from cis_stream.report.inspect import STALE_NOTE
from cis_stream.text import decontam
from cis_stream.weights import describe_rejects


def index_summary(manifest: dict) -> str:
    """The closing summary printed after indexing."""
    t = manifest['totals']
    seconds = manifest['timings'].get('total')  # absent after `cis-stream add`, whose time is timings.add
    # Also after `add --no-decontaminate`, which drops the decontamination record but not the counts.
    excluded = (f"; {t['documents_excluded']:,} excluded and {t['windows_excluded']:,} windows "
                f"({t['tokens_excluded']:,} tokens) dropped for overlap with eval text, see {decontam.EXCLUDED_FILE}"
                if manifest.get('decontamination') or t.get('documents_excluded') else '')
    skipped = manifest.get('skipped_files')
    skipped = f'; {len(skipped):,} file(s) skipped, not read, see skipped_files in {MANIFEST}' if skipped else ''
    # A resumed run's time covers only what it redid, so a rate over all the input would be false.
    took = ('grown by cis-stream add' if seconds is None else
            f'{seconds:.1f} s, resumed' if manifest.get('build', {}).get('resumed') else
            f"{seconds:.1f} s, {t['input_bytes'] / 1e6 / max(seconds, 1e-9):.2f} MB/s")
    return (f"indexed {t['documents_indexed']:,} of {t['documents_read']:,} documents "
            f"({t['documents_rejected']:,} rejected, see {manifest['rejects']['file']}{excluded}{skipped}): "
            f"{t['windows']:,} windows, {t['tokens']:,} tokens, {t['samples']:,} samples in "
            f"{[len(level['nodes']) for level in manifest['tree']['levels']]} clusters per level; "
            f"{took}; fingerprint {manifest['fingerprint'][:16]}")


def add_summary(manifest: dict) -> str:
    """The closing summary printed after `cis-stream add`."""
    step = manifest['history'][-1]
    screened = (f"; {step['excluded_documents']:,} excluded as eval text (see {decontam.EXCLUDED_FILE})"
                if manifest.get('decontamination') else
                '; not screened against eval text: the index no longer claims decontamination'
                if 'decontamination_dropped' in step else '')
    return (f"added {step['added_documents']:,} documents from {len(step['added_inputs'])} file(s) to "
            f"{step['grown_leaves']:,} leaves{screened}; the index now holds "
            f"{manifest['totals']['documents_indexed']:,} documents and {manifest['totals']['samples']:,} samples "
            f"(version {len(manifest['history']) + 1}, fingerprint {manifest['fingerprint'][:16]}, "
            f"was {step['fingerprint'][:16]})")


def inspection_summary(insp, top: int = 5) -> str:
    """The printed summary: index, levels, totals, rejects; with weights, the mixture."""
    manifest = insp.index.manifest
    t, levels = manifest['totals'], manifest['tree']['levels']
    opts = manifest['options']
    lines = [f'index {insp.index.root}', f'  {index_summary(manifest)}',
             f"  embedder {opts['embedder']['name']}, window {opts['window']}, seq_len {opts['seq_len']}; "
             f"levels {insp.index.levels} (planned {[level['planned'] for level in levels]}, "
             f"pruned empty {[level['pruned_empty'] for level in levels]})",
             f"  sample tokens {t['sample_tokens']:,} = {t['tokens']:,} text + {t['eos_tokens']:,} EOS + "
             f"{t['pad_tokens']:,} pad",
             f"  rejects {manifest['rejects']['count']:,}" +
             (f" {manifest['rejects']['by_reason']} (listed in {manifest['rejects']['file']})"
              if manifest['rejects']['count'] else '')]
    if not insp.weights:
        return '\n'.join(lines)
    w = insp.weights
    target, generalist = insp.target, insp.generalist(insp.level)
    ess = insp.ess_fraction
    lines += [f'weights {insp.weights_path}'] + ([f'  note: {STALE_NOTE}'] if insp.stale_target else []) + [
              f"  level {insp.level} ({len(target)} clusters; {w['level_rule']}); coverage "
              f"{np.mean(target > 0):.1%} of clusters; ESS {ess:.1%} of the pool "
              f"({ess * int(insp.index.leaf_samples.sum()):,.0f} samples)",
              '  top clusters:  cluster   target  P(c|gen)     w(c)   samples']
    samples = insp.index.counts(insp.level, 'samples')
    for c in insp.ranking[:top]:
        lines.append(f'               {c:7d}  {target[c]:7.4f}  {generalist[c]:8.4f}  '
                     f'{target[c] / generalist[c]:7.2f}  {samples[c]:8,}')
    over = np.flatnonzero(insp.repeats > 1)
    over = over[np.argsort(-insp.repeats[over], kind='stable')]
    worst = int(np.argmax(insp.repeats))
    seq_len = insp.index.manifest['options']['seq_len']
    lines += [f'  budget {insp.budget_samples:,} samples of {seq_len} tokens ({insp.budget_source})',
              f'  expected repetition: max {insp.repeats[worst]:.2f}x (leaf {worst}); '
              f'{len(over)} of {insp.index.num_leaves} leaves repeated more than once' +
              (': ' + ', '.join(f'{leaf} ({insp.repeats[leaf]:.2f}x)' for leaf in over[:top]) +
               (', ...' if len(over) > top else '') if len(over) else '')]
    return '\n'.join(lines)


def weights_summary(weights: dict, top: int = 5) -> str:
    """Printed after `cis-stream weights`: rejects, top clusters, coverage, ESS, most repeated leaves."""
    specialist = np.asarray(weights['specialist_histogram'])
    target = np.asarray(weights['target_histogram'])
    generalist = np.asarray(weights['generalist_histogram'])
    repeats = np.asarray(weights['expected_repeats'])
    inputs = [record for task in weights['tasks'] for record in task['inputs']]
    lines = [f"level {weights['level']} ({len(target)} clusters, {weights['level_rule']}); "
             f"{sum(t['windows'] for t in weights['tasks'])} specialist windows; coverage "
             f"{weights['coverage']:.1%} of clusters; ESS {weights['ess_fraction']:.1%} of the pool "
             f"({weights['ess_samples']:,.0f} samples)"]
    if any(record['rejected'] for record in inputs):
        lines.append(f"specialist records: {sum(r['documents'] for r in inputs):,} used, {describe_rejects(inputs)}; "
                     f"each reject is listed with its line in the weights file (tasks[].inputs[].rejects)")
    lines.append('top clusters:  cluster  P(c|spec)   target  P(c|gen)   w(c)')
    for c in np.argsort(-target, kind='stable')[:top]:
        lines.append(f'               {c:7d}  {specialist[c]:9.4f}  {target[c]:7.4f}  {generalist[c]:8.4f}  '
                     f'{weights["importance_weights"][c]:5.2f}')
    lines.append('  (P(c|spec): the specialist histogram, tasks mixed by weight; target: the mixture drawn, after '
                 '--smoothing and the --max-repeat cap; w(c) = target / P(c|gen))')
    worst = np.argsort(-repeats, kind='stable')[:top]
    lines.append(f"most repeated leaves over {weights['budget_samples']:,} samples: " +
                 ', '.join(f'{leaf}: {repeats[leaf]:.2f}x' for leaf in worst))
    if weights.get('specialist'):
        lines.append(specialist_line(weights['specialist']))
    return '\n'.join(lines)


def specialist_line(stream: dict) -> str:
    """The specialist stream of a weights file: where, how big, its share and passes, its screening."""
    screened = (f"screened against the index's eval files ({stream['excluded_documents']} document(s) excluded, "
                f"{stream['trimmed_documents']} trimmed)" if stream['decontaminated'] else
                'not screened against eval files')
    return (f"specialist stream {stream['dataset']}/: {stream['samples']:,} samples ({stream['tokens']:,} tokens), "
            f"{stream['fraction']:.2%} of the mixture, {stream['expected_repeats']:.1f} passes over the budget; "
            f'{screened}')
