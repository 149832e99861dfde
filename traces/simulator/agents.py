"""The simulated agents: one process hosts one or more agents, each with threads.

Every agent has its own TracerProvider and Resource. One step of an agent
thread (the root span `agent.step`) does, in order:

1. `account.update`: optimistic read-modify-write of an `account/<n>` key,
   compare-and-set with retries on conflict (`no-cas`: blind write that
   still reports the base version it read).
2. `ledger.append`: read and blind write of `ledger/total` inside a
   critical section of lock `ledger` with its fencing token (`no-lock`: no
   lock at all).
3. `POST /quote`: synchronous RPC (CLIENT span, W3C traceparent) to the tool
   process, whose SERVER span reads an account key.
4. `order.confirm`: the idempotent action `order/<step>/confirm`, which every
   agent thread attempts once: one executes, the others are deduplicated
   (`idempotency-bypass`: all execute).
5. hand-off: a blind write of a fresh `handoff/...` key, then a PRODUCER span
   that puts the message with its trace context on the next agent's inbox.
   That agent's consumer thread processes it in a CONSUMER span linked to the
   producer span and blind-writes the same key: only the link orders the two.
6. `store.read` of the account it updated (`stale-cache`: `cache.read` from a
   process cache filled on reads and never invalidated on writes).

Why a correct run has no findings under spec v1: CAS writes of a key form a
chain through reads-from (each one's base is the previous one's version);
ledger writes are inside critical sections of one lock, ordered by tokens;
the two hand-off writes are ordered by program order, the link and
parent/child; exactly one action executes per key; every read goes to the
linearizable store, so no write that happened-before it is newer than what it
saw.
"""

from __future__ import annotations

import json
import os
import queue
import random
import threading
import time
import traceback
import urllib.error
import urllib.request
from collections import Counter

from opentelemetry import trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from .config import LEDGER_KEY, LEDGER_LOCK, SimulationConfig, account_key, agent_name
from .store import VersionedStore
from .telemetry import Clock, Spans, Telemetry
from .tool import TOOL_NAME

PROPAGATOR = TraceContextTextMapPropagator()
MAX_CAS_ATTEMPTS = 100
MESSAGE_TIMEOUT_S = 60.0
CANARY_EXTRA_LATENCY_S = (0.020, 0.040)
CANARY_ERROR_RATE = 0.5


def inbox_name(index: int) -> str:
    return f"{agent_name(index)}.inbox"


class ReadCache:
    """A process-wide read-through cache, used only by the `stale-cache` bug."""

    def __init__(self):
        self._lock = threading.Lock()
        self._items: dict[str, tuple[str | None, int]] = {}

    def put(self, key: str, value: str | None, version: int) -> None:
        with self._lock:
            self._items[key] = (value, version)

    def get(self, key: str) -> tuple[str | None, int] | None:
        with self._lock:
            return self._items.get(key)


