"""The HTML report of `cis-stream inspect --html`: plots (matplotlib) and one self-contained page."""

from __future__ import annotations

import html
import os

import numpy as np

from cis_stream.report.inspect import (
    SNIPPET_CHARS,
    STALE_NOTE,
    TERM_SAMPLES,
    TOP_CLUSTERS,
    ClusterView,
    Inspection,
    describe_clusters,
)
from cis_stream.weights import effective_sample_fraction

BAR_LIMIT = 24         # levels with more clusters are drawn as lines, not bars


REPORT_FILE = 'index.html'


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
    raw = [effective_sample_fraction(insp.specialist(level), insp.generalist(level)) for level in range(len(levels))]
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
