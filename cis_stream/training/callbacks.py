"""Composer callbacks of cis_stream."""

from __future__ import annotations

import json
import os

from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist


class SampleOrderLogger(Callback):
    """Append each step's global sample ids (per rank, in rank order) to a JSON-lines file.

    This is how the determinism contract is checked: the same config must produce the same ids
    per step with 1 or N processes, 0 or N workers, and across a kill and resume. train.py turns
    on the dataset's `sample_ids` when this callback is configured.
    """

    def __init__(self, path: str):
        self.path = path

    def after_dataloader(self, state: State, logger: Logger) -> None:
        ids = state.batch['sample_id'].tolist()
        per_rank = dist.all_gather_object(ids)
        if dist.get_global_rank() == 0:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, 'a', encoding='utf-8') as handle:
                record = {'epoch': int(state.timestamp.epoch.value), 'batch': int(state.timestamp.batch.value),
                          'ids': per_rank}
                handle.write(json.dumps(record) + '\n')


class EvalHistoryLogger(Callback):
    """Append every evaluation's metrics, with the batch and tokens trained so far, to a JSON-lines file.

    One long run then gives a whole curve (perplexity against training tokens) instead of one final
    number. A resumed run appends after its checkpoint's batch; readers keep the last record per batch.
    """

    def __init__(self, path: str):
        self.path = path

    def eval_after_all(self, state: State, logger: Logger) -> None:
        metrics = {label: {name: float(metric.compute()) for name, metric in named.items()}
                   for label, named in state.eval_metrics.items()}
        if dist.get_global_rank() == 0:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, 'a', encoding='utf-8') as handle:
                record = {'batch': int(state.timestamp.batch.value), 'tokens': int(state.timestamp.token.value),
                          'metrics': metrics}
                handle.write(json.dumps(record, sort_keys=True) + '\n')
