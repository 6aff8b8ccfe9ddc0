"""The tests, in three tiers (run serially, in a TMPDIR of their own: `make test` does both).

unit/    the pure core, no index built: seconds (`make test-fast`, run first by `make test`)
e2e/     real indexes of real text, built through the API, the command line and the launchers
faults/  fault injection by theme: bad input, huge documents, full disks and kills, damaged
         leaves, security, a remote that goes away

Shared names live in helpers.py, shared fixtures in conftest.py and fixtures_mixture.py.
"""
