"""`cis-stream inspect`: what an index holds, and what a mixture will draw from it.

The printed summary uses only the manifest and the weights file. The HTML report adds plots
(matplotlib, Agg backend) and, for the top clusters, a few samples decoded from their own shards
with the index's tokenizer, plus their top terms.

Top terms: the decoded samples of each shown cluster are joined into one document, and
scikit-learn's TfidfVectorizer (English stop words dropped, words of three or more letters,
sublinear tf) scores the words across the shown clusters. A cluster's terms are then the words
that are frequent in it and rare in the other shown clusters.
"""

from __future__ import annotations

import html
import os
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from cis_stream.index import summary as index_summary
from cis_stream.manifest import CISIndex
from cis_stream.samples import LeafSamples
from cis_stream.weights import effective_sample_fraction, read_weights

TOP_CLUSTERS = 10
TERM_SAMPLES = 32      # samples decoded per shown cluster for its top terms
SNIPPETS = 3           # of those, shown as text
SNIPPET_CHARS = 600
TOP_TERMS = 8
BAR_LIMIT = 24         # levels with more clusters are drawn as lines, not bars
REPORT_FILE = 'index.html'
STALE_NOTE = ('the target_histogram in the weights file does not match its leaf_proportions (edited by hand?); '
              'every figure shown is computed from the leaf proportions, which are what training draws')


@dataclass
class Inspection:
    """The numbers behind the summary and the report."""
    index: CISIndex
    weights: dict | None = None
    weights_path: str | None = None
    budget_samples: int | None = None      # samples drawn for the token budget
    budget_source: str = ''
    repeats: np.ndarray | None = None      # expected passes over each leaf for the budget

    @property
    def level(self) -> int:
        """The weights' level; without weights, the leaves."""
        return self.weights['level'] if self.weights else len(self.index.levels) - 1

    def generalist(self, level: int) -> np.ndarray:
        """P(c|gen) over windows, as `cis-stream weights` defines it."""
        windows = self.index.counts(level, 'windows').astype(np.float64)
        return windows / windows.sum()

    def specialist(self, level: int) -> np.ndarray:
        """P(c|spec) at any level: the task-weighted mix of each task's window histogram."""
        tasks = self.weights['tasks']
        total = sum(t['weight'] for t in tasks)
        return sum(t['weight'] / total * np.asarray(t['windows_per_level'][level], np.float64) / t['windows']
                   for t in tasks)

    @property
    def target(self) -> np.ndarray:
        """The mixture at `level` as training draws it: the leaf proportions summed per cluster (the
        file's target_histogram says the same unless the file was edited by hand: `stale_target`)."""
        return np.bincount(self.index.leaf_ancestors(self.level), weights=self.weights['leaf_proportions'],
                           minlength=self.index.levels[self.level])

    @property
    def stale_target(self) -> bool:
        """The file's recorded target_histogram disagrees with its leaf proportions."""
        recorded = np.asarray(self.weights.get('target_histogram', []), np.float64)
        return recorded.shape != self.target.shape or not np.allclose(recorded, self.target, rtol=0, atol=1e-9)

    @property
    def ranking(self) -> np.ndarray:
        """Clusters of `level`, by target weight (with weights) or by samples, then by id."""
        key = self.target if self.weights else self.index.counts(self.level, 'samples')
        return np.argsort(-key, kind='stable')

    @property
    def ess_fraction(self) -> float:
        return effective_sample_fraction(self.target, self.generalist(self.level))


def inspect_index(index_path: str, weights_path: str | None = None, tokens: int | None = None) -> Inspection:
    """Open the index (and weights, checked against it); expected repetition for `tokens`."""
    index = CISIndex.open(index_path)
    if weights_path is None:
        if tokens is not None:
            raise ValueError('--tokens needs --weights: repetition depends on the mixture')
        return Inspection(index)
    weights = read_weights(weights_path, index)
    seq_len = index.manifest['options']['seq_len']
    if tokens is not None:
        if tokens < seq_len:
            raise ValueError(f'--tokens {tokens}: less than one sample of {seq_len} tokens')
        budget, source = tokens // seq_len, f'--tokens {tokens:,}'
    else:
        recorded = weights['options'].get('tokens')
        budget = int(weights['budget_samples'])
        source = (f'the --tokens {recorded:,} recorded in {os.path.basename(weights_path)}' if recorded
                  else 'one pass over the pool, as in the weights file')
    proportions = np.asarray(weights['leaf_proportions'], np.float64)
    repeats = proportions * budget / index.leaf_samples
    return Inspection(index, weights, weights_path, budget, source, repeats)


