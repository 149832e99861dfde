#!/usr/bin/env bash
# Runs Causeway on its embedded defaults: SQLite, a Celery worker and beat on a broker
# that is a SQLite file of its own, web on http://127.0.0.1:8000 (PORT to change it),
# and demo traffic from the simulator. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
export CAUSEWAY_DATA_DIR=${CAUSEWAY_DATA_DIR:-$PWD/data}
mkdir -p "$CAUSEWAY_DATA_DIR"
[ -s "$CAUSEWAY_DATA_DIR/secret_key" ] || .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(50))" > "$CAUSEWAY_DATA_DIR/secret_key"
export SECRET_KEY=$(cat "$CAUSEWAY_DATA_DIR/secret_key")
export DEBUG=${DEBUG:-false}
# Plain HTTP on 127.0.0.1: no HTTPS redirect, secure cookies or HSTS (see README, Production).
export HTTPS=${HTTPS:-false}
PY=.venv/bin/python
$PY manage.py migrate --noinput -v 0
$PY manage.py collectstatic --noinput -v 0
$PY manage.py demo_setup
# The supervisor says which process stopped, why, and its last log lines; CAUSEWAY_DEMO is
# once (default), continuous or off.
exec $PY -m governance.stack "$@"
