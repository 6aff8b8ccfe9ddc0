"""How the ranks of a job share its parts: claims, first come first served, markers of finished work.

A part's stage is done when its marker file exists in the part's directory, so a killed job that is
started again redoes only what has no marker. Within a run, each rank claims a part by creating a
claim file atomically (also on NFS); which rank does a part changes nothing in the result, only
how long the job takes.
"""

from __future__ import annotations

import os
import time

import numpy as np
from tqdm.auto import tqdm

# Inside a staging directory: the work of an unfinished build or add, deleted before publishing.
WORK_DIR = '_work'
PARTS_DIR = 'parts'
CLAIMS_DIR = 'claims'


def part_dir(work: str, part: int) -> str:
    """Where part `part` of a job (a build or an add) working in `work` keeps its files."""
    return os.path.join(work, PARTS_DIR, f'{part:06d}')


class StageTimer:
    """Times one stage into `timings[name]` (seconds), for the manifest."""

    def __init__(self, timings: dict, name: str):
        self.timings, self.name = timings, name

    def __enter__(self):
        self.start = time.perf_counter()

    def __exit__(self, *exc):
        self.timings[self.name] = round(time.perf_counter() - self.start, 3)


class PartWork:
    """The parts of a job in `work` (one directory each), shared among the ranks of `group`.

    `mine` is this rank's fixed share for the cheap sums over parts (each part counted once);
    the expensive stages go first come, first served (`share`).
    """

    def __init__(self, work: str, part_sizes: list[int], group, progress: bool):
        from cis_stream.index.dist import balanced_split
        self.work, self.group = work, group
        self.part_sizes = part_sizes
        self.claims = os.path.join(work, CLAIMS_DIR)
        self.progress = progress and group.leader
        self.mine = balanced_split(part_sizes, group.world)[group.rank]

    @property
    def num_parts(self) -> int:
        return len(self.part_sizes)

    def part_dir(self, part: int) -> str:
        return part_dir(self.work, part)

    def done(self, part: int, marker: str) -> bool:
        return os.path.exists(os.path.join(self.part_dir(part), marker))

    def share(self, marker: str, weights, unit: str, desc: str, work) -> int:
        """`work(part)` for every part without `marker`, shared among the ranks first come, first
        served (largest first), so that a slow core or node does less of it. Returns how many parts
        this rank did."""
        done_here = 0
        todo = sorted((p for p in range(self.num_parts) if not self.done(p, marker)), key=lambda p: (-weights[p], p))
        with self.bar(sum(weights[p] for p in todo), unit, desc) as bar:
            shown = time.monotonic()
            for p in todo:
                if self.claim(f'{marker}-{p}'):
                    work(p)
                    done_here += 1
                if self.progress and time.monotonic() - shown > 1:  # every rank's progress, once a second
                    bar.update(sum(weights[q] for q in todo if self.done(q, marker)) - bar.n)
                    shown = time.monotonic()
            self.group.barrier()
            bar.update(bar.total - bar.n)
        return done_here

    def claim(self, name: str) -> bool:
        """True for the one rank that creates the claim file `name` (atomic, also on NFS)."""
        if self.group.world == 1:
            return True
        try:
            os.close(os.open(os.path.join(self.claims, name), os.O_CREAT | os.O_EXCL | os.O_WRONLY))
            return True
        except FileExistsError:
            return False

    def bar(self, total, unit: str, desc: str):
        """A progress bar, shown by rank 0 only."""
        return tqdm(total=total, unit=unit, unit_scale=True, desc=desc, disable=not self.progress)

    def sum_over_parts(self, per_part, shape: tuple) -> np.ndarray:
        """Sum of the int64 arrays per_part(part) over this rank's parts, then over ranks."""
        total = np.zeros(shape, np.int64)
        for part in self.mine:
            total += per_part(part)
        return self.group.sum(total)
