"""Soak of the run command: `scripts/run.sh` on its embedded defaults, twice in a row on the same data.

    .venv/bin/python bench/soak.py [--minutes 10] [--starts 2]

Each start runs the real run command (SQLite, the embedded broker, worker, beat, gunicorn)
on a data folder of its own (a temporary one, kept between the starts) and a free port, with
the demo sending continuously (CAUSEWAY_DEMO=continuous: one simulator run after another,
each in its own key namespace). Every 5 s it checks that the stack is up (the web answers and
run.sh has not exited). After --minutes it sends Ctrl-C (SIGINT), and the run command must
stop cleanly. Then it counts the findings and demo runs each start added: a second start must
add about as many findings per demo run as the first (no bugs found between the two starts'
agents). The last line is JSON:
{"minutes_up": [...], "stopped_by_itself": n, "demo_runs": [...], "demo_failures": n,
 "findings_per_run": [...], "spans": n}
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.gunicorn import free_port  # noqa: E402

CHECK_EVERY_S = 5.0


def answering(url: str) -> bool:
    try:
        urllib.request.urlopen(url, timeout=5)
        return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def counts(data_dir: Path) -> tuple[int, int]:
    with sqlite3.connect(data_dir / "causeway.sqlite3", timeout=30) as db:
        findings = db.execute("SELECT count(*) FROM traces_finding").fetchone()[0]
        spans = db.execute("SELECT count(*) FROM traces_span").fetchone()[0]
    return findings, spans


def one_start(data_dir: Path, minutes: float) -> dict:
    port = free_port()
    env = {**os.environ, "CAUSEWAY_DATA_DIR": str(data_dir), "PORT": str(port), "CAUSEWAY_DEMO": "continuous"}
    env.pop("DATABASE_URL", None)
    env.pop("CELERY_BROKER_URL", None)
    log = open(data_dir / f"run-{time.time_ns()}.log", "w")
    run = subprocess.Popen([str(ROOT / "scripts" / "run.sh")], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}/login/"
    started = time.monotonic()
    while not answering(url):
        if run.poll() is not None or time.monotonic() - started > 300:
            raise SystemExit(f"the run command did not come up; see {log.name}")
        time.sleep(1)
    up_since = time.monotonic()
    stopped_by_itself = False
    while time.monotonic() - up_since < minutes * 60:
        time.sleep(CHECK_EVERY_S)
        if run.poll() is not None or not answering(url):
            stopped_by_itself = True
            break
    minutes_up = (time.monotonic() - up_since) / 60
    run.send_signal(signal.SIGINT)
    code = run.wait(timeout=120)
    log.close()
    output = Path(log.name).read_text()
    demo_log = data_dir / "logs" / "demo.log"  # every start appends; each finished run prints one summary
    summaries = demo_log.read_text().count("Simulated ") if demo_log.exists() else 0
    return {"minutes_up": round(minutes_up, 2), "stopped_by_itself": stopped_by_itself, "exit_code": code,
            "demo_summaries_total": summaries, "demo_failures": output.count("The demo traffic failed"),
            "output": output}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=10.0, help="how long each start stays up (default 10)")
    parser.add_argument("--starts", type=int, default=2, help="starts in a row on the same data (default 2)")
    args = parser.parse_args()
    data_dir = Path(tempfile.mkdtemp(prefix="causeway-soak-"))
    print(f"data folder: {data_dir}", flush=True)
    results, findings_before, runs_before = [], 0, 0
    for start in range(1, args.starts + 1):
        result = one_start(data_dir, args.minutes)
        findings, spans = counts(data_dir)
        runs = result["demo_summaries_total"] - runs_before
        result.update(findings_added=findings - findings_before, demo_runs=runs, spans=spans)
        findings_before, runs_before = findings, result["demo_summaries_total"]
        results.append(result)
        print(f"start {start}: up {result['minutes_up']} min, "
              f"{'STOPPED BY ITSELF' if result['stopped_by_itself'] else 'stayed up'}, run.sh exited "
              f"{result['exit_code']} on Ctrl-C; {runs} demo runs ({result['demo_failures']} failed), "
              f"{result['findings_added']} findings added, {spans} spans stored in all", flush=True)
        if result["stopped_by_itself"]:
            print(result["output"][-3000:], flush=True)
    print(json.dumps({
        "minutes_up": [r["minutes_up"] for r in results],
        "stopped_by_itself": sum(r["stopped_by_itself"] for r in results),
        "demo_runs": [r["demo_runs"] for r in results],
        "demo_failures": sum(r["demo_failures"] for r in results),
        "findings_per_run": [round(r["findings_added"] / r["demo_runs"], 1) if r["demo_runs"] else None
                             for r in results],
        "spans": results[-1]["spans"],
    }))
    return 1 if any(r["stopped_by_itself"] or r["exit_code"] != 0 for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
