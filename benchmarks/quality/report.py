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
    out += curve_tables(rows)
    out += schedule_table(rows)
    out += seed_table(rows)
    out += lsi_features_table(rows)
    other = [r for r in rows if r['table'] not in ('main', 'curve', 'lsi tokens')]
    if other:
        out.append('\n| table | method | domain | seed | ' + ' | '.join(domains) + ' | generalist | extra |')
        out.append('|---' * (len(domains) + 6) + '|')
        for r in other:
            extra = {k: v for k, v in r.items() if k in ('level', 'specialist_windows')}
            out.append(f"| {r['table']} | {r['method']} | {r['domain']} | {r['seed']} | "
                       + ' | '.join(f"{r['perplexity'][d]:.1f}" if d in r['perplexity'] else '–' for d in domains)
                       + f" | {r['perplexity']['generalist']:.1f} | {extra or ''} |")
    plots(rows, domains, tree)
    curve_plots(rows)
    return '\n'.join(out)


CURVE_METHODS = ('uniform', 'cis', 'cis+specialist', 'dsir-chunks', 'specialist', 'cis-adaptive', 'uniform-then-cis')


def curve_sets(rows: list[dict]) -> dict[tuple, dict[str, dict]]:
    """(model, domain, size, seed) → method → run, for the curve runs; uniform joins every set of its model."""
    sets: dict[tuple, dict[str, dict]] = {}
    curves = [r for r in rows if r['table'] == 'curve' and r.get('curve')]
    for r in curves:
        if r['method'] != 'uniform':
            sets.setdefault((r['model'], r['domain'], r['size'], r['seed']), {})[r['method']] = r
    for r in curves:
        if r['method'] == 'uniform':
            for key, runs in sets.items():
                if key[0] == r['model'] and key[3] == r['seed']:
                    runs['uniform'] = r
    return dict(sorted(sets.items()))


def at_tokens(run: dict, tokens: int, label: str) -> float | None:
    found = [p['perplexity'][label] for p in run['curve'] if p['tokens'] == tokens and label in p['perplexity']]
    return found[0] if found else None


def overfit_point(run: dict, label: str) -> dict | None:
    """The specialist-alone curve's minimum, when a later point is worse (it overfits from there)."""
    values = [p['perplexity'][label] for p in run['curve']]
    best = int(np.argmin(values))
    return run['curve'][best] if best < len(values) - 1 else None


def curve_tables(rows: list[dict]) -> list[str]:
    """Per (model, domain, set): specialist (generalist) perplexity of each method at each budget point."""
    out = []
    for (model, domain, size, seed), runs in curve_sets(rows).items():
        anchor = next(r for m, r in runs.items() if m != 'uniform')
        set_tokens = next((r['set_tokens'] for r in runs.values() if r.get('set_tokens')), None)
        methods = [m for m in CURVE_METHODS if m in runs]
        # The set's own budget points (uniform, shared by every set, may run longer).
        points = sorted({p['tokens'] for m, r in runs.items() if m != 'uniform' for p in r['curve']})
        title = f'{domain}, {size} specialist set'
        if set_tokens:
            title += f' ({set_tokens:,} tokens)'
        out.append(f'\n**Budget curve: {title}; {model} model, seed {seed}.** {domain} test perplexity '
                   f'(generalist held-out perplexity in brackets), lower is better; best of each row in bold.\n')
        out.append('| tokens | passes over the set | ' + ' | '.join(methods) + ' |')
        out.append('|---' * (len(methods) + 2) + '|')
        for tokens in points:
            values = {m: at_tokens(runs[m], tokens, domain) for m in methods}
            known = [v for v in values.values() if v is not None]
            best = min(known) if known else None
            cells = []
            for m in methods:
                if values[m] is None:
                    cells.append('–')
                    continue
                general = at_tokens(runs[m], tokens, 'generalist')
                text = f'{values[m]:.1f}'
                cells.append((f'**{text}**' if values[m] == best else text) + f' ({general:.0f})')
            passes = f'{tokens / set_tokens:.1f}' if set_tokens else '–'
            out.append(f'| {tokens:,} | {passes} | ' + ' | '.join(cells) + ' |')
        if 'specialist' in runs:
            turn = overfit_point(runs['specialist'], domain)
            out.append('\n' + (f"Specialist alone is best at {turn['tokens']:,} tokens and worse after: it overfits."
                                if turn else 'Specialist alone is still improving at the last point.'))
        seconds = [f"{m} {runs[m]['seconds'] / 60:.0f} min" for m in methods if runs[m].get('seconds')]
        if seconds:
            out.append(f"Wall time per run ({anchor['steps']} batches): " + ', '.join(seconds) + '.')
    return out


