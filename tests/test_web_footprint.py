"""Web processes stay small: serving pages loads no Numba (about 80 MB a process); only the
worker, which analyses, compiles or loads the happens-before kernels."""

import http.client
import urllib.parse

import pytest

from tests.conftest import production_env
from tests.gunicorn import gunicorn_serving


def loaded_files(pid: int) -> set[str]:
    with open(f"/proc/{pid}/maps") as maps:
        return {line.split()[-1] for line in maps if "/" in line}


@pytest.mark.django_db(transaction=True)
def test_a_gunicorn_worker_serving_pages_loads_no_numba(tmp_path, alice, acme):
    from django.db import connection

    with gunicorn_serving(env=production_env(connection, tmp_path), log_path=tmp_path / "gunicorn.log", options=("--workers", "1")) as (url, master):
        target = urllib.parse.urlsplit(url)
        for path in ("/login/", "/p/acme/traces/", "/p/acme/pipeline/", "/api/v1/findings/", "/v1/traces"):
            conn = http.client.HTTPConnection(target.hostname, target.port, timeout=30)
            conn.request("GET", path)
            assert conn.getresponse().status in (200, 302, 401, 403, 405), path
            conn.close()
        with open(f"/proc/{master.pid}/task/{master.pid}/children") as children:
            [worker] = [int(pid) for pid in children.read().split()]
        files = loaded_files(worker)
    assert any("/django/" in f or "psycopg" in f or "sqlite" in f for f in files), "the worker served Django"
    assert not [f for f in files if "/numba/" in f or "llvmlite" in f]


@pytest.mark.django_db(transaction=True)
def test_only_a_worker_that_takes_the_analysis_queue_loads_numba(tmp_path):
    from tests.processes import celery_env, running, wait_for, worker

    control = worker(celery_env(), tmp_path, "control", queues="control")
    analysing = worker(celery_env(), tmp_path, "analysing")
    with running(control, analysing):
        wait_for(lambda: "analysis kernels loaded" in analysing.log_path.read_text(), 120,
                 f"the analysis worker's kernels (see {tmp_path})")
        wait_for(lambda: "ready." in control.log_path.read_text() and control.pool_pids(), 60,
                 f"the control worker (see {tmp_path})")
        [pool] = control.pool_pids()
        assert not [f for f in loaded_files(pool) if "/numba/" in f or "llvmlite" in f]
        [pool] = analysing.pool_pids()
        assert [f for f in loaded_files(pool) if "llvmlite" in f]
    assert "analysis kernels loaded" not in control.log_path.read_text()