def summary(insp: Inspection, top: int = 5) -> str:
    """The printed summary: index, levels, totals, rejects; with weights, the mixture."""
    manifest = insp.index.manifest
    t, levels = manifest['totals'], manifest['tree']['levels']
    opts = manifest['options']
    lines = [f'index {insp.index.root}', f'  {index_summary(manifest)}',
             f"  embedder {opts['embedder']['name']}, window {opts['window']}, seq_len {opts['seq_len']}; "
             f"levels {insp.index.levels} (planned {[l['planned'] for l in levels]}, "
             f"pruned empty {[l['pruned_empty'] for l in levels]})",
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


# ---- the HTML report -------------------------------------------------------------------------

@dataclass
class ClusterView:
    """One shown cluster: sizes, mixture numbers, top terms and decoded snippets."""
    cluster: int
    leaves: np.ndarray
    documents: int
    samples: int
    tokens: int
    terms: list[str] = field(default_factory=list)
    snippets: list[tuple[int, int, str]] = field(default_factory=list)   # (leaf, sample, text)


def spread_samples(leaves: np.ndarray, leaf_samples: np.ndarray, n: int) -> list[tuple[int, int]]:
    """`n` (leaf, sample) pairs evenly spaced over the cluster's leaves' samples, in leaf order."""
    ends = np.cumsum(leaf_samples[leaves])
    positions = np.unique(np.linspace(0, ends[-1] - 1, min(n, int(ends[-1]))).round().astype(np.int64))
    slots = np.searchsorted(ends, positions, side='right')
    starts = np.concatenate([[0], ends[:-1]])
    return [(int(leaves[s]), int(p - starts[s])) for s, p in zip(slots, positions)]


def top_terms(documents: list[str], k: int = TOP_TERMS) -> list[list[str]]:
    """The `k` highest TF-IDF words of each document against the others (module docstring)."""
    from sklearn.feature_extraction.text import TfidfVectorizer
    vectorizer = TfidfVectorizer(stop_words='english', token_pattern=r'(?u)\b[^\W\d_]{3,}\b',
                                 sublinear_tf=True)
    try:
        scores = vectorizer.fit_transform(documents).toarray()
    except ValueError:        # no word at all (e.g. only digits or stop words)
        return [[] for _ in documents]
    vocabulary = vectorizer.get_feature_names_out()
    return [[str(vocabulary[j]) for j in np.argsort(-row, kind='stable')[:k] if row[j] > 0] for row in scores]


def describe_clusters(insp: Inspection, top: int, progress: bool = True) -> list[ClusterView]:
    """Sizes, decoded snippets and top terms of the `top` first clusters of the ranking."""
    index, level = insp.index, insp.level
    ancestors = index.leaf_ancestors(level)
    counts = {f: index.counts(level, f) for f in ('documents', 'samples', 'tokens')}
    views, texts = [], []
    with LeafSamples(index) as reader:
        for c in tqdm(insp.ranking[:top], desc='decode samples', unit='cluster', disable=not progress):
            leaves = np.flatnonzero(ancestors == c)
            picks = spread_samples(leaves, index.leaf_samples, TERM_SAMPLES)
            decoded = [reader.text(leaf, sample) for leaf, sample in picks]
            shown = np.unique(np.linspace(0, len(picks) - 1, SNIPPETS).round().astype(int))
            views.append(ClusterView(int(c), leaves, *(int(counts[f][c]) for f in ('documents', 'samples', 'tokens')),
                                     snippets=[(*picks[i], decoded[i]) for i in shown]))
            texts.append(' '.join(decoded))
    for view, terms in zip(views, top_terms(texts)):
        view.terms = terms
    return views


def _figure(rows: int = 1, height: float = 3.2):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    fig = Figure(figsize=(9, height * rows), dpi=100, layout='constrained')
    FigureCanvasAgg(fig)
    return fig, fig.subplots(rows, 1, squeeze=False)[:, 0]


def _ranked(ax, series: list[tuple[str, np.ndarray]], xlabel: str) -> None:
    """Side-by-side bars for a few clusters, step lines for many."""
    n = len(series[0][1])
    x = np.arange(n)
    if n <= BAR_LIMIT:
        width = 0.8 / len(series)
        for k, (label, values) in enumerate(series):
            ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=label)
    else:
        for label, values in series:
            ax.step(x, values, where='mid', label=label)
    ax.set_xlabel(xlabel)
    ax.legend(loc='upper right')