class Agent:
    def __init__(
        self,
        cfg: SimulationConfig,
        index: int,
        *,
        instance_id: str,
        clock: Clock,
        store: VersionedStore,
        locks,
        tool_url: str,
        inboxes: list,
        progress_q,
        cache: ReadCache,
    ):
        self.cfg = cfg
        self.index = index
        self.name = agent_name(index)
        self.store = store
        self.locks = locks
        self.tool_url = tool_url
        self.inboxes = inboxes
        self.progress_q = progress_q
        self.cache = cache
        self.canary = index in cfg.canary_indices
        self.telemetry = Telemetry(
            cfg.export,
            self.name,
            {
                "service.name": cfg.service_name,
                "service.version": cfg.version_of(index),
                "service.instance.id": instance_id,
                "gen_ai.agent.id": self.name,
                "gen_ai.agent.name": self.name,
                "process.pid": os.getpid(),
            },
        )
        self.spans = Spans(self.telemetry.tracer, clock, self.telemetry.processor)
        self.counters: Counter = Counter()
        self.injections: Counter = Counter()
        self.errors: list[str] = []
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- bookkeeping -------------------------------------------------------

    def count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self.counters[name] += n

    def inject(self, bug: str, n: int = 1) -> None:
        with self._lock:
            self.injections[bug] += n

    def think(self, rng: random.Random) -> None:
        if self.cfg.think_ms > 0:
            time.sleep(rng.uniform(0, self.cfg.think_ms) / 1000.0)

    @property
    def written(self) -> dict[str, int]:
        """The newest version this thread itself wrote, per key."""
        if not hasattr(self._local, "written"):
            self._local.written = {}
        return self._local.written

    # -- accesses: one leaf span each ----------------------------------------

    def read(self, key: str) -> tuple[str | None, int]:
        attrs = {"state.key": key, "state.op": "read", "db.system.name": "sqlite", "db.operation.name": "SELECT"}
        with self.spans.span("store.read", attributes=attrs) as span:
            value, version = self.store.read(key)
            span.set_attribute("state.version", version)
        if self.cfg.has("stale-cache"):
            self.cache.put(key, value, version)
        self.count("reads")
        return value, version

    def write_cas(self, key: str, value: str, base_version: int) -> int | None:
        attrs = {
            "state.key": key,
            "state.op": "write",
            "state.base_version": base_version,
            "db.system.name": "sqlite",
            "db.operation.name": "UPDATE",
        }
        with self.spans.span("store.write", attributes=attrs) as span:
            version = self.store.write_cas(key, value, base_version=base_version)
            if version is None:
                span.set_attribute("state.conflict", True)
            else:
                span.set_attribute("state.version", version)
        if version is None:
            self.count("cas_conflicts")
        else:
            self.count("writes")
            self.written[key] = version
        return version

    def write_blind(self, key: str, value: str, *, base_version: int | None = None):
        """A write without compare-and-set; `base_version` is reported when known."""
        attrs = {
            "state.key": key,
            "state.op": "write",
            "db.system.name": "sqlite",
            "db.operation.name": "UPSERT",
        }
        if base_version is not None:
            attrs["state.base_version"] = base_version
        with self.spans.span("store.write", attributes=attrs) as span:
            result = self.store.write_blind(key, value)
            span.set_attribute("state.version", result.version)
        self.count("writes")
        self.written[key] = result.version
        return result

    # -- the step --------------------------------------------------------------

    def step(self, thread_index: int, iteration: int, rng: random.Random) -> None:
        cfg = self.cfg
        drop = cfg.has("dropped-parent") and self.index == 0 and thread_index == 0 and iteration == cfg.iterations // 2
        attrs = {"gen_ai.operation.name": "invoke_agent", "sim.iteration": iteration}
        with self.spans.span("agent.step", attributes=attrs, drop=drop):
            if drop:
                self.inject("dropped-parent")
            key = cfg.scoped(account_key(rng.randrange(cfg.keys)))
            self.update_account(key, rng)
            self.append_ledger(rng)
            self.call_tool(cfg.scoped(account_key(rng.randrange(cfg.keys))), rng)
            self.confirm_order(iteration)
            self.hand_off(thread_index, iteration)
            self.report(key)

    def regresses(self, kind: str) -> bool:
        return self.canary and self.cfg.regresses(kind)

    def update_account(self, key: str, rng: random.Random) -> None:
        amount = rng.randint(1, 100)
        with self.spans.span("account.update") as span:
            for attempt in range(MAX_CAS_ATTEMPTS):
                value, version = self.read(key)
                self.think(rng)
                new_value = str(int(value or 0) + amount)
                if attempt == 0 and self.regresses("conflicts"):
                    # The regressed canary writes on the version before the one it read: it always
                    # conflicts, and retries with a fresh read as a correct agent does.
                    self.write_cas(key, new_value, version - 1)
                    self.count("cas_retries")
                    continue
                if self.cfg.has("no-cas"):
                    result = self.write_blind(key, new_value, base_version=version)
                    if result.overwritten != version:
                        self.inject("no-cas")  # a write based on `version` overwrote a newer one
                    return
                if self.write_cas(key, new_value, version) is not None:
                    return
                self.count("cas_retries")
            span.set_status(Status(StatusCode.ERROR, f"gave up after {MAX_CAS_ATTEMPTS} conflicts"))

    def append_ledger(self, rng: random.Random) -> None:
        if self.cfg.has("no-lock"):
            with self.spans.span("ledger.append"):
                self._ledger_body(rng)
            self.count("unlocked_sections")
            return
        owner = f"{self.name}/{threading.get_native_id()}"
        lock = self.cfg.scoped(LEDGER_LOCK)
        token = self.locks.acquire(lock, owner)
        try:
            attrs = {"lock.name": lock, "lock.fencing_token": token}
            with self.spans.span("ledger.append", attributes=attrs):
                self._ledger_body(rng)
        finally:
            self.locks.release(lock, owner)
        self.count("lock_sections")

    def _ledger_body(self, rng: random.Random) -> None:
        ledger = self.cfg.scoped(LEDGER_KEY)
        value, version = self.read(ledger)
        self.think(rng)
        result = self.write_blind(ledger, str(int(value or 0) + 1))
        if result.overwritten != version and self.cfg.has("no-lock"):
            self.inject("no-lock")  # another writer got in between our read and write

    def call_tool(self, key: str, rng: random.Random) -> None:
        fail = self.regresses("errors") and rng.random() < CANARY_ERROR_RATE
        body = json.dumps({} if fail else {"key": key}).encode()
        url = f"{self.tool_url}/{TOOL_NAME}"
        host, _, port = self.tool_url.split("//", 1)[1].partition(":")
        attrs = {
            "http.request.method": "POST",
            "url.full": url,
            "server.address": host,
            "server.port": int(port),
            "gen_ai.operation.name": "execute_tool",
            "gen_ai.tool.name": TOOL_NAME,
        }
        with self.spans.span(f"POST /{TOOL_NAME}", kind=SpanKind.CLIENT, attributes=attrs) as span:
            if self.regresses("latency"):
                time.sleep(rng.uniform(*CANARY_EXTRA_LATENCY_S))
            headers = {"Content-Type": "application/json"}
            PROPAGATOR.inject(headers)
            request = urllib.request.Request(url, data=body, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=30) as response:
                    status = response.status
                    response.read()
            except urllib.error.HTTPError as exc:
                status = exc.code
            span.set_attribute("http.response.status_code", status)
            if status >= 400:
                span.set_attribute("error.type", str(status))
                span.set_status(Status(StatusCode.ERROR, f"tool returned HTTP {status}"))
        self.count("tool_calls")
        if status >= 400:
            self.count("tool_errors")

    def confirm_order(self, iteration: int) -> None:
        key = self.cfg.scoped(f"order/{iteration}/confirm")
        bypass = self.cfg.has("idempotency-bypass") or self.regresses("duplicates")
        with self.spans.span("order.confirm", attributes={"idempotency.key": key}) as span:
            result = self.store.perform_action(key, agent=self.name, dedup=not bypass)
            span.set_attribute("idempotency.outcome", "executed" if result.executed else "deduplicated")
        self.count("actions_executed" if result.executed else "actions_deduplicated")
        if result.duplicate:
            self.inject("idempotency-bypass")
            if self.regresses("duplicates"):
                self.count("regression_duplicates")

    def hand_off(self, thread_index: int, iteration: int) -> None:
        key = self.cfg.scoped(f"handoff/{self.name}/{thread_index}/{iteration}")
        self.write_blind(key, "sent")
        target = (self.index + 1) % self.cfg.agents
        destination = inbox_name(target)
        message_id = f"{self.name}-{thread_index}-{iteration}"
        attrs = {
            "messaging.system": "multiprocessing",
            "messaging.destination.name": destination,
            "messaging.operation.type": "send",
            "messaging.operation.name": "send",
            "messaging.message.id": message_id,
        }
        with self.spans.span(f"send {destination}", kind=SpanKind.PRODUCER, attributes=attrs):
            carrier: dict[str, str] = {}
            PROPAGATOR.inject(carrier)
            self.inboxes[target].put({"id": message_id, "key": key, "carrier": carrier})
        self.count("messages_sent")

    def report(self, key: str) -> None:
        cached = self.cache.get(key) if self.cfg.has("stale-cache") else None
        if cached is None:
            self.read(key)
            return
        _value, version = cached
        attrs = {"state.key": key, "state.op": "read", "state.version": version, "cache.hit": True}
        with self.spans.span("cache.read", attributes=attrs):
            pass
        self.count("reads")
        if version < self.written.get(key, 0):
            self.inject("stale-cache")  # this thread itself wrote a newer version before

    # -- threads -------------------------------------------------------------

    def run_worker(self, thread_index: int) -> None:
        rng = random.Random(f"{self.cfg.seed}/{self.index}/{thread_index}")
        try:
            for iteration in range(self.cfg.iterations):
                self.step(thread_index, iteration, rng)
                self.progress_q.put(1)
        except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
            self.errors.append(traceback.format_exc())

    def run_consumer(self) -> None:
        """Process every message the previous agent sends to this agent's inbox."""
        destination = inbox_name(self.index)
        expected = self.cfg.threads * self.cfg.iterations
        try:
            for _ in range(expected):
                message = self.inboxes[self.index].get(timeout=MESSAGE_TIMEOUT_S)
                producer = trace.get_current_span(PROPAGATOR.extract(message["carrier"])).get_span_context()
                attrs = {
                    "messaging.system": "multiprocessing",
                    "messaging.destination.name": destination,
                    "messaging.operation.type": "process",
                    "messaging.operation.name": "process",
                    "messaging.message.id": message["id"],
                }
                with self.spans.span(
                    f"process {destination}", kind=SpanKind.CONSUMER, attributes=attrs, links=[Link(producer)]
                ):
                    self.write_blind(message["key"], "processed")
                self.count("messages_consumed")
        except queue.Empty:
            self.errors.append(f"{self.name}: inbox went quiet after {self.counters['messages_consumed']} messages")
        except Exception:  # noqa: BLE001 - reported to the parent, which fails the run
            self.errors.append(traceback.format_exc())


