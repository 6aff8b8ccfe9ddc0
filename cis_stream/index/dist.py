"""The process group of a distributed indexing job (torchrun or the composer launcher).

Data moves between ranks through the index's staging directory, which every rank must see (one
machine, or a shared file system across nodes, as for any multi-node output); so do the claims by
which ranks share out the parts (`index.job.IndexJob._claim`). torch.distributed
only carries barriers and small count reductions: gloo on CPU, nccl on GPU.
Without WORLD_SIZE > 1 in the environment everything here is a no-op, so one code path serves
one process and many.
"""

from __future__ import annotations

import contextlib
import datetime
import os

import numpy as np

# Rank 0 fits the embedder and the tree while the others wait at a barrier: allow long fits.
BARRIER_TIMEOUT = datetime.timedelta(hours=6)


class Group:
    """Rank, world size and the few collectives the indexer needs."""

    def __init__(self):
        self.world = int(os.environ.get('WORLD_SIZE', '1'))
        self.rank = int(os.environ.get('RANK', '0'))
        self.local_rank = int(os.environ.get('LOCAL_RANK', '0'))
        self._owned = False
        if self.world > 1:
            import torch.distributed as dist
            if not dist.is_initialized():
                backend = 'nccl' if _cuda() else 'gloo'
                dist.init_process_group(backend, timeout=BARRIER_TIMEOUT)
                self._owned = True
            self.rank, self.world = dist.get_rank(), dist.get_world_size()

    @property
    def leader(self) -> bool:
        return self.rank == 0

    def barrier(self) -> None:
        if self.world > 1:
            import torch.distributed as dist
            dist.barrier()

    def sum(self, array: np.ndarray) -> np.ndarray:
        """Element-wise sum over ranks of an integer array of the same shape on every rank."""
        if self.world == 1:
            return array
        import torch
        import torch.distributed as dist
        tensor = torch.from_numpy(np.ascontiguousarray(array, dtype=np.int64))
        if _cuda():
            tensor = tensor.to(f'cuda:{self.local_rank}')
        dist.all_reduce(tensor)
        return tensor.cpu().numpy()

    def close(self) -> None:
        if self._owned:
            import torch.distributed as dist
            dist.destroy_process_group()


def _cuda() -> bool:
    import torch
    return torch.cuda.is_available()


def share_cores() -> None:
    """Give each of the processes on a machine its share of the cores (unless the user chose).

    Must run before tokenizers, numpy's BLAS or faiss start their thread pools.
    """
    local_world = int(os.environ.get('LOCAL_WORLD_SIZE', os.environ.get('WORLD_SIZE', '1')))
    if local_world <= 1:
        return
    threads = str(max(1, (os.cpu_count() or 1) // local_world))
    for name in ('OMP_NUM_THREADS', 'RAYON_NUM_THREADS', 'OPENBLAS_NUM_THREADS', 'MKL_NUM_THREADS'):
        os.environ.setdefault(name, threads)


@contextlib.contextmanager
def one_thread():
    """Run the fits single-threaded: BLAS and OpenMP reductions round differently with other
    thread counts, and the embedder and tree must not depend on how many processes share a
    machine (nor on its core count). The fits work on samples, so this costs little."""
    import faiss
    from threadpoolctl import threadpool_limits
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(1)
    try:
        with threadpool_limits(1):
            yield
    finally:
        faiss.omp_set_num_threads(before)


def balanced_split(sizes: list[int], world: int) -> list[list[int]]:
    """Deal items to ranks, largest first to the least loaded (deterministic).

    Which rank does which part changes nothing in the result, only how long it takes.
    """
    loads = [0] * world
    owned: list[list[int]] = [[] for _ in range(world)]
    for item in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        rank = min(range(world), key=lambda r: (loads[r], r))
        owned[rank].append(item)
        loads[rank] += sizes[item]
    return [sorted(items) for items in owned]