def plot_histograms(insp: Inspection, path: str) -> str:
    levels = insp.index.levels
    fig, axes = _figure(len(levels))
    for level, ax in enumerate(axes):
        generalist = insp.generalist(level)
        if insp.weights:
            specialist = insp.specialist(level)
            order = np.lexsort((-generalist, -specialist))
            series = [('P(c|spec)', specialist[order]), ('P(c|gen)', generalist[order])]
            if level == insp.level:
                series.append(('target (mixture used)', insp.target[order]))
            xlabel = 'clusters ranked by P(c|spec)'
        else:
            series, xlabel = [('P(c|gen)', np.sort(generalist)[::-1])], 'clusters ranked by P(c|gen)'
        _ranked(ax, series, xlabel)
        mark = ' (the weights\' level)' if insp.weights and level == insp.level else ''
        ax.set_title(f'level {level}: {levels[level]} clusters{mark}')
        ax.set_ylabel('share of windows')
    fig.savefig(path)
    return 'Histograms per level: share of the windows in each cluster.'


def plot_importance(insp: Inspection, path: str) -> str:
    importance = insp.target / insp.generalist(insp.level)
    fig, (ax,) = _figure()
    _ranked(ax, [('w(c)', np.sort(importance)[::-1])], 'clusters ranked by w(c)')
    ax.axhline(1.0, color='grey', linestyle='--', linewidth=1)
    ax.set_ylabel('w(c) = target / P(c|gen)')
    ax.set_title(f'importance weights at level {insp.level}')
    fig.savefig(path)
    return 'Importance weights w(c) = P(c|spec) / P(c|gen) of the mixture used; 1 = as often as in the pool.'


def plot_ess(insp: Inspection, path: str) -> str:
    levels = insp.index.levels
    raw = [effective_sample_fraction(insp.specialist(l), insp.generalist(l)) for l in range(len(levels))]
    fig, (ax,) = _figure()
    ax.plot(levels, raw, marker='o', label='raw P(c|spec)')
    ax.plot([levels[insp.level]], [insp.ess_fraction], marker='*', markersize=14, linestyle='',
            label='mixture used (after smoothing and cap)')
    ax.set_xscale('log')
    ax.minorticks_off()
    ax.set_xticks(levels, [str(n) for n in levels])
    ax.set_xlabel('clusters in the level')
    ax.set_ylabel('ESS / pool')
    ax.set_title('effective sample size per level')
    ax.legend()
    fig.savefig(path)
    return ('Effective sample size 1 / Σ p(c)²/P(c|gen) as a share of the pool, per level: finer levels '
            'concentrate the mixture on fewer samples.')


def plot_repeats(insp: Inspection, path: str) -> str:
    repeats = np.sort(insp.repeats[insp.repeats > 0])[::-1]
    fig, (ax,) = _figure()
    ax.step(np.arange(len(repeats)), repeats, where='mid')
    ax.axhline(1.0, color='grey', linestyle='--', linewidth=1)
    ax.set_yscale('log')
    ax.set_xlabel('leaves with non-zero weight, ranked')
    ax.set_ylabel('expected passes')
    ax.set_title(f'expected repetition per leaf for {insp.budget_samples:,} samples')
    fig.savefig(path)
    return (f'Expected passes over each leaf when {insp.budget_samples:,} samples are drawn '
            f'({insp.budget_source}); above 1, the leaf is repeated.')


