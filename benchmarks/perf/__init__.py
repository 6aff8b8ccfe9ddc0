"""Speed and memory benchmarks: `python -m benchmarks.perf.bench_<name> --help` from the repository root.

Their shared pieces (the cached Wikipedia corpus and indexes, timing helpers) are in common.py.
"""

import os

# Set before anything imports faiss or huggingface_hub (running a module of this package runs
# this first). faiss's idle OpenMP threads otherwise spin: on 2 shared cores each small k-means
# search then takes seconds, not milliseconds (results are unchanged). Models come from the local
# cache only.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
