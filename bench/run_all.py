"""Every benchmark in bench/, one after another, and one table of their figures against their targets.

    .venv/bin/python bench/run_all.py [--quick] [--only NAME ...] [--timeout SECONDS]

Each bench runs as its own process and ends with one JSON line, which is read here. The benches that
need PostgreSQL create a database of their own with a unique name and drop it (bench/databases.py),
so this run touches no database it did not create. A bench whose file does not exist yet is listed
with a note and skipped. --quick runs smaller sizes (minutes instead of most of an hour): its figures
say that the benches work, not that the targets are met. The exit status is 0 when every figure
that ran met its target.
"""

from __future__ import annotations

import argparse
import json
import operator
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent


@dataclass(frozen=True)
class Target:
    figure: str  # a key of the bench's JSON line
    op: str  # ">=" or "<"
    value: float
    unit: str = ""

    def met(self, got) -> bool | None:
        if not isinstance(got, int | float):
            return None
        return {">=": operator.ge, "<": operator.lt, "<=": operator.le}[self.op](got, self.value)


@dataclass(frozen=True)
class Bench:
    name: str
    file: str
    args: tuple[str, ...]
    quick_args: tuple[str, ...]
    targets: tuple[Target, ...]


BENCHES = (
    Bench("ingest", "ingest.py", ("--start-server", "--concurrency", "8", "--duration", "10"),
          ("--start-server", "--concurrency", "8", "--duration", "5"),
          (Target("spans_per_s", ">=", 20_000, "spans/s"), Target("lost", "<=", 0, "spans"))),
    Bench("analysis", "analysis.py", (), ("--sizes", "10000,100000"),
          (Target("spans_per_s_1m", ">=", 100_000, "spans/s"), Target("exponent", "<=", 1.2),
           Target("peak_mb_1m", "<", 2048, "MB"))),
    Bench("policies", "policies.py", (), ("--spans", "100000"),
          (Target("spans_per_s", ">=", 200_000, "spans/s"),)),
    Bench("slo", "slo.py", (), ("--spans", "1000000", "--ticks", "3"),
          (Target("tick_s", "<", 2, "s"),)),
    Bench("pipeline", "pipeline.py", (), (),
          (Target("sustained_spans_per_s", ">=", 10_000, "spans/s"), Target("lag_p99_s", "<", 15, "s"))),
    Bench("ofrep", "ofrep.py", (), (),
          (Target("evals_per_s", ">=", 2_000, "evals/s"), Target("p99_ms", "<", 50, "ms"))),
    Bench("overview", "overview.py", (), ("--spans", "1000000", "--requests", "10"),
          (Target("overview_ms", "<", 300, "ms"), Target("trace_search_ms", "<", 300, "ms"))),
    Bench("finding page", "finding_page.py", (), (),
          (Target("max_ms", "<", 300, "ms"),)),
)


@dataclass
class Outcome:
    bench: Bench
    figures: dict | None
    seconds: float
    note: str = ""


def last_json_line(text: str) -> dict | None:
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except ValueError:
                return None
    return None


def run(bench: Bench, *, quick: bool, timeout: float) -> Outcome:
    path = BENCH / bench.file
    if not path.exists():
        return Outcome(bench, None, 0.0, f"skipped: bench/{bench.file} does not exist yet")
    command = [sys.executable, str(path), *(bench.quick_args if quick else bench.args)]
    print(f"--- {bench.name}: {' '.join(command[1:])}", flush=True)
    began = time.monotonic()
    try:
        done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Outcome(bench, None, time.monotonic() - began, f"did not finish within {timeout:.0f} s")
    seconds = time.monotonic() - began
    sys.stdout.write(done.stdout[-2000:])
    figures = last_json_line(done.stdout)
    if figures is None:
        tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
        return Outcome(bench, None, seconds, f"failed (exit {done.returncode}): {' | '.join(tail)}")
    note = "" if done.returncode == 0 else f"exit status {done.returncode}"
    return Outcome(bench, figures, seconds, note)


def table(outcomes: list[Outcome], *, quick: bool) -> tuple[str, bool]:
    rows = [("bench", "figure", "measured", "target", "met")]
    all_met = True
    for outcome in outcomes:
        if outcome.figures is None:
            rows.append((outcome.bench.name, "", "", "", outcome.note))
            if not outcome.note.startswith("skipped"):
                all_met = False
            continue
        for target in outcome.bench.targets:
            got = outcome.figures.get(target.figure)
            met = target.met(got)
            all_met = all_met and met is True
            rows.append((outcome.bench.name, target.figure, "—" if got is None else f"{got:,}" if isinstance(got, int)
                         else f"{got:,.3g}" if isinstance(got, float) else str(got),
                         f"{target.op} {target.value:,g} {target.unit}".strip(),
                         {True: "yes", False: "NO", None: "no figure"}[met]))
    widths = [max(len(str(r[i])) for r in rows) for i in range(5)]
    lines = ["  ".join(str(cell).ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip() for row in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    if quick:
        lines.append("(quick mode: smaller sizes than the targets are set for)")
    return "\n".join(lines), all_met


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="smaller sizes: check the benches run, in minutes")
    parser.add_argument("--only", nargs="+", metavar="NAME", choices=[b.name for b in BENCHES],
                        help="run only these benches")
    parser.add_argument("--timeout", type=float, default=3600, help="seconds allowed to each bench (default 3600)")
    args = parser.parse_args(argv)
    chosen = [b for b in BENCHES if not args.only or b.name in args.only]
    outcomes = [run(b, quick=args.quick, timeout=args.timeout) for b in chosen]
    text, all_met = table(outcomes, quick=args.quick)
    print()
    print(text)
    print(json.dumps({o.bench.name: o.figures for o in outcomes}))
    return 0 if all_met else 1


if __name__ == "__main__":
    sys.exit(main())
