"""The run command's process supervisor: web, worker and beat (and the demo traffic) as one stack.

`scripts/run.sh` installs, migrates and then hands over to `python -m governance.stack`.
Each process writes to its own log under DATA_DIR/logs; warnings also reach the screen,
prefixed with the process name. When a process of the stack exits, the supervisor says
which one, with its exit status and the last lines of its log, and stops the rest: a
stack that stops itself never does so silently. The demo traffic is not part of the
stack: when it fails the supervisor says so and the stack stays up.

The worker's command line lives here so that tests run the worker exactly as users do.
No Django import: it only starts processes.
"""

from __future__ import annotations

import argparse
import collections
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from pathlib import Path

from governance.multiproc import dead_files_remove, multiproc_dir

ROOT = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
TAIL_LINES = 20
STOP_GRACE_S = 15.0


def worker_command(*, concurrency: int = 2) -> list[str]:
    """The Celery worker as the run command starts it: one consuming process, prefork children."""
    return [str(BIN / "celery"), "-A", "governance", "--quiet", "worker", "--loglevel=WARNING",
            f"--concurrency={concurrency}", "--without-gossip", "--without-mingle", "--without-heartbeat"]


def beat_command() -> list[str]:
    return [str(BIN / "celery"), "-A", "governance", "--quiet", "beat", "--loglevel=WARNING"]


def web_command(port: int) -> list[str]:
    return [str(BIN / "gunicorn"), "governance.wsgi", "--bind", f"127.0.0.1:{port}", "--workers", "2",
            "--threads", "4", "--log-level", "warning"]


def demo_command(*, port: int, namespace: str) -> list[str]:
    # Each start is its own world: the simulated store starts empty, so its keys, locks and
    # idempotency keys get a namespace of their own rather than meeting an earlier run's.
    return [str(BIN / "python"), "manage.py", "simulate", "--no-progress", "--endpoint", f"http://127.0.0.1:{port}",
            "--namespace", namespace, "--bug", "no-cas", "--bug", "idempotency-bypass"]


