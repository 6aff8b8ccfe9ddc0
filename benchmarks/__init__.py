"""Benchmarks of cis_stream, run as modules from the repository root (see docs/benchmarks.md).

    perf/      speed and memory, each against its baseline in the same run
               (`python -m benchmarks.perf.bench_loader`, ...)
    quality/   training quality of the CIS mixture against uniform, DSIR, a classifier and the
               specialist set (`python -m benchmarks.quality`)
    corpus/    the real-text benchmark corpus (`python -m benchmarks.corpus.build`)
    results/   RESULTS.md, the recorded results and the commands that made them, and its plots

Everything the benchmarks compute is cached under OUT (benchmarks/out/, git-ignored).
"""

import os

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
OUT = os.path.join(ROOT, 'benchmarks', 'out')
