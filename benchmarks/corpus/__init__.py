"""The benchmark corpus: real text from offline packages, a generalist pool and specialist domains.

Build it with `python -m benchmarks.corpus.build`; see README.md beside this file.
"""
