#!/usr/bin/env bash
# Make sure the book check (tools/check_book.py) finds a headless Chromium. It looks for one of the
# names below on PATH. As root with apt-get (CI, containers) this installs Debian's `chromium`;
# anywhere else it stops at once with the command to run, so the test command never fails late.
set -euo pipefail

for name in chromium chromium-browser google-chrome; do
  if command -v "$name" >/dev/null 2>&1; then
    exit 0
  fi
done

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "== installing Chromium for the book check (apt-get install chromium)"
  if apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; then
    exit 0
  fi
fi

cat >&2 <<'EOF'
The book check needs a headless Chromium: none of chromium, chromium-browser, google-chrome is on PATH.
Install it, then run the command again:
  Debian:  sudo apt-get install -y chromium
  Ubuntu:  sudo apt-get install -y chromium-browser   (or Google Chrome's .deb: google-chrome)
  Elsewhere: put a link named chromium to the browser's executable on PATH.
EOF
exit 1