CSS = """body{font-family:system-ui,sans-serif;max-width:1000px;margin:2em auto;padding:0 1em;color:#222}
h1{font-size:1.6em}h2{border-bottom:1px solid #ccc;padding-bottom:.2em;margin-top:1.6em}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ddd;padding:.25em .6em;text-align:right}
th{background:#f4f4f4}td.l,th.l{text-align:left}code{background:#f4f4f4;padding:0 .2em}
figure{margin:1em 0}figure img{max-width:100%;border:1px solid #eee}figcaption{color:#555;font-size:.9em}
.cluster{border:1px solid #ddd;border-radius:6px;padding:.6em 1em;margin:1em 0}
.terms span{display:inline-block;background:#eef3fb;border-radius:3px;padding:0 .4em;margin:.1em}
blockquote{white-space:pre-wrap;background:#fafafa;border-left:3px solid #9ab;margin:.5em 0;padding:.4em .8em;
font-size:.88em}.meta{color:#555;font-size:.85em}"""


def _table(headers: list[str] | None, rows: list[list], left: int = 1) -> str:
    """An HTML table; every cell escaped; the first `left` columns left-aligned."""
    def cells(tag, values):
        return ''.join(f'<{tag}{" class=l" if i < left else ""}>{html.escape(str(v))}</{tag}>'
                       for i, v in enumerate(values))
    head = f'<tr>{cells("th", headers)}</tr>' if headers else ''
    return f'<table>{head}' + ''.join(f'<tr>{cells("td", row)}</tr>' for row in rows) + '</table>'


def _cluster_html(insp: Inspection, view: ClusterView) -> str:
    e = html.escape
    numbers = [f'{len(view.leaves)} leaf' if len(view.leaves) == 1 else f'{len(view.leaves)} leaves',
               f'{view.documents:,} documents', f'{view.samples:,} samples', f'{view.tokens:,} tokens']
    if insp.weights:
        target = insp.target[view.cluster]
        generalist = insp.generalist(insp.level)[view.cluster]
        numbers += [f'target {target:.4f}', f'P(c|gen) {generalist:.4f}', f'w(c) {target / generalist:.2f}',
                    f'max repetition {insp.repeats[view.leaves].max():.2f}x']
    snippets = ''.join(
        f'<p class=meta>leaf {leaf}, sample {sample}</p><blockquote>'
        f'{e(text[:SNIPPET_CHARS] + ("…" if len(text) > SNIPPET_CHARS else ""))}</blockquote>'
        for leaf, sample, text in view.snippets)
    terms = ''.join(f'<span>{e(t)}</span>' for t in view.terms) or '<em>none</em>'
    return (f'<div class=cluster><h3>cluster {view.cluster} (level {insp.level})</h3>'
            f'<p>{e(" · ".join(numbers))}</p><p class=terms>top terms: {terms}</p>{snippets}</div>')


