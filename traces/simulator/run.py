"""Run a simulation: start the lock service, the tool and the agent processes.

`add_arguments(parser)` and `run_from_options(options, stdout, stderr)` are
shared by `python -m traces.simulator` and the `simulate` management command.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import queue
import shutil
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field, replace

from tqdm import tqdm

from .agents import agent_process_main
from .config import ALL_REGRESSIONS, BUGS, LEDGER_KEY, REGRESSIONS, SimulationConfig, account_key, agent_name
from .flags import FlagEvaluationError, flag_versions
from .locks import LockManager
from .store import VersionedStore
from .telemetry import ExportConfig
from .tool import ToolConfig, tool_process_main

START_TIMEOUT_S = 60.0
INGEST_KEY_ENV = "CAUSEWAY_INGEST_KEY"


class SimulationError(Exception):
    pass


@dataclass
class SimulationSummary:
    run_id: str
    agents: int
    processes: int
    threads: int
    iterations: int
    keys: int
    seed: int
    destination: str
    bugs: tuple[str, ...]
    injections: dict[str, int]  # bug -> how many times it actually happened
    spans_exported: int
    spans_failed: int
    spans_ended: int
    canary_version: str = ""
    canary_agents: tuple[str, ...] = ()
    regression: str = ""
    flag_key: str = ""
    versions: dict[str, str] = field(default_factory=dict)  # agent name -> the version it ran
    counters: dict[str, int] = field(default_factory=dict)
    output_files: tuple[str, ...] = ()
    duration_s: float = 0.0

    @property
    def ok(self) -> bool:
        return self.spans_failed == 0 and self.spans_exported == self.spans_ended

    def format(self) -> str:
        lines = [
            (
                f"Simulated {self.agents} agents in {self.processes} processes x {self.threads} threads, "
                f"{self.iterations} steps each, {self.keys} keys, seed {self.seed} "
                f"(run {self.run_id}, {self.duration_s:.1f} s)."
            ),
            f"Exported {self.spans_exported} of {self.spans_ended} spans to {self.destination}"
            + (f"; {self.spans_failed} failed to export." if self.spans_failed else "."),
        ]
        if self.bugs:
            lines.append("Bugs injected:")
            for bug in self.bugs:
                lines.append(f"  {bug}: {self.injections.get(bug, 0)} time(s) ({BUGS[bug]})")
        else:
            lines.append("Bugs injected: none (the traces should have no concurrency findings).")
        if self.flag_key:
            shares = Counter(self.versions.values())
            lines.append(f"Flag {self.flag_key} (OFREP): " + ", ".join(
                f"{version} for {n} agent(s)" for version, n in sorted(shares.items())) + ".")
        if self.canary_agents:
            what = f"with worse {self.regression}" if self.regression else "without a regression"
            lines.append(
                f"Canary: {', '.join(self.canary_agents)} report service.version={self.canary_version} {what}."
            )
        if self.counters:
            lines.append("Counters: " + ", ".join(f"{k}={v}" for k, v in sorted(self.counters.items())))
        return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    add = parser.add_argument
    add("--agents", type=int, default=4, help="number of agents (default 4)")
    add("--processes", type=int, default=0, help="agent processes (default: one per agent)")
    add("--threads", type=int, default=2, help="worker threads per agent (default 2)")
    add("--iterations", type=int, default=20, help="steps per worker thread (default 20)")
    add("--keys", type=int, default=4, help="number of account keys (default 4)")
    add("--seed", type=int, default=1, help="random seed (default 1)")
    add(
        "--bug",
        action="append",
        choices=sorted(BUGS),
        default=None,
        help="inject a bug; repeatable",
    )
    add("--canary-version", default="", help="service.version reported by the canary share of agents")
    add("--canary-share", type=float, default=0.3,
        help="share of agents running the canary without --flag (default 0.3)")
    add("--flag", default="", metavar="KEY",
        help="each agent runs the version Causeway's OFREP endpoint gives it for this flag (its rollout's); "
             "agents given the --canary-version are the canary")
    add("--regression", nargs="?", const=ALL_REGRESSIONS, choices=(*REGRESSIONS, ALL_REGRESSIONS), default=None,
        help="what the canary does worse: " + "; ".join(f"{k}: {v}" for k, v in REGRESSIONS.items())
             + f"; alone: {ALL_REGRESSIONS} of them")
    add("--endpoint", default="http://127.0.0.1:8000", help="Causeway base URL for OTLP/HTTP")
    add("--key", default=None, help=f"ingest key, sent as a Bearer token (default: ${INGEST_KEY_ENV})")
    add("--protocol", choices=("http", "grpc"), default="http", help="OTLP protocol (default http)")
    add("--grpc-endpoint", default="127.0.0.1:4317", help="OTLP/gRPC host:port (insecure)")
    add("--output", default=None, help="write DIR/<agent>.binpb files instead of exporting")
    add("--db", default=None, help="keep the store's SQLite file at this path (default: a temp file)")
    add("--think-ms", type=float, default=2.0, help="max think time between read and write (default 2)")
    add("--skew-ms", type=int, default=2000, help="clock offset for --bug clock-skew (default 2000)")
    add("--service-name", default="causeway-sim-agent", help="service.name of the agents")
    add("--service-version", "--baseline-version", dest="service_version", default="1.0.0",
        help="service.version of the baseline agents (with --flag: the default when no rollout decides)")
    add("--run-id", default=None, help="prefix of service.instance.id (default: random)")
    add("--namespace", default="", help="keep this run's state keys, locks and idempotency keys apart from "
        "other runs' (e.g. ledger/NS/total); the run command's demo gives each start its own")
    add("--no-progress", action="store_true", help="no progress bar")


def config_from_options(options: dict) -> SimulationConfig:
    """Build a config from parsed options (argparse vars or a Django options dict)."""

    def opt(name, default=None):
        value = options.get(name)
        return default if value is None else value

    output = opt("output", "")
    protocol = opt("protocol", "http")
    export = ExportConfig(
        mode="file" if output else protocol,
        output_dir=os.path.abspath(output) if output else "",
        endpoint=opt("endpoint", "http://127.0.0.1:8000"),
        grpc_endpoint=opt("grpc_endpoint", "127.0.0.1:4317"),
        key=opt("key", os.environ.get(INGEST_KEY_ENV, "")),
    )
    return SimulationConfig(
        agents=opt("agents", 4),
        processes=opt("processes", 0),
        threads=opt("threads", 2),
        iterations=opt("iterations", 20),
        keys=opt("keys", 4),
        seed=opt("seed", 1),
        bugs=tuple(dict.fromkeys(opt("bug", ()))),
        canary_version=opt("canary_version", ""),
        canary_share=opt("canary_share", 0.3),
        regression=opt("regression", ""),
        flag_key=opt("flag", ""),
        ofrep_url=opt("endpoint", "http://127.0.0.1:8000"),
        think_ms=opt("think_ms", 2.0),
        skew_ms=opt("skew_ms", 2000),
        service_name=opt("service_name", "causeway-sim-agent"),
        service_version=opt("service_version", "1.0.0"),
        run_id=opt("run_id", ""),
        namespace=opt("namespace", ""),
        db_path=os.path.abspath(opt("db")) if opt("db") else "",
        export=export,
    )


def run_from_options(options: dict, stdout, stderr) -> SimulationSummary:
    """Run with parsed options; progress on `stderr`, the summary on `stdout`."""
    config = config_from_options(options)
    # A Django OutputWrapper appends newlines; tqdm needs the raw stream.
    progress = None if options.get("no_progress") else getattr(stderr, "_out", stderr)
    summary = simulate(config, progress=progress)
    stdout.write(summary.format() + "\n")
    return summary


def simulate(config: SimulationConfig, *, progress=None) -> SimulationSummary:
    """Run one simulation to completion; every provider is flushed and shut down."""
    started = time.monotonic()
    run_id = config.run_id or uuid.uuid4().hex[:8]
    tmpdir = None
    db_path = config.db_path
    if not db_path:
        tmpdir = tempfile.mkdtemp(prefix="causeway-sim-")
        db_path = os.path.join(tmpdir, "store.sqlite3")
    elif os.path.exists(db_path):
        raise SimulationError(f"{db_path} already exists; the store must start empty")
    config = replace(config, run_id=run_id, db_path=db_path)
    if config.flag_key:
        try:
            config = replace(config, versions=flag_versions(config))
        except FlagEvaluationError as exc:
            raise SimulationError(str(exc)) from None
    if config.export.mode == "file":
        os.makedirs(config.export.output_dir, exist_ok=True)
    store = VersionedStore(db_path)
    store.initialise([config.scoped(account_key(n)) for n in range(config.keys)] + [config.scoped(LEDGER_KEY)])
    store.close()

    ctx = multiprocessing.get_context("spawn")
    manager = LockManager(ctx=ctx)
    manager.start()
    procs: list = []
    tool = None
    stop = ctx.Event()
    try:
        lock_service = manager.LockService(double_grant=config.has("double-grant"))
        result_q, progress_q, ready_q = ctx.Queue(), ctx.Queue(), ctx.Queue()
        tool_config = ToolConfig(run_id=run_id, db_path=db_path, export=config.export)
        tool = ctx.Process(
            target=tool_process_main, args=(tool_config, ready_q, stop, result_q), name="causeway-sim-tool"
        )
        tool.start()
        try:
            port = ready_q.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise SimulationError("the tool process did not start") from None
        tool_url = f"http://127.0.0.1:{port}"
        inboxes = [ctx.Queue() for _ in range(config.agents)]
        for p in range(config.process_count):
            proc = ctx.Process(
                target=agent_process_main,
                args=(config, p, tool_url, lock_service, inboxes, progress_q, result_q),
                name=f"causeway-sim-agents-{p}",
            )
            proc.start()
            procs.append(proc)

        results = _collect(config, procs, progress_q, result_q, progress)
        for proc in procs:
            proc.join()
        stop.set()
        try:
            tool_result = result_q.get(timeout=START_TIMEOUT_S)
        except queue.Empty:
            raise SimulationError("the tool process did not report") from None
        tool.join()
        lock_stats = lock_service.stats()
    finally:
        stop.set()
        for proc in [*procs, tool]:
            if proc is not None and proc.is_alive():
                proc.join(timeout=5)
                if proc.is_alive():
                    proc.terminate()
        manager.shutdown()
        if tmpdir:
            shutil.rmtree(tmpdir, ignore_errors=True)

    errors = [e for r in results for e in r["errors"]]
    if errors:
        raise SimulationError("agent errors:\n" + "\n".join(errors))

    everything = [*results, tool_result]
    injections: Counter = Counter()
    counters: Counter = Counter()
    for r in results:
        injections.update(r["injections"])
        counters.update(r["counters"])
    counters["tool_calls_served"] = tool_result["tool_calls"]
    counters["lock_grants"] = lock_stats["grants"]
    counters["lock_contended"] = lock_stats["contended"]
    if config.has("double-grant"):
        injections["double-grant"] = lock_stats["double_grants"]
    output_files = ()
    if config.export.mode == "file":
        names = [r["name"] for r in everything]
        output_files = tuple(os.path.join(config.export.output_dir, f"{n}.binpb") for n in names)
    return SimulationSummary(
        run_id=run_id,
        agents=config.agents,
        processes=config.process_count,
        threads=config.threads,
        iterations=config.iterations,
        keys=config.keys,
        seed=config.seed,
        destination=config.export.describe(),
        bugs=config.bugs,
        injections={bug: injections.get(bug, 0) for bug in config.bugs},
        spans_exported=sum(r["spans_exported"] for r in everything),
        spans_failed=sum(r["spans_failed"] for r in everything),
        spans_ended=sum(r["spans_ended"] for r in everything),
        canary_version=config.canary_version,
        canary_agents=tuple(agent_name(i) for i in config.canary_indices),
        regression=config.regression,
        flag_key=config.flag_key,
        versions={agent_name(i): config.version_of(i) for i in range(config.agents)},
        counters=dict(counters),
        output_files=output_files,
        duration_s=time.monotonic() - started,
    )


def _collect(config: SimulationConfig, procs, progress_q, result_q, progress) -> list[dict]:
    """Drive the progress bar and gather one result per agent."""
    results: list[dict] = []
    bar = tqdm(
        total=config.agents * config.threads * config.iterations,
        file=progress,
        disable=progress is None,
        unit="step",
        desc="simulate",
        leave=False,
    )
    try:
        while len(results) < config.agents:
            _drain(progress_q, bar)
            try:
                results.append(result_q.get(timeout=0.1))
                continue
            except queue.Empty:
                pass
            dead = [p for p in procs if p.exitcode not in (None, 0)]
            if dead:
                codes = ", ".join(f"{p.name} exited {p.exitcode}" for p in dead)
                raise SimulationError(f"agent process failed: {codes}")
            if all(p.exitcode == 0 for p in procs) and result_q.empty():
                time.sleep(0.5)
                if result_q.empty():
                    raise SimulationError(f"only {len(results)} of {config.agents} agents reported")
        _drain(progress_q, bar)
    finally:
        bar.close()
    return results


def _drain(progress_q, bar) -> None:
    while True:
        try:
            bar.update(progress_q.get_nowait())
        except queue.Empty:
            return
