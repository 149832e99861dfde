#!/usr/bin/env bash
# Runs Causeway on its embedded defaults: SQLite, Celery worker and beat on a
# filesystem broker, web on http://127.0.0.1:8000. Ctrl-C stops everything.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
[ -x .venv/bin/python ] || "$PYTHON" -m venv .venv
.venv/bin/python -m pip install -q --disable-pip-version-check -e .
mkdir -p data
[ -s data/secret_key ] || .venv/bin/python -c "import secrets; print(secrets.token_urlsafe(50))" > data/secret_key
export SECRET_KEY=$(cat data/secret_key)
export DEBUG=${DEBUG:-false}
# Plain HTTP on 127.0.0.1: no HTTPS redirect, secure cookies or HSTS (see README, Production).
export HTTPS=${HTTPS:-false}
PY=.venv/bin/python
$PY manage.py migrate --noinput -v 0
$PY manage.py demo_setup

pids=()
stop() { trap - INT TERM EXIT; kill "${pids[@]}" 2>/dev/null || true; wait 2>/dev/null || true; }
trap stop INT TERM EXIT
.venv/bin/celery -A governance worker --loglevel=WARNING --concurrency=2 & pids+=($!)
.venv/bin/celery -A governance beat --loglevel=WARNING & pids+=($!)
.venv/bin/gunicorn governance.wsgi --bind 127.0.0.1:8000 --workers 2 --threads 4 --log-level warning & pids+=($!)
$PY - <<'PYEOF'
import time, urllib.request
for _ in range(120):
    try:
        urllib.request.urlopen("http://127.0.0.1:8000/login/", timeout=1)
        break
    except OSError:
        time.sleep(0.5)
PYEOF
echo "Causeway is ready at http://127.0.0.1:8000 (Ctrl-C stops it)"
if [ "${CAUSEWAY_DEMO:-1}" = 1 ] && $PY -c "import traces.simulator" 2>/dev/null; then
  # Demo traffic with injected bugs, so the first timeline already shows findings.
  CAUSEWAY_INGEST_KEY=$(cat data/demo_ingest_key) $PY manage.py simulate --bug no-cas --bug idempotency-bypass \
    >/dev/null 2>&1 && echo "Demo traces sent: open http://127.0.0.1:8000/p/demo/traces/" &
fi
wait -n "${pids[@]}"