def render_html(insp: Inspection, views: list[ClusterView], figures: list[tuple[str, str]]) -> str:
    e = html.escape
    manifest = insp.index.manifest
    t, levels, opts = manifest['totals'], manifest['tree']['levels'], manifest['options']
    parts = [f'<h1>cis_stream index report</h1><p><code>{e(insp.index.root)}</code><br>'
             f'fingerprint <code>{e(insp.index.fingerprint)}</code></p>',
             _table(None, [
                 ['embedder', opts['embedder']['name']],
                 ['tokenizer', f"{opts['tokenizer']['source']} ({opts['tokenizer']['vocab_size']:,} tokens)"],
                 ['window', opts['window']], ['seq_len', opts['seq_len']], ['seed', opts['seed']]], left=2),
             '<h2>Totals</h2>',
             _table(['documents read', 'indexed', 'rejected', 'excluded', 'windows', 'tokens', 'EOS', 'pad',
                     'samples', 'sample tokens'],
                    [[f"{t.get(k, 0):,}" for k in ('documents_read', 'documents_indexed', 'documents_rejected',
                                                   'documents_excluded', 'windows', 'tokens', 'eos_tokens',
                                                   'pad_tokens', 'samples', 'sample_tokens')]],
                    left=0),
             '<p class=meta>documents read = indexed + rejected + excluded (dropped as eval text by '
             '<code>--exclude</code>)</p>']
    if manifest['rejects']['count']:
        parts.append(f"<p>Rejects by reason (each listed with file and line in "
                     f"<code>{e(manifest['rejects']['file'])}</code>):</p>" +
                     _table(['reason', 'records'],
                            [[k, f'{v:,}'] for k, v in manifest['rejects']['by_reason'].items()]))
    level_rows = []
    for level, info in enumerate(levels):
        row = [level, len(info['nodes']), info['planned'], info['pruned_empty']]
        if insp.weights:
            spec = insp.specialist(level)
            row += [f'{np.mean(spec > 0):.1%}', f'{effective_sample_fraction(spec, insp.generalist(level)):.1%}']
        level_rows.append(row)
    parts += ['<h2>Levels</h2>',
              _table(['level', 'clusters', 'planned', 'pruned empty'] +
                     (['with specialist windows', 'ESS of raw P(c|spec)'] if insp.weights else []), level_rows, left=0)]
    if insp.weights:
        w, seq_len = insp.weights, opts['seq_len']
        over = int(np.sum(insp.repeats > 1))
        parts += ['<h2>Mixture</h2>', _table(None, left=2, rows=[
            ['weights file', insp.weights_path], ['level', f"{insp.level} ({w['level_rule']})"],
            ['options', ', '.join(f'{k}={v}' for k, v in sorted(w['options'].items()))],
            ['specialist windows', f"{sum(task['windows'] for task in w['tasks']):,}"],
            ['coverage', f"{np.mean(insp.target > 0):.1%} of the level's clusters"],
            ['effective sample size', f'{insp.ess_fraction:.1%} of the pool '
                                      f'({insp.ess_fraction * int(insp.index.leaf_samples.sum()):,.0f} samples)'],
            ['budget', f'{insp.budget_samples:,} samples of {seq_len} tokens ({insp.budget_source})'],
            ['leaves repeated more than once', f'{over:,} of {insp.index.num_leaves:,} '
                                               f'(max {insp.repeats.max():.2f}x)']] +
            ([['note', STALE_NOTE]] if insp.stale_target else []))]
    parts.append('<h2>Plots</h2>')
    parts += [f'<figure><img src="{e(name)}" alt="{e(caption)}"><figcaption>{e(caption)}</figcaption></figure>'
              for name, caption in figures]
    ranked = 'target weight' if insp.weights else 'samples'
    parts.append(f'<h2>Top clusters by {ranked}</h2><p class=meta>Snippets are samples decoded from the '
                 f'cluster\'s own shards with the index\'s tokenizer (windows separated by ‖, padding dropped). '
                 f'Top terms: TF-IDF over {TERM_SAMPLES} decoded samples per cluster, one document per shown '
                 f'cluster (scikit-learn TfidfVectorizer, English stop words dropped).</p>')
    parts += [_cluster_html(insp, view) for view in views]
    return (f'<!DOCTYPE html><html lang=en><head><meta charset="utf-8"><title>cis_stream report '
            f'{e(insp.index.fingerprint[:16])}</title><style>{CSS}</style></head>'
            f'<body>{"".join(parts)}</body></html>\n')


def write_report(insp: Inspection, out_dir: str, top: int = TOP_CLUSTERS, progress: bool = True) -> str:
    """Write `out_dir/index.html` and its PNG plots (relative links); returns the HTML path."""
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise ValueError(f'--html {out_dir}: exists and is not a directory; give a directory for the report')
    os.makedirs(out_dir, exist_ok=True)
    plots = [('histograms.png', plot_histograms)]
    if insp.weights:
        plots += [('importance.png', plot_importance), ('ess.png', plot_ess), ('repetition.png', plot_repeats)]
    figures = [(name, draw(insp, os.path.join(out_dir, name))) for name, draw in plots]
    views = describe_clusters(insp, top, progress)
    path = os.path.join(out_dir, REPORT_FILE)
    with open(path, 'w', encoding='utf-8') as handle:
        handle.write(render_html(insp, views, figures))
    return path
