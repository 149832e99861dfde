"""The embedded broker carries thousands of tasks from several publishers to the run command's
worker, each exactly once, and the worker stays up (kombu's filesystem transport did not)."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from collections import Counter

from governance.stack import ROOT, worker_command

PUBLISHERS = 3
TASKS_EACH = 1000

PUBLISH = """
import os, sys
os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
from governance.celery import app
prefix, count, path = sys.argv[1], int(sys.argv[2]), sys.argv[3]
with app.producer_or_acquire() as producer:
    for i in range(count):
        app.send_task("tests.record", args=(path, f"{prefix}-{i}"), producer=producer)
"""


def embedded_env(data_dir) -> dict:
    env = {key: value for key, value in os.environ.items() if key not in ("CELERY_BROKER_URL", "DATABASE_URL")}
    return {**env, "CAUSEWAY_DATA_DIR": str(data_dir), "DEBUG": "true"}


def wait_for_lines(path, count: int, worker: subprocess.Popen, seconds: float = 300) -> list[str]:
    deadline = time.monotonic() + seconds
    lines: list[str] = []
    while time.monotonic() < deadline and worker.poll() is None:
        lines = path.read_text().split() if path.exists() else []
        if len(lines) >= count:
            break
        time.sleep(0.5)
    return lines


def test_thousands_of_tasks_from_several_publishers_run_once_each_on_the_run_commands_worker(tmp_path):
    env = embedded_env(tmp_path)
    out = tmp_path / "executed.txt"
    worker_log = tmp_path / "worker.log"
    with open(worker_log, "w") as log:
        worker = subprocess.Popen([*worker_command(), "--include", "tests.broker_tasks"], cwd=ROOT, env=env,
                                  stdout=log, stderr=subprocess.STDOUT)
    try:
        publishers = [
            subprocess.Popen([sys.executable, "-c", PUBLISH, name, str(TASKS_EACH), str(out)], cwd=ROOT, env=env)
            for name in "abc"[:PUBLISHERS]
        ]
        assert [p.wait(timeout=300) for p in publishers] == [0] * PUBLISHERS
        lines = wait_for_lines(out, PUBLISHERS * TASKS_EACH, worker)
        assert worker.poll() is None, f"the worker died:\n{worker_log.read_text()[-3000:]}"
    finally:
        worker.terminate()
        worker.wait(timeout=60)

    counts = Counter(lines)
    expected = {f"{name}-{i}" for name in "abc"[:PUBLISHERS] for i in range(TASKS_EACH)}
    assert set(counts) == expected
    assert [label for label, n in counts.items() if n > 1] == []
    assert "Unrecoverable" not in worker_log.read_text()
