"""Multi-agent worlds as span records, for tests of the live pipeline against `analyse`.

Agents (processes with two threads) take turns; each turn is one trace: a SERVER root on a
thread, reads and writes of a few shared keys through a versioned store (compare-and-set,
blind writes and the odd stale read), fenced and unfenced lock sections, idempotent side
effects, and a message to a later turn (a PRODUCER span that a later root links to). Turns
of different agents overlap in time, so some writes are ordered only by links, reads-from or
program order, and some by nothing: the worlds have findings of every race kind.
"""

from __future__ import annotations

import random

from traces.records import (
    KIND_CONSUMER,
    KIND_INTERNAL,
    KIND_PRODUCER,
    KIND_SERVER,
    STATUS_ERROR,
    Link,
    SpanRecord,
    make_span,
)

MS = 1_000_000
T0 = 1_700_000_000_000 * MS


def agent_world(rng: random.Random, *, turns: int, agents: int = 4, keys: int = 3, orphans: bool = True,
                t0: int = T0) -> list[SpanRecord]:
    world = _World(rng, keys=keys, t0=t0)
    spans: list[SpanRecord] = []
    for number in range(1, turns + 1):
        spans += world.turn(number, agent=rng.randrange(agents), orphans=orphans)
    return spans


class _World:
    def __init__(self, rng: random.Random, *, keys: int, t0: int):
        self.rng = rng
        self.versions = [1] * keys
        self.fencing = 0
        self.producers: list[SpanRecord] = []
        self.busy_until: dict[tuple[int, str], int] = {}  # (agent, thread) -> when its last turn ended
        self.clock = t0

    def turn(self, number: int, *, agent: int, orphans: bool) -> list[SpanRecord]:
        rng = self.rng
        thread = rng.choice(["1", "2"])
        self.resource = {"service.name": "agents", "service.instance.id": f"proc-{agent}",
                         "gen_ai.agent.id": f"agent-{agent}"}
        self.trace_id = f"{number:032x}"
        self.ids = iter(f"{number:08x}{n:08x}" for n in range(1, 100))
        self.clock += rng.randrange(0, 6) * MS
        start = max(self.clock, self.busy_until.get((agent, thread), 0) + rng.randrange(0, 3) * MS)
        self.root_id = next(self.ids)
        links = ()
        if self.producers and rng.random() < 0.4:
            message = rng.choice(self.producers[-6:])
            links = (Link(trace_id=message.trace_id, span_id=message.span_id),)
        self.t = start + MS
        self.children: list[SpanRecord] = []
        for _ in range(rng.randrange(1, 4)):
            self._access(thread)
        if rng.random() < 0.15:
            self._child("lock sweep", 4 * MS, {"lock.name": "lock/sweeper", "thread.id": thread})
        if rng.random() < 0.2:
            self._child("send mail", MS, {"idempotency.key": f"mail/{rng.randrange(4)}",
                                          "idempotency.outcome": "executed" if rng.random() < 0.8 else "deduplicated"})
        producer = self._child("publish", MS, {"messaging.system": "queue", "thread.id": thread}, kind=KIND_PRODUCER)
        root = make_span(trace_id=self.trace_id, span_id=self.root_id, name=f"turn {number}", kind=KIND_SERVER,
                         start_ns=start, end_ns=self.t + MS, attributes={"thread.id": thread},
                         resource_attributes=self.resource, links=links)
        if orphans and rng.random() < 0.05:
            self._child("lost child", MS, {}, parent="f" * 16)  # its parent was never exported
        self.busy_until[(agent, thread)] = root.end_ns
        self.producers.append(producer)
        return [root, *self.children]

    def _child(self, name, length, attributes, *, status=0, kind=KIND_INTERNAL, parent=None) -> SpanRecord:
        span = make_span(trace_id=self.trace_id, span_id=next(self.ids), parent_span_id=parent or self.root_id,
                         name=name, kind=kind, start_ns=self.t, end_ns=self.t + length, status_code=status,
                         attributes=attributes, resource_attributes=self.resource)
        self.t += length + self.rng.randrange(0, 2) * MS
        self.children.append(span)
        return span

    def _access(self, thread: str) -> None:
        rng, versions = self.rng, self.versions
        k = rng.randrange(len(versions))
        key = f"doc/{k}"
        seen = versions[k] - (1 if rng.random() < 0.1 and versions[k] > 1 else 0)
        self._child("read", 2 * MS, {"state.key": key, "state.op": "read", "state.version": seen})
        if rng.random() < 0.35:
            return
        attributes = {"state.key": key, "state.op": "write"}
        style = rng.random()
        if style < 0.6:  # compare-and-set on what it read
            attributes["state.base_version"] = seen
            if seen != versions[k]:
                attributes["state.conflict"] = True
        elif style < 0.8:  # read-modify-write without compare-and-set
            attributes["state.base_version"] = seen
        # else: a blind write
        if not attributes.get("state.conflict"):
            versions[k] += 1
            attributes["state.version"] = versions[k]
        if rng.random() < 0.3:
            self.fencing += 1
            section_id = next(self.ids)
            write = self._child("write", 3 * MS, attributes, parent=section_id)
            self.children.append(make_span(
                trace_id=self.trace_id, span_id=section_id, parent_span_id=self.root_id, name="hold lock",
                start_ns=write.start_ns - MS // 2, end_ns=write.end_ns + MS // 2,
                attributes={"lock.name": f"lock/{key}", "lock.fencing_token": self.fencing, "thread.id": thread},
                resource_attributes=self.resource))
        else:
            self._child("write", 3 * MS, attributes, status=STATUS_ERROR if rng.random() < 0.05 else 0)


