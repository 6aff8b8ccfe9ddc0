"""Composer callbacks of cis_stream."""

from __future__ import annotations

import json
import os

import numpy as np
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist


def next_token_losses(outputs, input_ids: torch.Tensor) -> torch.Tensor:
    """Per-token next-token loss [sequences, length - 1] from a model's outputs (logits, or an
    object or mapping holding them), shared by the per-cluster callbacks."""
    logits = outputs['logits'] if isinstance(outputs, dict) or hasattr(outputs, 'logits') else outputs
    return torch.nn.functional.cross_entropy(logits[:, :-1].float().transpose(1, 2), input_ids[:, 1:],
                                             reduction='none')


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


class ClusterLossLogger(Callback):
    """Training loss per cluster of the mixture: which parts of it the model is learning.

    Each training sequence's mean next-token loss is credited to the cluster its sample came from
    (its leaf's ancestor at tree `level`, 0 = the top; the specialist stream is its own group), from
    the sample ids the dataset adds to each batch (train.py turns them on for this callback). Every
    `interval` batches the sums are reduced over ranks and rank 0 appends one JSON line, {batch,
    tokens, clusters: {name: {loss, sequences}}}, to `path`, and logs `cluster_loss/NAME`. The cost
    is one more cross-entropy over the logits the step already computed.
    """

    def __init__(self, path: str, interval: int = 50, level: int = 0):
        self.path, self.interval, self.level = path, int(interval), int(level)
        self._sums = self._counts = self._groups = self._names = None

    def _setup(self, dataset) -> None:
        index = dataset.cis_index
        if not 0 <= self.level < len(index.levels):
            raise ValueError(f'callbacks.cluster_loss.level {self.level}: the index has levels '
                             f'0..{len(index.levels) - 1}')
        ancestors = index.leaf_ancestors(self.level)
        groups = index.levels[self.level]
        # Sources past the leaves are specialist streams: one group after the clusters.
        self._groups = np.append(ancestors, groups)
        self._names = [f'c{c}' for c in range(groups)] + ['specialist']
        self._sums = torch.zeros(groups + 1, dtype=torch.float64)
        self._counts = torch.zeros(groups + 1, dtype=torch.float64)

    def after_loss(self, state: State, logger: Logger) -> None:
        dataset = state.train_dataloader.dataset
        if self._sums is None:
            self._setup(dataset)
        batch = state.batch
        if 'sample_id' not in batch:
            raise ValueError('callbacks.cluster_loss needs the sample ids in each batch: use train.py, or set '
                             'train_loader.dataset.sample_ids: true')
        with torch.no_grad():
            losses = next_token_losses(state.outputs, batch['labels']).mean(dim=1).cpu().double()
        sources = np.minimum(dataset.leaf_of(batch['sample_id'].cpu().numpy()), len(self._groups) - 1)
        groups = torch.from_numpy(self._groups[sources])
        self._sums.index_add_(0, groups, losses)
        self._counts.index_add_(0, groups, torch.ones_like(losses))

    def batch_end(self, state: State, logger: Logger) -> None:
        batch = int(state.timestamp.batch.value)
        if self._sums is None or batch % self.interval:
            return
        sums, counts = self._sums.clone(), self._counts.clone()
        dist.all_reduce(sums)
        dist.all_reduce(counts)
        self._sums.zero_()
        self._counts.zero_()
        seen = torch.nonzero(counts).flatten().tolist()
        clusters = {self._names[g]: {'loss': float(sums[g] / counts[g]), 'sequences': int(counts[g])} for g in seen}
        logger.log_metrics({f'cluster_loss/{name}': value['loss'] for name, value in clusters.items()})
        if dist.get_global_rank() == 0:
            os.makedirs(os.path.dirname(os.path.abspath(self.path)), exist_ok=True)
            with open(self.path, 'a', encoding='utf-8') as handle:
                record = {'batch': batch, 'tokens': int(state.timestamp.token.value), 'level': self.level,
                          'clusters': clusters}
                handle.write(json.dumps(record) + '\n')
