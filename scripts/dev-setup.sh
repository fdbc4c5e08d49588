#!/usr/bin/env bash
# Installs everything the test suite needs into a virtualenv (default .venv), idempotently.
# Python packages come from PyPI; tmux (for the end-to-end terminal test) from Debian if missing.
set -euo pipefail
venv=${1:-.venv}
cd "$(dirname "$0")/.."
[ -x "$venv/bin/python" ] || python3 -m venv "$venv"
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q -e '.[story,engines,rtx,test]'
# tensorrt-stubs (for mypy) declares a dependency on a download-only stub package: no deps.
"$venv/bin/python" -m pip install -q --no-deps tensorrt-stubs \
  || echo "dev-setup: tensorrt-stubs is not available from this package index; mypy sees tensorrt untyped" >&2
if ! command -v tmux >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq tmux >/dev/null) || echo "dev-setup: could not install tmux; the end-to-end TUI test will be skipped" >&2
  else
    echo "dev-setup: tmux not found (install it to run the end-to-end TUI test)" >&2
  fi
fi
# Debian's chromium + chromium-driver: the browser test of `ncanvas serve` (Selenium drives them;
# nothing is downloaded at test time). NCANVAS_REQUIRE_BROWSER=1 (CI) makes a failure fatal.
if ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) \
      || echo "dev-setup: could not install chromium + chromium-driver; the browser test of serve will be skipped" >&2
  else
    echo "dev-setup: chromium / chromedriver not found (apt-get install chromium chromium-driver for the serve browser test)" >&2
  fi
fi
if [ "${NCANVAS_REQUIRE_BROWSER:-0}" = 1 ] && ! { command -v chromium >/dev/null 2>&1 && command -v chromedriver >/dev/null 2>&1; }; then
  echo "dev-setup: FATAL: chromium and chromedriver are required here (NCANVAS_REQUIRE_BROWSER=1)" >&2
  exit 1
fi
