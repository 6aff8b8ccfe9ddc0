#!/usr/bin/env bash
# Render an inspection report (`cis-stream inspect INDEX --html DIR`) to one PNG with headless
# Chromium, to look at it or attach it where HTML will not do. Not part of `make test`.
# Usage: scripts/render_report.sh DIR/index.html OUT.png [WIDTH [HEIGHT]]
# Chromium screenshots the window only: raise HEIGHT if the bottom of the report is cut off.
# Debian/Ubuntu: apt-get install -y chromium
set -euo pipefail
if [ $# -lt 2 ]; then
    echo "usage: $0 DIR/index.html OUT.png [WIDTH [HEIGHT]]" >&2
    exit 2
fi
html=$(realpath "$1")
png=$(realpath -m "$2")
width=${3:-1100}
height=${4:-6000}
browser=$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)
if [ -z "$browser" ]; then
    echo "$0: no chromium found; install it (Debian/Ubuntu: apt-get install -y chromium)" >&2
    exit 1
fi
# --no-sandbox: Chromium refuses to run as root with its sandbox (containers, CI).
"$browser" --headless --no-sandbox --disable-gpu --hide-scrollbars --allow-file-access-from-files \
    --screenshot="$png" --window-size="$width,$height" "file://$html" 2>/dev/null
echo "wrote $png"
