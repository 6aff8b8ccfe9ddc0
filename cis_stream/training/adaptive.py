"""The Composer callback of adaptive phases: measure the model at the boundary, write the phase.

At the end of the epoch before an adaptive phase, rank 0 measures the model's per-token loss on
the specialist validation text per cluster, applies the rule of `cis_stream.adaptive` to the
phase's base mixture and writes the result to the dataset's `adapt_dir`; every rank waits for it
(a barrier) before the next epoch is drawn. A file already there (a resumed run) is replayed, not
measured again. train.py adds this callback whenever the schedule has an adaptive phase.
"""

from __future__ import annotations

import os
from collections import defaultdict

import numpy as np
import torch
from composer.core import Callback, State
from composer.loggers import Logger
from composer.utils import dist

from cis_stream.adaptive import AdaptRule, ValidationText, reweigh, write_adapted
from cis_stream.training.callbacks import next_token_losses


class AdaptiveMixture(Callback):
    """Sets each adaptive phase's proportions at its first epoch (see the module docstring)."""

    def __init__(self, batch_size: int = 16):
        self.batch_size = int(batch_size)
        self._validation: dict[AdaptRule, ValidationText] = {}

    def epoch_end(self, state: State, logger: Logger) -> None:
        dataset = state.train_dataloader.dataset
        mixture = dataset.mixture
        epoch = int(state.timestamp.epoch.value)  # the epoch about to be drawn
        phase = mixture.phase_of(epoch)
        rule = mixture.rules[phase]
        if rule is None or epoch != mixture.first_epoch(phase):
            return
        path = mixture.adapted_path(phase)
        if dist.get_global_rank() == 0 and not os.path.exists(path):
            if rule not in self._validation:
                self._validation[rule] = ValidationText(dataset.cis_index, rule)
            losses = self.cluster_losses(state, self._validation[rule], dataset.max_seq_len)
            leaves = dataset.cis_index.num_leaves
            proportions, clusters = reweigh(mixture.base[phase][:leaves], dataset.cis_index.leaf_ancestors(rule.level),
                                            losses, rule.step)
            write_adapted(path, dataset.cis_index, mixture.fingerprint, phase, proportions, rule, clusters,
                          int(state.timestamp.batch.value))
            logger.log_metrics({f'adaptive/phase{phase + 1}/loss/c{c}': loss for c, loss in losses.items()})
        dist.barrier()

    def cluster_losses(self, state: State, text: ValidationText, max_seq_len: int) -> dict[int, float]:
        """Mean next-token loss of the validation windows of each cluster, pieces of max_seq_len tokens."""
        by_length: dict[int, list[tuple[np.ndarray, int]]] = defaultdict(list)
        for tokens, cluster in zip(text.windows, text.clusters):
            for start in range(0, len(tokens), max_seq_len):
                piece = tokens[start:start + max_seq_len]
                if len(piece) > 1:
                    by_length[len(piece)].append((piece, int(cluster)))
        model = getattr(state.model, 'module', state.model)
        device = next(model.parameters()).device
        sums, counts = defaultdict(float), defaultdict(int)
        training = model.training
        model.eval()
        with torch.no_grad():
            for length, pieces in by_length.items():
                for i in range(0, len(pieces), self.batch_size):
                    chunk = pieces[i:i + self.batch_size]
                    ids = torch.from_numpy(np.stack([p for p, _ in chunk]).astype(np.int64)).to(device)
                    loss = next_token_losses(model({'input_ids': ids, 'labels': ids}), ids).sum(dim=1).cpu()
                    for (_, cluster), total in zip(chunk, loss.tolist()):
                        sums[cluster] += total
                        counts[cluster] += length - 1
        model.train(training)
        return {c: sums[c] / counts[c] for c in sorted(sums)}