class Child:
    """One process of the stack: its output goes to its log file, and lines that look like
    warnings or errors also to the screen."""

    def __init__(self, name: str, command: list[str], log_path: Path, env: dict):
        self.name = name
        self.log_path = log_path
        self.tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
        self.log = open(log_path, "a", buffering=1)
        self.process = subprocess.Popen(command, cwd=ROOT, env=env, stdout=subprocess.PIPE,
                                        stderr=subprocess.STDOUT, text=True, errors="replace",
                                        start_new_session=True)
        self.reader = threading.Thread(target=self._copy_output, name=f"{name}-output", daemon=True)
        self.reader.start()

    def _copy_output(self) -> None:
        for line in self.process.stdout:
            self.log.write(line)
            self.tail.append(line.rstrip("\n"))
            if _worth_showing(line):
                sys.stdout.write(f"{self.name:>6} | {line}")
                sys.stdout.flush()

    def stop(self) -> None:
        # The leader only: Celery and gunicorn stop their own children (a warm shutdown).
        if self.process.poll() is None:
            self.process.terminate()

    def kill(self) -> None:
        # The whole group, so nothing a child started outlives the stack.
        try:
            os.killpg(self.process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass

    def finish(self) -> int:
        code = self.process.wait()
        self.reader.join(timeout=5)
        self.log.close()
        return code

    def last_lines(self) -> str:
        return "\n".join(f"    {line}" for line in self.tail) or "    (it wrote nothing)"


def _worth_showing(line: str) -> bool:
    return any(word in line for word in ("WARNING", "ERROR", "CRITICAL", "Traceback", "Error:"))


def _exit_text(code: int) -> str:
    return f"was killed by signal {-code} ({signal.Signals(-code).name})" if code < 0 else f"exited with status {code}"


def _wait_until_answering(url: str, web: Child, seconds: float = 120.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and web.process.poll() is None:
        try:
            urllib.request.urlopen(url, timeout=2)
            return True
        except urllib.error.HTTPError:
            return True
        except OSError:
            time.sleep(0.3)
    return False


class Stack:
    def __init__(self, *, data_dir: Path, port: int, demo: str):
        self.data_dir = data_dir
        self.port = port
        self.demo = demo  # "once", "continuous" or "off"
        self.logs = data_dir / "logs"
        self.logs.mkdir(parents=True, exist_ok=True)
        # Causeway's own metrics: web, worker and beat share one sample directory, cleared of the files
        # of processes an earlier run left (governance/multiproc.py); the children inherit its variable.
        os.environ.setdefault("CAUSEWAY_DATA_DIR", str(data_dir))
        dead_files_remove(multiproc_dir())
        self.env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.children: dict[str, Child] = {}
        self.demo_child: Child | None = None
        self.demo_runs = 0
        self.stopping = threading.Event()

    def start(self, name: str, command: list[str], **env) -> Child:
        child = Child(name, command, self.logs / f"{name}.log", {**self.env, **env})
        self.children[name] = child
        return child

    def run(self) -> int:
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, lambda *_: self.stopping.set())
        # Celery's advice against root is about pickle, which this worker refuses anyway; the
        # run command often runs as root in a container, and the warning would follow every start.
        self.start("worker", worker_command(), PYTHONWARNINGS="ignore:You're running the worker with superuser")
        self.start("beat", beat_command())
        web = self.start("web", web_command(self.port))
        url = f"http://127.0.0.1:{self.port}"
        if not _wait_until_answering(f"{url}/login/", web):
            return self.shut_down(f"web did not answer at {url}")
        print(f"Causeway is ready at {url} (logs in {self.logs}; Ctrl-C stops it)", flush=True)
        self.start_demo()
        while not self.stopping.wait(0.5):
            for child in self.children.values():
                code = child.process.poll()
                if code is not None:
                    return self.shut_down(
                        f"{child.name} {_exit_text(code)}; the last lines of {child.log_path}:\n{child.last_lines()}")
            self.watch_demo()
        return self.shut_down("")

    def start_demo(self) -> None:
        if self.demo == "off" or (self.demo == "once" and self.demo_runs):
            return
        self.demo_runs += 1
        namespace = f"run-{time.strftime('%Y%m%d-%H%M%S')}-{self.demo_runs}"
        key = (self.data_dir / "demo_ingest_key").read_text().strip()
        self.demo_child = Child("demo", demo_command(port=self.port, namespace=namespace), self.logs / "demo.log",
                                {**self.env, "CAUSEWAY_INGEST_KEY": key})

    def watch_demo(self) -> None:
        if self.demo_child is None or self.demo_child.process.poll() is None:
            return
        demo, self.demo_child = self.demo_child, None
        code = demo.finish()
        if code == 0:
            if self.demo_runs == 1:
                print(f"Demo traces sent: open http://127.0.0.1:{self.port}/p/demo/traces/", flush=True)
        else:
            print(f"The demo traffic failed: simulate {_exit_text(code)}; the last lines of {demo.log_path}:\n"
                  f"{demo.last_lines()}", flush=True)
        self.start_demo()

    def shut_down(self, why: str) -> int:
        if why:
            print(f"Stopping Causeway: {why}", file=sys.stderr, flush=True)
        if self.demo_child is not None:
            # First, so the simulator does not retry against a web that is going away.
            self.demo_child.kill()
            self.demo_child.finish()
            self.demo_child = None
        everyone = list(self.children.values())
        for child in everyone:
            child.stop()
        deadline = time.monotonic() + STOP_GRACE_S
        while time.monotonic() < deadline and any(c.process.poll() is None for c in everyone):
            time.sleep(0.2)
        for child in everyone:
            child.kill()
            child.finish()
        return 1 if why else 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=int(os.environ.get("PORT", "8000")))
    parser.add_argument("--demo", choices=("once", "continuous", "off"), default=os.environ.get("CAUSEWAY_DEMO", "once"),
                        help="demo traffic: one simulator run at start (default), one after another, or none")
    options = parser.parse_args(argv)
    data_dir = Path(os.environ.get("CAUSEWAY_DATA_DIR", ROOT / "data")).resolve()
    return Stack(data_dir=data_dir, port=options.port, demo=options.demo).run()


if __name__ == "__main__":
    sys.exit(main())
