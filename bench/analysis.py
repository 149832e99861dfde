"""Benchmark of the analysis core at 10k, 100k and 1M spans.

Run: .venv/bin/python bench/analysis.py [--sizes 10000,100000,1000000]

Each size runs in a fresh subprocess (so its peak RSS is its own): generate a realistic
multi-agent world as SpanRecords, time `analyse`, report spans/s and ru_maxrss. Times
are the CPU time of the analysing process (time.process_time), since the machine is
shared with other work; wall time is printed alongside. The compiled kernels are loaded
by a small analysis first, whose time is printed on its own (a fresh install compiles
them there once, in about 5 s). Peak RSS includes the generated
input, which is printed on its own too. The last
line is JSON: {"spans_per_s_1m", "exponent", "peak_mb_1m", "timeline_10k_ms"}.

The world: agent processes with threads run turns (one trace each): an LLM call, tool
calls served by tool processes (async servers, no thread ids) that read and write shared
keys with compare-and-set, retrying on conflict; some turns start from a message (a link
to an earlier turn's producer span), some send an idempotent e-mail, some keys are
updated under a fenced lock. About 30% of spans are state accesses over a few thousand
keys (Zipf-like popularity, so hot keys see conflicts). A few bugs are planted: blind
writes, writes without compare-and-set, stale cached reads, duplicated e-mails. Each
process clock is skewed by up to +-20 ms.
"""

from __future__ import annotations

import heapq
import argparse
import json
import math
import os
import random
import resource
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

from traces.records import (
    KIND_CLIENT,
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    Link,
    SpanRecord,
)

MS = 1_000_000
T0 = 1_700_000_000_000 * MS
AGENT_PROCESSES = 8
AGENT_THREADS = 4
TOOL_PROCESSES = 4
KEYS = 3000


