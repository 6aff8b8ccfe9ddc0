"""The quality benchmark: `python -m benchmarks.quality --help` from the repository root.

    data.py         the corpus, the pool and its held-out slice, the tokenizer, indexes, weights files
    baselines.py    the selections CIS is compared with: DSIR (whole documents and pieces), a classifier
    experiments.py  one training run (train.py) and the tables of runs (Bench)
    report.py       the Markdown tables and the plots in benchmarks/results/plots/
    __main__.py     the command line
"""

import os

# Set before anything imports faiss or huggingface_hub (running this package runs this first);
# the indexing and training subprocesses inherit them. faiss's idle OpenMP threads otherwise spin:
# on 2 shared cores each small k-means search then takes seconds, not milliseconds (results are
# unchanged). Models come from the local cache only.
os.environ.setdefault('OMP_WAIT_POLICY', 'PASSIVE')
os.environ.setdefault('HF_HUB_OFFLINE', '1')
