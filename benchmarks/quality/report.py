"""The results as Markdown tables, and the two plots (benchmarks/results/plots/)."""

from __future__ import annotations

import os

import numpy as np

from benchmarks import ROOT

PLOTS = os.path.join(ROOT, 'benchmarks', 'results', 'plots')


def cell(rows, domain, method, label):
    """Mean over seeds (± half their range); `cis@L` includes the default-rule run when it chose level L."""
    found = [r['perplexity'][label] for r in rows if r['domain'] in (domain, 'all') and label in r['perplexity'] and
             (r['method'] == method or (r['method'] == 'cis' and method == f"cis@{r.get('level')}"))]
    if not found:
        return '–'
    spread = f' ±{(max(found) - min(found)) / 2:.0f}' if len(found) > 1 else ''
    return f'{np.mean(found):.1f}{spread}'


def by_level(main: list[dict], domain: str, label: str) -> dict[int, float]:
    """CIS perplexity on `label` per tree level for `domain`, mean over seeds."""
    per_level: dict[int, list[float]] = {}
    for r in main:
        if r['domain'] == domain and 'level' in r:
            per_level.setdefault(r['level'], []).append(r['perplexity'][label])
    return {level: float(np.mean(values)) for level, values in per_level.items()}


def report(rows: list[dict], domains: list[str], tree: list[int]) -> str:
    """Markdown tables of `rows` and the two PNG plots (written to PLOTS); `tree` is the pool
    index's clusters per level."""
    main = [r for r in rows if r['table'] == 'main']
    levels = sorted({r['level'] for r in main if 'level' in r})
    out = []
    for label, title in (('{d}', 'specialist test perplexity'), ('generalist', 'generalist held-out perplexity')):
        methods = (['uniform', 'cis'] + [f'cis@{level}' for level in levels]
                   + ['dsir', 'dsir-chunks', 'classifier', 'specialist'])
        out.append(f'\n**{title}** (lower is better; mean over seeds, ± half the range between seeds)\n')
        out.append('| domain | ' + ' | '.join(methods) + ' | best CIS level (validation) |')
        out.append('|---' * (len(methods) + 2) + '|')
        for d in domains:
            cells = [cell(main, d, m, label.format(d=d)) for m in methods]
            validation = by_level(main, d, f'{d}_validation')
            best = min(validation, key=validation.get) if validation else '–'
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
    plots(rows, domains, tree)
    return '\n'.join(out)


def plots(rows, domains, tree) -> None:
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    os.makedirs(PLOTS, exist_ok=True)
    main = [r for r in rows if r['table'] == 'main']
    fig, ax = plt.subplots(figsize=(6, 4))
    for d in domains:
        points = sorted(by_level(main, d, d).items())
        if points:
            xs = [tree[level] for level, _ in points]
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
            ax.plot([p[0] for p in points], [p[1] for p in points], marker='o', label=f'{tree[level]} clusters')
        ax.set_xscale('log')
        ax.set_xlabel('specialist windows')
        ax.set_ylabel(f'{domain} test perplexity')
        ax.set_title('specialist-set size x tree level (mean over seeds)')
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(os.path.join(PLOTS, 'quality_size.png'), dpi=110)
        plt.close(fig)