def relayed_stale_read(relay_behind_ms: int = 3000, *, t0: int = T0, key: str = "order/7"):
    """(spans, the path's edges in order) for a stale read whose path runs through a relay on a clock
    `relay_behind_ms` behind: agent-a writes `key` version 2 and publishes; agent-b, on the slow
    clock, relays the message; agent-c consumes it and reads it at version 1. One trace each.
    By the timestamps the relay ran seconds away from both sides, yet it is what ordered them."""

    def span(trace, n, name, agent, start_ms, end_ms, parent=0, kind=KIND_INTERNAL, links=(), **attributes):
        shift = -relay_behind_ms if agent == "agent-b" else 0
        return make_span(trace_id=trace * 32, span_id=f"{trace * 8}{n:08x}", name=name, kind=kind,
                         parent_span_id=f"{trace * 8}{parent:08x}" if parent else "",
                         start_ns=t0 + (start_ms + shift) * MS, end_ns=t0 + (end_ms + shift) * MS, links=links,
                         attributes={"thread.id": "1", **{k.replace("_", ".", 1): v for k, v in attributes.items()}},
                         resource_attributes={"service.name": "orders", "service.instance.id": f"proc-{agent}",
                                              "gen_ai.agent.id": agent})

    def link(s):
        return (Link(s.trace_id, s.span_id),)

    turn = span("a", 1, "agent.step", "agent-a", 0, 50, kind=KIND_SERVER)
    write = span("a", 2, "store.write", "agent-a", 5, 10, parent=1, state_key=key, state_op="write",
                 state_version=2, state_base_version=1)
    publish = span("a", 3, "send inbox-b", "agent-a", 12, 13, parent=1, kind=KIND_PRODUCER)
    relay = span("b", 1, "relay inbox-b", "agent-b", 15, 40, kind=KIND_CONSUMER, links=link(publish))
    forward = span("b", 2, "send inbox-c", "agent-b", 30, 31, parent=1, kind=KIND_PRODUCER)
    consume = span("c", 1, "process inbox-c", "agent-c", 35, 60, kind=KIND_CONSUMER, links=link(forward))
    read = span("c", 2, "store.read", "agent-c", 40, 45, parent=1, state_key=key, state_op="read",
                state_version=1)
    path = [(write, publish), (publish, relay), (relay, forward), (forward, consume), (consume, read)]
    return [turn, write, publish, relay, forward, consume, read], [(a.span_id, b.span_id) for a, b in path]