def lsi_features_table(rows: list[dict]) -> list[str]:
    """lsi on token ids against lsi on words (`--only lsi_tokens`): each run on the token index beside the
    same method's curve on the words index, at every budget point both have."""
    out = []
    words = {(r['method'], r['domain'], r['seed']): r for r in rows
             if r['table'] == 'curve' and r.get('curve') and r['model'] == 'small' and r['size'] in ('split', '-')}
    for run in (r for r in rows if r['table'] == 'lsi tokens' and r.get('curve')):
        label = run['domain'] if run['domain'] != 'all' else 'generalist'
        other = words.get((run['method'], run['domain'], run['seed']))
        if not other:
            continue
        if not out:
            out.append('\n**lsi on token ids against lsi on words** (same pool, tree, tokenizer, schedule and seed; '
                       'uniform evaluated on the generalist held-out text, cis from the train split on its domain): '
                       'perplexity on the words index / on the token index, lower is better.\n')
            out.append('| method | domain | seed | ' + ' | '.join(f'{p["tokens"]:,} tokens' for p in run['curve'])
                       + ' |')
            out.append('|---' * (len(run['curve']) + 3) + '|')
        cells = [f'{at_tokens(other, p["tokens"], label):.1f} / {p["perplexity"][label]:.1f}'
                 if at_tokens(other, p['tokens'], label) is not None else '–' for p in run['curve']]
        out.append(f"| {run['method']} | {run['domain']} | {run['seed']} | " + ' | '.join(cells) + ' |')
    return out


def seed_table(rows: list[dict]) -> list[str]:
    """Methods run with more than one seed, side by side at the largest budget point where at least two
    methods of the same (model, domain, set) have two seeds: is their order the same for each seed?"""
    values: dict[tuple, dict[str, dict[int, tuple[float, float]]]] = {}
    for (model, domain, size, seed), runs in curve_sets(rows).items():
        for method, run in runs.items():
            for p in run['curve']:
                if domain in p['perplexity']:
                    cell = (p['perplexity'][domain], p['perplexity']['generalist'])
                    values.setdefault((model, domain, size, p['tokens']), {}).setdefault(method, {})[seed] = cell
    largest: dict[tuple, int] = {}
    for (model, domain, size, tokens), methods in values.items():
        if sum(len(seeds) > 1 for seeds in methods.values()) > 1:
            largest[(model, domain, size)] = max(tokens, largest.get((model, domain, size), 0))
    if not largest:
        return []
    out = ['\n**Seeds side by side** (curve runs with two or more seeds): specialist test perplexity (generalist '
           'in brackets) of each seed and their mean, at the largest budget point two methods share.\n',
           '| model | domain | set | tokens | method | per seed | mean | spread |', '|---' * 8 + '|']
    for (model, domain, size), tokens in sorted(largest.items()):
        methods = values[(model, domain, size, tokens)]
        for method in (m for m in CURVE_METHODS if len(methods.get(m, {})) > 1):
            seeds = methods[method]
            specialist = [v[0] for v in seeds.values()]
            mean = float(np.mean(specialist))
            spread = (max(specialist) - min(specialist)) / mean
            per_seed = ', '.join(f's{seed} {v[0]:.1f} ({v[1]:.0f})' for seed, v in sorted(seeds.items()))
            out.append(f'| {model} | {domain} | {size} | {tokens:,} | {method} | {per_seed} | {mean:.1f} | '
                       f'{100 * spread:.0f}% |')
    return out


