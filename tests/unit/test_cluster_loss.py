"""`cis-stream cluster-loss`: the table and plot of the cluster_loss callback's records; bad files
get the file, line and what to do."""

import json

from cis_stream.cli import main


def _write(path, records):
    path.write_text(''.join(json.dumps(r) + '\n' for r in records), encoding='utf-8')
    return str(path)


def _record(batch, losses, level=0):
    return {'batch': batch, 'tokens': batch * 1024, 'level': level,
            'clusters': {name: {'loss': loss, 'sequences': 8} for name, loss in losses.items()}}


def test_the_table_gives_each_clusters_first_and_last_loss_and_a_resumed_batch_counts_once(tmp_path, capsys):
    path = _write(tmp_path / 'c.jsonl', [_record(25, {'c0': 8.0, 'c10': 7.5, 'specialist': 9.0}),
                                         _record(50, {'c0': 6.0, 'specialist': 5.0}),
                                         _record(50, {'c0': 5.5, 'specialist': 5.0})])  # replayed after a resume
    png = tmp_path / 'c.png'
    assert main(['cluster-loss', path, '--png', str(png)]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert lines[0] == 'training loss per cluster (level 0), batches 25 to 50:'
    rows = {line.split()[0]: line.split()[1:] for line in lines[2:5]}
    assert list(rows) == ['c0', 'c10', 'specialist']  # numeric order, the specialist stream last
    assert rows['c0'] == ['8.000', '5.500', '-2.500', '16'] and rows['c10'] == ['7.500', '7.500', '+0.000', '8']
    assert png.stat().st_size > 10_000


def test_a_missing_or_malformed_file_is_named_with_the_fix(tmp_path, capsys):
    assert main(['cluster-loss', str(tmp_path / 'none.jsonl')]) == 2
    assert 'none.jsonl: no such file; train with `callbacks: {cluster_loss: {path:' in capsys.readouterr().err
    bad = tmp_path / 'bad.jsonl'
    bad.write_text(json.dumps(_record(25, {'c0': 8.0})) + '\n{"batch": 50}\n', encoding='utf-8')
    assert main(['cluster-loss', str(bad)]) == 2
    assert "bad.jsonl, line 2: not a cluster_loss record ('clusters')" in capsys.readouterr().err
    empty = tmp_path / 'empty.jsonl'
    empty.write_text('', encoding='utf-8')
    assert main(['cluster-loss', str(empty)]) == 2
    assert 'no record yet' in capsys.readouterr().err