class World:
    """Generates spans; store operations are applied in global time order (a heap), so the
    versions agents see are those of one linearizable store."""

    def __init__(self, seed: int = 1):
        self.rnd = random.Random(seed)
        self.spans: list[SpanRecord] = []
        self.next_span = 0
        self.next_trace = 0
        self.skew = {}
        self.agents = []
        for p in range(AGENT_PROCESSES):
            proc = f"agent-proc-{p}"
            self.skew[proc] = self.rnd.randint(-20, 20) * MS
            for t in range(AGENT_THREADS):
                self.agents.append((f"planner-{p}", proc, str(t), f"{proc}#{t}"))
        self.tools = []
        for p in range(TOOL_PROCESSES):
            proc = f"tool-proc-{p}"
            self.skew[proc] = self.rnd.randint(-20, 20) * MS
            self.tools.append((f"tool-{p}", proc))
        weights = [1.0 / (k + 1) ** 0.8 for k in range(KEYS)]
        total = sum(weights)
        self.cum = list(self._cumulative([w / total for w in weights]))
        self.version = [0] * KEYS
        self.key_names = [f"order/{k}" for k in range(KEYS)]
        self.lock_token = 0
        self.lock_free: dict[int, int] = {}
        self.ops: list = []  # heap of (global_time, seq, op)
        self.seq = 0
        self.producers: list[SpanRecord] = []  # published before the turn being generated
        self.pending: list = []  # heap of (global end, seq, producer span) not yet published
        self.attrs = {}  # shared attribute dicts by span name (memory)

    @staticmethod
    def _cumulative(ps):
        acc = 0.0
        for p in ps:
            acc += p
            yield acc

    def key(self) -> int:
        from bisect import bisect_left

        return min(bisect_left(self.cum, self.rnd.random()), KEYS - 1)

    def span_id(self) -> str:
        self.next_span += 1
        return f"{self.next_span:016x}"

    def emit(self, *, trace, parent, name, kind, start, end, agent, proc, thread, state=None, lock=None,
             idem=None, links=()) -> SpanRecord:
        skew = self.skew[proc]
        chain = f"{proc}#{thread}" if thread else proc
        s = SpanRecord(
            trace_id=trace, span_id=self.span_id(), parent_span_id=parent, name=name, kind=kind,
            start_ns=T0 + start + skew, end_ns=T0 + end + skew, service_name=agent, service_version="1.0",
            instance_id=proc, agent=agent, thread_id=thread or "", chain=chain, clock=proc,
            attributes=self.attrs.setdefault(name, {"component": name}),
            links=links,
        )
        if state:
            s.state_key, s.state_op = state[0], state[1]
            s.state_version, s.state_base_version, s.state_conflict = state[2], state[3], state[4]
        if lock:
            s.lock_name, s.lock_fencing_token = lock
        if idem:
            s.idempotency_key, s.idempotency_outcome = idem
        self.spans.append(s)
        return s

    def schedule(self, at: int, op) -> None:
        self.seq += 1
        heapq.heappush(self.ops, (at, self.seq, op))

    def run(self, target: int) -> list[SpanRecord]:
        free = [0] * len(self.agents)
        turn = 0
        while len(self.spans) < target:
            # Start turns on agent threads in time order; apply store ops that fall before.
            a = min(range(len(self.agents)), key=free.__getitem__)
            now = free[a]
            while self.ops and self.ops[0][0] <= now:
                heapq.heappop(self.ops)[2]()
            free[a] = now + self.turn(self.agents[a], now, turn)
            turn += 1
        while self.ops:
            heapq.heappop(self.ops)[2]()
        return self.spans

    def turn(self, agent, t: int, n: int) -> int:
        """One agent turn starting at global time t (ns since T0); returns its length."""
        rnd = self.rnd
        name, proc, thread, _ = agent
        self.next_trace += 1
        trace = f"{self.next_trace:032x}"
        length = rnd.randint(40, 160) * MS
        links = ()
        while self.pending and self.pending[0][0] <= t:
            self.producers.append(heapq.heappop(self.pending)[2])
        if self.producers and rnd.random() < 0.2:
            links = (Link(trace_id=self.producers[-1].trace_id, span_id=self.producers[-1].span_id),)
        kind = KIND_CONSUMER if links else KIND_INTERNAL
        root = self.emit(trace=trace, parent="", name="agent.turn", kind=kind, start=t, end=t + length,
                         agent=name, proc=proc, thread=thread, links=links)
        llm_end = t + rnd.randint(5, 25) * MS
        self.emit(trace=trace, parent=root.span_id, name="llm.chat", kind=KIND_CLIENT, start=t + MS // 2,
                  end=llm_end, agent=name, proc=proc, thread=thread)
        at = llm_end + MS // 2
        for _ in range(rnd.choice((1, 1, 2))):
            at = self.tool_call(trace, root, agent, at) + MS // 2
        if rnd.random() < 0.5:  # the agent checks a key itself
            k = self.key()
            self.read_op(trace, root.span_id, name, proc, thread, k, at, at + MS // 5, stale=rnd.random() < 0.01)
            at += MS // 2
        if rnd.random() < 0.1:
            key = f"email/{self.next_trace if rnd.random() > 0.02 else self.next_trace - 1}"
            self.emit(trace=trace, parent=root.span_id, name="email.send", kind=KIND_CLIENT, start=at,
                      end=at + 2 * MS, agent=name, proc=proc, thread=thread, idem=(key, "executed"))
            at += 2 * MS + MS // 2
        if rnd.random() < 0.2:
            p = self.emit(trace=trace, parent=root.span_id, name="queue.publish", kind=KIND_PRODUCER, start=at,
                          end=at + MS // 2, agent=name, proc=proc, thread=thread)
            self.seq += 1
            heapq.heappush(self.pending, (at + MS // 2, self.seq, p))
            at += MS
        return max(length, at - t + MS) + rnd.randint(1, 5) * MS

    def tool_call(self, trace, root, agent, at: int) -> int:
        rnd = self.rnd
        name, proc, thread, _ = agent
        tool, tproc = self.tools[rnd.randrange(len(self.tools))]
        k = self.key()
        locked = k % 20 == 7  # 5% of keys, spread over hot and cold
        s = at + MS
        wait = 0
        if locked:  # a fenced lock per key: granted in turn, tokens in grant order
            acquire = max(s, self.lock_free.get(k, 0))
            wait = acquire - s
            self.lock_free[k] = acquire + 10 * MS
            self.lock_token += 1
        span_len = 12 * MS + wait
        client = self.emit(trace=trace, parent=root.span_id, name="tool.call", kind=KIND_CLIENT, start=at,
                           end=at + span_len + 2 * MS, agent=name, proc=proc, thread=thread)
        server = self.emit(trace=trace, parent=client.span_id, name="tool.handle", kind=KIND_SERVER,
                           start=at + MS // 2, end=at + span_len + MS + MS // 2, agent=tool, proc=tproc, thread=None)
        parent = server.span_id
        if locked:
            s += wait
            lock = self.emit(trace=trace, parent=parent, name="lock.hold", kind=KIND_INTERNAL, start=s,
                             end=s + 10 * MS, agent=tool, proc=tproc, thread=None,
                             lock=(f"lock/{k}", self.lock_token))
            parent = lock.span_id
        bug = rnd.random()
        mode = "blind" if bug < 0.01 else "nocas" if bug < 0.02 else "cas"
        self.update(trace, parent, tool, tproc, k, s + MS // 5, mode, retries=2, stale=rnd.random() < 0.005)
        return at + span_len + 2 * MS

    def read_op(self, trace, parent, agent, proc, thread, k, start, end, *, stale=False, then=None):
        def op():
            v = self.version[k]
            if stale and v > 1:
                v -= 1
            self.emit(trace=trace, parent=parent, name="state.read", kind=KIND_CLIENT, start=start, end=end,
                      agent=agent, proc=proc, thread=thread, state=(self.key_names[k], "read", v, None, False))
            if then:
                then(v)
        self.schedule((start + end) // 2, op)

    def update(self, trace, parent, agent, proc, k, s, mode, retries, stale=False):
        """Read, then write; with compare-and-set a conflict retries (up to `retries` more times)."""
        def write(seen):
            ws, we = s + MS, s + MS + MS // 4

            def op():
                current = self.version[k]
                conflict = mode == "cas" and seen != current
                version = None if conflict else current + 1
                if not conflict:
                    self.version[k] = version
                base = None if mode == "blind" else seen
                self.emit(trace=trace, parent=parent, name="state.write", kind=KIND_CLIENT, start=ws, end=we,
                          agent=agent, proc=proc, thread=None,
                          state=(self.key_names[k], "write", version, base, conflict))
                if conflict and retries:
                    self.update(trace, parent, agent, proc, k, s + 3 * MS // 2, mode, retries - 1)
            self.schedule((ws + we) // 2, op)

        if mode == "blind":  # writes without reading: no base version
            write(None)
        else:
            self.read_op(trace, parent, agent, proc, None, k, s, s + MS // 4, stale=stale, then=write)


def one(n: int) -> dict:
    from traces.analysis import analyse

    # The first analysis in a process loads the compiled kernels (traces/hb_kernels.py) from
    # Numba's cache, or compiles them after an install: a one-off cost per worker process,
    # timed and printed on its own so that it does not bend the growth exponent.
    load = time.process_time()
    analyse(World(seed=7).run(200))
    load = time.process_time() - load
    spans = World(seed=n).run(n)
    spans = spans[:n]
    rss_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    wall, cpu = time.perf_counter(), time.process_time()
    findings = analyse(spans)
    seconds = time.process_time() - cpu
    wall = time.perf_counter() - wall
    counts: dict[str, int] = {}
    for f in findings:
        counts[f.kind] = counts.get(f.kind, 0) + 1
    accesses = sum(1 for s in spans if s.state_key)
    return {
        "n": len(spans),
        "seconds": seconds,
        "wall_seconds": wall,
        "accesses": accesses,
        "peak_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "input_mb": rss_before,
        "findings": counts,
        "kernel_load_seconds": load,
    }


def timeline_10k_ms():
    try:
        from bench.timeline_probe import measure_timeline_10k_ms
    except ImportError:
        return None
    return measure_timeline_10k_ms()


def main(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", default="10000,100000,1000000", help="comma-separated span counts")
    parser.add_argument("--one", type=int, help="measure one size in this process and print it as JSON (used by the run)")
    args = parser.parse_args(argv[1:])
    if args.one:
        print(json.dumps(one(args.one)))
        return
    sizes = [int(x) for x in args.sizes.split(",")]
    results = []
    for n in sizes:
        out = subprocess.run([sys.executable, os.path.abspath(__file__), "--one", str(n)], check=True,
                             capture_output=True, text=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        results.append(r)
        print(f"{r['n']:>9} spans ({r['accesses']} accesses): {r['seconds']:.2f} s CPU "
              f"({r['wall_seconds']:.2f} s wall), {r['n'] / r['seconds']:,.0f} spans/s, peak {r['peak_mb']:.0f} MB "
              f"(input alone {r['input_mb']:.0f} MB); findings {r['findings']}; "
              f"first analysis in the process (kernel load): {r['kernel_load_seconds']:.2f} s", flush=True)
    xs = [math.log(r["n"]) for r in results]
    ys = [math.log(r["seconds"]) for r in results]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    exponent = (sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
                if len(xs) > 1 else None)
    print(f"growth exponent (log-log slope of time vs n): {exponent:.3f}" if exponent is not None
          else "growth exponent: n/a")
    big = next((r for r in results if r["n"] >= 1_000_000), results[-1])
    try:
        timeline = timeline_10k_ms()
    except Exception as exc:  # the probe belongs to another module; report, do not fail
        print(f"timeline probe failed: {exc!r}")
        timeline = None
    print(json.dumps({
        "spans_per_s_1m": round(big["n"] / big["seconds"]),
        "exponent": round(exponent, 3) if exponent is not None else None,
        "peak_mb_1m": round(big["peak_mb"]),
        "timeline_10k_ms": timeline,
    }))


if __name__ == "__main__":
    main(sys.argv)
