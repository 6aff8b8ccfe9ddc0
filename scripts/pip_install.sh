#!/usr/bin/env bash
# pip install with retries, for `make setup`. torch's CUDA wheels from PyPI are ~3 GB, and a
# download that stalls mid-file once failed a CI run: pip resumes a stalled file up to 30 times,
# and the whole install is retried 3 times, a minute apart. Wheels pip finished are in its cache,
# so a retry only fetches what is still missing.
set -uo pipefail
python="$1"; shift
resume=()  # --resume-retries came with pip 25.1; a fresh venv's pip may be older
[[ "$("$python" -m pip install --help)" == *--resume-retries* ]] && resume=(--resume-retries 30)
for attempt in 1 2 3; do
    "$python" -m pip install --quiet --retries 10 "${resume[@]}" "$@" && exit 0
    echo "pip install $* failed (attempt $attempt of 3); retrying in 60 s" >&2
    [ "$attempt" -lt 3 ] && sleep 60
done
echo "pip install $* failed 3 times: check the network or PyPI, then run 'make setup' again" >&2
exit 1
