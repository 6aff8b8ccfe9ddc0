"""What a `ClusteredImportanceDataset` draws: one mixture, or a schedule of mixtures (phases).

Streaming fixes a mixture per epoch: `resample_streams(epoch)` draws each stream's `choose` count
of samples, seeded by (shuffle_seed, epoch), and only then partitions and shuffles that epoch's
sample ids over nodes, ranks and workers. So a schedule is a run of epochs of one size, each epoch
drawn with its phase's counts: the dataset sets the streams' counts for the epoch just before
Streaming draws it, and Streaming's partitioning, shuffling and resumption (its state is the epoch
and the sample in it; the epoch decides the phase) stay its own. Every phase has the same epoch
size because Composer counts an epoch's batches once, when training starts.

A phase's length is a whole number of epochs: the epoch is the greatest common divisor of the
phase lengths (in the unit they are given in), or `epoch_size` samples if set. The last phase may
leave its length out: it runs until training ends. Sources are the index's leaves, then each
distinct specialist stream the phases' weights mix in (source `num_leaves + i`). A phase with
`adapt:` has its proportions measured at its start (adaptive.py) and read from `adapt_dir`.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import dataclass

import numpy as np

from cis_stream.adaptive import AdaptRule, adapted_path, read_adapted
from cis_stream.format.reader import CISIndex
from cis_stream.mixture import capped_counts
from cis_stream.specialist import open_stream
from cis_stream.training.config import check_keys
from cis_stream.weights import read_weights

PHASE_KEYS = {'weights', 'tokens', 'samples', 'adapt'}
MAX_EPOCHS = 10_000  # Streaming redraws and re-partitions at every epoch: a schedule of more is a mistake


@dataclass(frozen=True)
class Phase:
    """One phase as written: a weights file (None: uniform, each leaf by its size), a length (None
    for the last phase: until training ends) in `unit` ('tokens' or 'samples'), and for an adaptive
    phase its rule (the weights are then the base the rule reweighs)."""
    weights: str | None
    length: int | None
    unit: str
    adapt: AdaptRule | None = None


def parse_schedule(schedule: list) -> list[Phase]:
    """Check a schedule as written in the YAML (`[{weights: ..., tokens: ...}, ...]`)."""
    if not isinstance(schedule, (list, tuple)) or not schedule:
        raise ValueError(f'schedule: expected a non-empty list of phases ({{weights: FILE or null, tokens: N}}), '
                         f'got {schedule!r}')
    phases = []
    for number, entry in enumerate(schedule, 1):
        where = f'schedule phase {number}'
        check_keys(where, entry, PHASE_KEYS)
        if 'weights' not in entry:
            raise ValueError(f'{where}: weights is required (a weights file, or null for uniform)')
        units = [unit for unit in ('tokens', 'samples') if unit in entry]
        if len(units) > 1:
            raise ValueError(f'{where}: give its length as tokens or as samples, not both')
        if not units and number < len(schedule):
            raise ValueError(f'{where}: its length (tokens: N or samples: N) is required; only the last phase '
                             f'may leave it out (it then runs until training ends)')
        length = None
        if units:
            value = entry[units[0]]
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value) or value < 1:
                raise ValueError(f'{where}: {units[0]} must be a whole number of at least 1, got {value!r}')
            length = int(value)
        adapt = AdaptRule.parse(entry['adapt'], where) if entry.get('adapt') is not None else None
        if adapt and number == 1:
            raise ValueError(f'{where}: the first phase cannot adapt (there is no trained model to measure yet)')
        phases.append(Phase(entry['weights'], length, units[0] if units else '', adapt))
    used = {p.unit for p in phases if p.length is not None}
    if len(used) > 1:
        raise ValueError('schedule: give every phase length in the same unit (all tokens or all samples)')
    return phases


def epochs_per_phase(phases: list[Phase], tokens_per_sample: int, epoch_size: int | None) -> tuple[list, int]:
    """Each phase's length in epochs (None: until the end) and the epoch size in samples."""
    lengths = [p.length for p in phases if p.length is not None]
    unit = next((p.unit for p in phases if p.length is not None), 'samples')
    per_sample = tokens_per_sample if unit == 'tokens' else 1
    if epoch_size is not None:
        step = epoch_size * per_sample
        if any(length % step for length in lengths):
            raise ValueError(f'schedule: every phase length must be a multiple of epoch_size ({epoch_size:,} '
                             f'samples = {step:,} {unit}); got {", ".join(f"{n:,}" for n in lengths)} {unit}')
    else:
        if not lengths:
            raise ValueError('schedule: a single phase without a length is a plain mixture; use weights: instead')
        step = math.gcd(*lengths)
        epoch_size = round(step / per_sample)
        if epoch_size < 1:
            raise ValueError(f'schedule: phase lengths {lengths} {unit} share only {step} {unit}, less than one '
                             f'sample of {tokens_per_sample} tokens; give lengths with a larger common divisor')
    epochs = [p.length // step if p.length is not None else None for p in phases]
    if sum(e for e in epochs if e) > MAX_EPOCHS:
        raise ValueError(f'schedule: phase lengths {", ".join(f"{n:,}" for n in lengths)} {unit} have only '
                         f'{step:,} {unit} in common, which makes {sum(e for e in epochs if e):,} epochs (each phase '
                         f'is a whole number of epochs of one size); use rounder lengths, e.g. multiples of '
                         f'{max(lengths) // 100:,} {unit}, or set epoch_size')
    return epochs, epoch_size


class Mixture:
    """Per-epoch draws from each source (leaves, then specialist streams), for every epoch.

    `phase_counts[k]` sums to `epoch_size` and holds phase k's counts (largest-remainder, with the
    max_repeat cap per epoch); `phase_epochs[k]` is its length in epochs (the last may be None).
    """

    def __init__(self, index: CISIndex, phases: list[Phase], epochs: list[int | None], epoch_size: int,
                 max_repeat: float | None, adapt_dir: str | None = None):
        self.index, self.epoch_size, self.max_repeat, self.adapt_dir = index, epoch_size, max_repeat, adapt_dir
        self.specialists: list[CISIndex] = []
        self.weights = [read_weights(p.weights, index) if p.weights is not None else None for p in phases]
        self.phase_epochs = epochs
        self.rules = [p.adapt for p in phases]
        if any(self.rules) and not adapt_dir:
            raise ValueError('the schedule has an adaptive phase: set adapt_dir, the folder where its measured '
                             'proportions are written (train.py uses save_folder/mixture)')
        # An adaptive phase's base proportions: the rule reweighs them at the phase's start.
        self.base = [self._proportions(p.weights, w) for p, w in zip(phases, self.weights)]
        self.source_samples = np.concatenate([index.leaf_samples] + [s.leaf_samples for s in self.specialists])
        self.base = [np.pad(p, (0, len(self.source_samples) - len(p))) for p in self.base]
        self.phase_counts = [None if rule else self._counts(p) for p, rule in zip(self.base, self.rules)]
        self.fingerprint = self._fingerprint(max_repeat)

    def _counts(self, proportions: np.ndarray) -> np.ndarray:
        return capped_counts(proportions, self.epoch_size, self.source_samples, self.max_repeat)

    def _proportions(self, path: str | None, weights: dict | None) -> np.ndarray:
        """A phase's proportions over the leaves and the specialist streams met so far."""
        leaf_samples = self.index.leaf_samples
        if weights is None:
            return leaf_samples / leaf_samples.sum()
        leaves = np.asarray(weights['leaf_proportions'], dtype=np.float64)
        record = weights.get('specialist')
        if not record:
            return leaves
        known = [s.fingerprint for s in self.specialists]
        if record['fingerprint'] not in known:
            self.specialists.append(open_stream(path, record, self.index))
            known.append(record['fingerprint'])
        stream = np.zeros(len(known))
        stream[known.index(record['fingerprint'])] = record['fraction']
        return np.concatenate([leaves * (1 - record['fraction']), stream])

    def _fingerprint(self, max_repeat: float | None) -> str:
        if len(self.weights) == 1:  # a plain mixture keeps the fingerprint it always had
            return mixture_fingerprint(self.index.fingerprint, self.weights[0], self.epoch_size, max_repeat)
        phases = [[mixture_fingerprint(self.index.fingerprint, w, self.epoch_size, max_repeat), epochs]
                  + (rule.fingerprint() if rule else [])
                  for w, epochs, rule in zip(self.weights, self.phase_epochs, self.rules)]
        blob = json.dumps(['schedule', phases], sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def first_epoch(self, phase: int) -> int:
        return sum(self.phase_epochs[:phase])

    def adapted_path(self, phase: int) -> str:
        return adapted_path(self.adapt_dir, phase)

    def set_adapted(self, phase: int, leaf_proportions: np.ndarray) -> None:
        """An adaptive phase's measured leaf proportions (the base's specialist share is kept)."""
        base = self.base[phase]
        leaves = self.index.num_leaves
        share = base[leaves:].sum()
        proportions = base.copy()
        proportions[:leaves] = np.asarray(leaf_proportions) / np.sum(leaf_proportions) * (1 - share)
        self.phase_counts[phase] = self._counts(proportions)

    def phase_of(self, epoch: int) -> int:
        """The phase an epoch belongs to (epochs after the schedule's end stay in the last phase)."""
        end = 0
        for phase, epochs in enumerate(self.phase_epochs):
            if epochs is None:
                return phase
            end += epochs
            if epoch < end:
                return phase
        return len(self.phase_epochs) - 1

    def counts(self, epoch: int) -> np.ndarray:
        """The epoch's draws per source; an adaptive phase's are read from its file when first needed."""
        phase = self.phase_of(epoch)
        if self.phase_counts[phase] is None:
            self.set_adapted(phase, read_adapted(self.adapted_path(phase), self.index, self.fingerprint, phase))
        return self.phase_counts[phase]

    @property
    def streamed_sources(self) -> np.ndarray:
        """Sources drawn from in any phase: each gets a Stream (with choose 0 in the other phases).
        An adaptive phase may draw from any source its base has weight on."""
        drawn = [counts > 0 if counts is not None else base > 0 for counts, base in zip(self.phase_counts, self.base)]
        return np.flatnonzero(np.any(np.stack(drawn), axis=0))


def mixture_fingerprint(index_fingerprint: str, weights: dict | None, epoch_size: int,
                        max_repeat: float | None) -> str:
    """Short id of what decides the sample order of one mixture besides Streaming's own knobs."""
    proportions = None if weights is None else weights['leaf_proportions']
    mixed = [index_fingerprint, proportions, epoch_size, max_repeat]
    stream = weights.get('specialist') if weights else None
    if stream:  # only then: fingerprints of mixtures without a specialist stream stay as they were
        mixed += [stream['fingerprint'], stream['fraction']]
    blob = json.dumps(mixed, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def plan_mixture(index: CISIndex, weights: str | None, schedule: list | None, epoch_size: int | None,
                 max_repeat: float | None, tokens_per_sample: int, adapt_dir: str | None = None) -> Mixture:
    """The dataset's mixture: `weights` (a file or None for uniform) for every epoch, or `schedule`."""
    if schedule is None:
        return Mixture(index, [Phase(weights, None, '')], [None], int(epoch_size or index.leaf_samples.sum()),
                       max_repeat)
    if weights is not None:
        raise ValueError('give weights or schedule, not both: a schedule names each phase\'s weights')
    phases = parse_schedule(schedule)
    epochs, size = epochs_per_phase(phases, tokens_per_sample, epoch_size)
    return Mixture(index, phases, epochs, size, max_repeat, adapt_dir)
