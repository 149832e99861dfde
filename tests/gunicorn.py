"""gunicorn serving governance.wsgi on a free local port, as production runs it: for tests and benches."""

from __future__ import annotations

import http.client
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@contextmanager
def gunicorn_serving(*, env: dict, log_path: Path, options: tuple[str, ...] = ()) -> Iterator[tuple[str, subprocess.Popen]]:
    """(URL, process) of gunicorn once it answers, until the block ends; its output goes to log_path."""
    port = free_port()
    with open(log_path, "w") as output:
        process = subprocess.Popen(
            [str(Path(sys.executable).parent / "gunicorn"), "governance.wsgi", "--bind", f"127.0.0.1:{port}", *options],
            cwd=ROOT, env=env, stdout=output, stderr=subprocess.STDOUT)
    try:
        _wait_until_answering(process, port, Path(log_path))
        yield f"http://127.0.0.1:{port}", process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _wait_until_answering(process: subprocess.Popen, port: int, log_path: Path, seconds: float = 60) -> None:
    # GET /v1/traces answers 405 once the app is loaded, without touching the database.
    deadline = time.monotonic() + seconds
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"gunicorn exited:\n{log_path.read_text()}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"gunicorn did not answer within {seconds:.0f} s; see {log_path}")
        try:
            probe = http.client.HTTPConnection("127.0.0.1", port, timeout=2)
            probe.request("GET", "/v1/traces")
            if probe.getresponse().status == 405:
                return
        except OSError:
            pass
        time.sleep(0.2)
