#!/usr/bin/env bash
# Runs the whole test suite. SQLite and the filesystem broker by default;
# PostgreSQL and Redis when DATABASE_URL and CELERY_BROKER_URL are set.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
# .ci/run installs once, then runs two halves of the suite at once: CAUSEWAY_INSTALLED=1 skips the install.
[ "${CAUSEWAY_INSTALLED:-0}" = 1 ] || .venv/bin/python -m pip install -q --disable-pip-version-check -e '.[dev]'
if [ ! -x /usr/bin/chromium ] && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # Browser tests drive Debian's chromium; Playwright never downloads a browser.
  (apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q chromium >/dev/null; }) \
    || echo "chromium could not be installed: browser tests will fail" >&2
fi
if ! command -v node >/dev/null && [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  # tests/test_node_exporter.py runs the OpenTelemetry JS exporters under Node.js.
  (apt-get install -y -q nodejs npm >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q nodejs npm >/dev/null; }) \
    || echo "Node.js could not be installed: the JS exporter tests will fail" >&2
fi
export DEBUG=${DEBUG:-true}
export CAUSEWAY_DATA_DIR=${CAUSEWAY_DATA_DIR:-$PWD/data/test}
exec .venv/bin/python -m pytest "$@"