SCHEDULED = ('cis-adaptive', 'uniform-then-cis')


def schedule_table(rows: list[dict]) -> list[str]:
    """Issue 17: static CIS against the scheduled mixtures at the scheduled runs' budget, per domain
    and seed (the static point comes from a CIS curve of that seed, at least as long)."""
    scheduled = [r for r in rows if r['table'] == 'curve' and r['method'] in SCHEDULED and r.get('curve')]
    cells: dict[tuple, dict[str, dict]] = {}
    for r in scheduled:
        cells.setdefault((r['domain'], r['seed'], r['curve'][-1]['tokens']), {})[r['method']] = r
    if not cells:
        return []
    out = ['\n**Mixture schedules against static CIS** (issue 17): specialist test perplexity (generalist in '
           'brackets) at the scheduled runs\' budget; the small specialist set; lower is better.\n',
           '| domain | seed | tokens | static cis | ' + ' | '.join(SCHEDULED) + ' |',
           '|---' * (4 + len(SCHEDULED)) + '|']
    for (domain, seed, tokens), runs in sorted(cells.items()):
        static = next((r for r in rows if r['table'] == 'curve' and r['method'] == 'cis' and r['domain'] == domain
                       and r['seed'] == seed and r.get('size') == 'small' and r.get('model') == 'small'
                       and r.get('curve') and at_tokens(r, tokens, domain) is not None), None)
        values = [static] + [runs.get(m) for m in SCHEDULED]
        text = [f'{at_tokens(r, tokens, domain):.1f} ({at_tokens(r, tokens, "generalist"):.0f})' if r else '–'
                for r in values]
        out.append(f'| {domain} | {seed} | {tokens:,} | ' + ' | '.join(text) + ' |')
    return out


def curve_plots(rows: list[dict]) -> None:
    """One PNG per (model, domain): specialist perplexity against training tokens, a panel per set size,
    with the point where specialist alone starts to overfit marked."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    from matplotlib.ticker import NullFormatter
    by_domain: dict[tuple, list] = {}
    for (model, domain, size, seed), runs in curve_sets(rows).items():
        by_domain.setdefault((model, domain), []).append((size, seed, runs))
    for (model, domain), panels in by_domain.items():
        fig, axes = plt.subplots(1, len(panels), figsize=(5.5 * len(panels), 4), squeeze=False)
        for ax, (size, seed, runs) in zip(axes[0], panels):
            for method in (m for m in CURVE_METHODS if m in runs):
                curve = runs[method]['curve']
                ax.plot([p['tokens'] for p in curve], [p['perplexity'][domain] for p in curve], marker='o',
                        markersize=3, label=method, color=f'C{CURVE_METHODS.index(method)}')  # same in every panel
            if 'specialist' in runs and (turn := overfit_point(runs['specialist'], domain)):
                ax.plot([turn['tokens']], [turn['perplexity'][domain]], marker='x', color='black', markersize=10,
                        label='specialist alone starts to overfit')
            ax.set_xscale('log')
            ax.set_yscale('log')
            ax.xaxis.set_minor_formatter(NullFormatter())  # labelled minor ticks overlap on short curves
            ax.set_xlabel('training tokens')
            ax.set_ylabel(f'{domain} test perplexity')
            ax.set_title(f'{domain}, {size} set (seed {seed}, {model} model)')
            ax.legend(fontsize=7)
        fig.tight_layout()
        fig.savefig(os.path.join(PLOTS, f'curve_{domain}_{model}.png'), dpi=110)
        plt.close(fig)


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
