#!/usr/bin/env bash
# Render a bench-report HTML page to a PNG with headless Chromium (Debian's chromium package).
#   bash scripts/screenshot_report.sh runs/demo/report.html results/report_screenshot.png [height]
set -euo pipefail
page="$(realpath "$1")"
out="$(realpath -m "$2")"
height="${3:-2200}"
profile="$(mktemp -d)"
trap 'rm -rf "$profile"' EXIT
chromium --headless --no-sandbox --disable-gpu --disable-quic --no-first-run \
  --disable-background-networking --disable-component-update --disable-sync \
  --user-data-dir="$profile" --hide-scrollbars --window-size=1400,"$height" \
  --screenshot="$out" "file://$page" >/dev/null 2>&1
echo "wrote $out"