def agent_process_main(
    cfg: SimulationConfig,
    process_index: int,
    tool_url: str,
    locks,
    inboxes: list,
    progress_q,
    result_q,
) -> None:
    """Entry point of one agent process (spawned): run its agents, flush, report."""
    indices = cfg.agents_of_process(process_index)
    skewed = cfg.has("clock-skew") and 0 in indices
    clock = Clock(cfg.skew_ms * 1_000_000 if skewed else 0)
    instance_id = f"{cfg.run_id}-p{process_index}"
    store = VersionedStore(cfg.db_path)
    cache = ReadCache()
    agents = [
        Agent(
            cfg,
            i,
            instance_id=instance_id,
            clock=clock,
            store=store,
            locks=locks,
            tool_url=tool_url,
            inboxes=inboxes,
            progress_q=progress_q,
            cache=cache,
        )
        for i in indices
    ]
    threads = []
    for agent in agents:
        for t in range(cfg.threads):
            threads.append(threading.Thread(target=agent.run_worker, args=(t,), name=f"{agent.name}-t{t}"))
        threads.append(threading.Thread(target=agent.run_consumer, name=f"{agent.name}-consumer"))
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for agent in agents:
        stats = agent.telemetry.shutdown()
        injections = Counter(agent.injections)
        if skewed:
            injections["clock-skew"] += agent.spans.count
        result_q.put(
            {
                "role": "agent",
                "name": agent.name,
                "version": cfg.version_of(agent.index),
                "canary": agent.canary,
                "counters": dict(agent.counters),
                "injections": dict(injections),
                "errors": list(agent.errors),
                **stats,
            }
        )
