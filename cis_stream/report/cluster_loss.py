"""`cis-stream cluster-loss`: what the `cluster_loss` training callback logged, as a table and a plot.

Per cluster: its training loss in the first and the last interval, the change, and the sequences
trained on. A cluster whose loss falls slowly while it gets many sequences is where the mixture
spends tokens the model does not turn into progress.
"""

from __future__ import annotations

import json


def read_cluster_losses(path: str) -> list[dict]:
    """The callback's records in batch order; a batch logged twice (a resumed run) keeps its last."""
    records = {}
    try:
        with open(path, encoding='utf-8') as handle:
            for number, line in enumerate(handle, 1):
                try:
                    record = json.loads(line)
                    if not isinstance(record['clusters'], dict):
                        raise TypeError('clusters is not a mapping')
                    records[int(record['batch'])] = record
                except (json.JSONDecodeError, KeyError, TypeError, ValueError) as err:
                    raise ValueError(f'{path}, line {number}: not a cluster_loss record ({err}); the file is '
                                     f'written by the training callback `cluster_loss`') from None
    except FileNotFoundError:
        raise ValueError(f'{path}: no such file; train with `callbacks: {{cluster_loss: {{path: {path}}}}}` '
                         f'to write it') from None
    if not records:
        raise ValueError(f'{path}: no record yet (the callback writes one every `interval` batches)')
    return [records[batch] for batch in sorted(records)]


def cluster_table(records: list[dict]) -> str:
    """Per cluster: first and last logged loss, their change, and the sequences over the whole run."""
    names = sorted({name for r in records for name in r['clusters']},
                   key=lambda n: (n == 'specialist', int(n[1:]) if n[1:].isdigit() else 0))
    lines = [f"training loss per cluster (level {records[0].get('level', 0)}), batches {records[0]['batch']:,} "
             f"to {records[-1]['batch']:,}:",
             f"{'cluster':>10} {'first':>7} {'last':>7} {'change':>7} {'sequences':>10}"]
    for name in names:
        seen = [r['clusters'][name] for r in records if name in r['clusters']]
        first, last = seen[0]['loss'], seen[-1]['loss']
        lines.append(f'{name:>10} {first:7.3f} {last:7.3f} {last - first:+7.3f} '
                     f"{sum(s['sequences'] for s in seen):10,}")
    return '\n'.join(lines)


def plot_cluster_losses(records: list[dict], png: str) -> None:
    """Loss against training tokens, one line per cluster."""
    import matplotlib
    matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    names = sorted({name for r in records for name in r['clusters']})
    fig, ax = plt.subplots(figsize=(8, 4.5))
    for name in names:
        points = [(r['tokens'], r['clusters'][name]['loss']) for r in records if name in r['clusters']]
        ax.plot(*zip(*points), label=name, linewidth=2.5 if name == 'specialist' else 1.2)
    ax.set_xlabel('training tokens')
    ax.set_ylabel('training loss (nats per token)')
    ax.set_title(f"training loss per cluster (level {records[0].get('level', 0)})")
    ax.legend(fontsize=7, ncol=2 if len(names) > 10 else 1, loc='upper right')
    fig.tight_layout()
    fig.savefig(png, dpi=110)
    plt.close(fig)
