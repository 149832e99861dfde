"""The analysis core: spec v1 happens-before, findings, critical path and clock skew.

Plain Python over `traces.records.SpanRecord`, no Django import, so the Celery
tasks, `check_traces` and the views share one implementation. The loops that
visit every event (program-order edges, clock propagation, searches) run compiled, over
numpy arrays, in `traces.hb_kernels`; every decision about edges is made here.

How the happens-before (HB) graph is decided, in short (docs/concurrency.md has
the long version):

- Every span has two events, start and end; node `2*i` is start(i), `2*i+1` is
  end(i). The spec's edges are added between them, through a few helper nodes
  that stand for "every end up to here" so that program order and lock order
  cost a number of edges linear in the spans rather than quadratic.
- Access spans (`state.key` with an op) are split per program-order chain into
  *lanes*: runs of accesses where each ends before the next starts, so each run
  is totally ordered by program order alone. A vector clock over lanes is
  propagated over the graph in topological order (Kahn; strongly connected
  components, which only malformed timestamps create, are merged). The clocks
  at access starts are then packed into Python ints (one bit field per lane) so
  the race checks compare whole clocks with a few SWAR operations.
- "a happened-before b" for two spans means end(a) ->* start(b). An access a
  in lane c at position p happened-before a node e exactly when the lane-c field
  of e's clock is at least p. Per state key the writes are then walked in
  topological order, keeping the antichain of latest writes, so a key whose
  writes are totally ordered costs O(1) per write; stale reads look up, per
  lane, the newest write at or below the read's clock field, after one SWAR
  comparison has told whether any newer write happened-before the read at all.

Races are decided by causality only: no edge compares timestamps of two process
clocks, so shifting one clock changes no lost_update, write_race or
stale_read finding. The findings are a function of the set of spans.
"""

from __future__ import annotations

import heapq
from bisect import bisect_left, bisect_right
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from traces.records import KIND_CLIENT, KIND_SERVER, STATUS_ERROR, SpanRecord, collector_paused

KINDS = (
    "lost_update",
    "write_race",
    "stale_read",
    "duplicate_side_effect",
    "lock_overlap",
    "causality_violation",
    "orphan_span",
)
_KIND_ORDER = {kind: i for i, kind in enumerate(KINDS)}
RACE_KINDS = ("lost_update", "write_race", "stale_read")


@dataclass(frozen=True, slots=True)
class Finding:
    """One finding, as the spec's Findings table defines it."""

    kind: str  # one of KINDS
    key: str  # state key, idempotency key or lock name; "" for causality_violation/orphan_span
    trace_ids: tuple[str, ...]  # sorted, unique
    span_ids: tuple[str, ...]  # pairs: ordered by (trace_id, span_id); stale_read: (read, newest write)
    agents: tuple[str, ...]  # sorted, unique
    detail: str  # one readable line

    def as_json(self) -> dict:
        return {
            "kind": self.kind,
            "key": self.key,
            "trace_ids": list(self.trace_ids),
            "span_ids": list(self.span_ids),
            "agents": list(self.agents),
            "detail": self.detail,
        }


# ---------------------------------------------------------------------------
# The spans, indexed

def _copy_rank(s: SpanRecord) -> tuple:
    # Two copies of one span id (a batch retried with changes): the later-ending copy wins,
    # whatever the arrival order.
    return (s.end_ns, s.start_ns, s.status_code, s.name, s.parent_span_id, s.kind, s.clock, s.chain)


# Node and span numbers: 32 bits are plenty, and at a million spans the arrays' memory is
# a visible part of the time.
_NODE = np.int32


class _Column:
    """A numpy column that grows by appends (its capacity doubles), for the per-span arrays the
    vectorised and compiled steps take."""

    __slots__ = ("data", "n")

    def __init__(self, dtype):
        self.data = np.empty(1024, dtype)
        self.n = 0

    def extend(self, values) -> None:
        end = self.n + len(values)
        if end > len(self.data):
            grown = np.empty(max(end, 2 * len(self.data)), self.data.dtype)
            grown[:self.n] = self.data[:self.n]
            self.data = grown
        self.data[self.n:end] = values
        self.n = end

    def view(self) -> np.ndarray:
        return self.data[:self.n]


def _number(numbers: dict, values) -> list[int]:
    """Each value's number, in order of first appearance; `numbers` keeps them from call to call."""
    setdefault = numbers.setdefault
    return [setdefault(v, len(numbers)) for v in values]


class _Spans:
    """The analysed spans, deduplicated by (trace_id, span_id), as parallel columns, and every index
    the happens-before graph and the findings are built from.

    Spans are only ever appended (`add`), and each index is kept up to date span by span, so the
    live analysis keeps one `_Spans` between runs (`Window`) and a run indexes its new spans only;
    what is left to do per run over all the spans runs vectorised or compiled. `analyse` builds one
    for its spans in one go. Indexes (numbers below are positions in `recs`):

    - columns: `st`, `en`, `clock`, `parent` (lists) and their numpy twins for the graph;
    - `accesses` (the access spans, in order; an access's number is its place here), with the
      lane and position of each (see `_Clocks`), and per state key its writes and reads;
    - the edges that never change once both spans are held (links, reads-from through one helper
      node per (key, version), fencing-token order), kept as edge columns;
    - per lock its sections, per idempotency key its executions.
    """

    def __init__(self):
        self.recs: list[SpanRecord] = []
        self.n = 0
        # Indexed by span id alone, which is unique in practice (64 random bits), rather than
        # by a (trace_id, span_id) tuple: building a million tuples was a third of this step.
        # The few span ids that two traces share are indexed by pair in `by_pair`.
        self.by_span_id: dict[str, int] = {}
        self.by_pair: dict[tuple[str, str], int] = {}
        self.replaced = False  # a better copy of a span indexed already arrived: index again
        self.st: list[int] = []
        self.en: list[int] = []
        self.clock: list[str] = []
        self.parent: list[int] = []
        self.cols = {name: _Column(dtype) for name, dtype in (
            ("st", np.uint64), ("en", np.uint64), ("parent", _NODE), ("kind", np.int32), ("clock", np.int32),
            ("chain", np.int32), ("access", _NODE), ("lane", _NODE), ("lpos", np.int64))}
        self._clock_numbers: dict[str, int] = {}
        self._chain_numbers: dict[str, int] = {}
        self._orphans: dict[tuple[str, str], list[int]] = defaultdict(list)  # parent (trace, span) -> children
        self._link_waits: dict[tuple[str, str], list[int]] = defaultdict(list)  # linked (trace, span) -> linkers
        self.zero_at: dict[tuple[int, int], list[int]] = defaultdict(list)  # zero-length spans per (chain, instant)
        self.zero_shared: set[tuple[int, int]] = set()  # the instants with more than one
        # Edges kept from run to run, as node numbers; helper node h is written -(h+1) (see `_build_graph`).
        self.edges = {name: (_Column(np.int64), _Column(np.int64)) for name in ("link", "reads_from", "token")}
        self.helpers = 0
        self.accesses: list[int] = []
        self.lane: list[int] = []
        self.lpos: list[int] = []
        self.lane_sizes: list[int] = []
        self.late_lanes = 0  # lanes opened for an access older than its chain's newest: see `worn`
        self._free_lanes: dict[str, list[tuple[int, int]]] = {}  # chain -> heap of (end of last member, lane)
        self._chain_newest: dict[str, int] = {}
        self.version: list[int | None] = []  # each access's state.version
        self.writes_by_key: dict[str, list[int]] = defaultdict(list)  # access numbers of writes that took effect
        self.reads_by_key: dict[str, list[int]] = defaultdict(list)  # access numbers of reads of a version
        self.writes_by_base: dict[tuple[str, int], list[int]] = defaultdict(list)
        self._producers: dict[tuple[str, int], list[int]] = defaultdict(list)
        self._consumers: dict[tuple[str, int], list[int]] = defaultdict(list)
        self._helper_of: dict[tuple[str, int], int] = {}
        self.reads_from_direct: set[tuple[str, int]] = set()  # a span on both sides: connected per run
        self.dead_helpers: list[int] = []
        self.by_lock: dict[str, list[int]] = defaultdict(list)
        self.by_lock_clock: dict[tuple[str, str], list[int]] = defaultdict(list)
        self.untokened: set[tuple[str, str]] = set()  # (lock, clock) groups with a section without token
        self._tokens: dict[str, tuple[list[int], dict[int, list[int]]]] = {}
        self.executions: dict[str, list[int]] = defaultdict(list)

    def find(self, trace_id: str, span_id: str) -> int:
        """The index of span (trace_id, span_id), or -1."""
        i = self.by_span_id.get(span_id, -1)
        if i >= 0 and self.recs[i].trace_id != trace_id:
            i = self.by_pair.get((trace_id, span_id), -1)
        return i

    def ordered(self, idxs) -> list[int]:
        recs = self.recs
        return sorted(set(idxs), key=lambda i: (recs[i].trace_id, recs[i].span_id))

    def lock_names_above(self, i: int, cache: dict) -> frozenset:
        """Lock names of the critical sections span i is inside (itself or an ancestor)."""
        got = cache.get(i)
        if got is not None:
            return got
        names = set()
        seen = set()
        j = i
        while j >= 0 and j not in seen:
            seen.add(j)
            name = self.recs[j].lock_name
            if name:
                names.add(name)
            j = self.parent[j]
        got = cache[i] = frozenset(names)
        return got

    @property
    def worn(self) -> bool:
        """Late spans opened many lanes (each widens every clock): indexing all again packs them."""
        return self.late_lanes > 256 and 2 * self.late_lanes > len(self.lane_sizes)

    def add(self, spans: Iterable[SpanRecord]) -> None:
        """Append the spans not held yet, and index them. A second copy of a held span replaces it
        when it ranks higher (`_copy_rank`); if the held copy was indexed already, `replaced` is set
        and the caller indexes all the spans again."""
        first = self.n
        by_span_id, by_pair, recs = self.by_span_id, self.by_pair, self.recs
        for s in spans:
            i = by_span_id.get(s.span_id)
            if i is None:
                by_span_id[s.span_id] = len(recs)
                recs.append(s)
                continue
            if recs[i].trace_id != s.trace_id:
                k = (s.trace_id, s.span_id)
                i = by_pair.get(k)
                if i is None:
                    by_pair[k] = len(recs)
                    recs.append(s)
                    continue
            if _copy_rank(s) > _copy_rank(recs[i]):
                recs[i] = s
                self.replaced = self.replaced or i < first
        self.n = len(recs)
        if self.n > first:
            self._index(first)

    def _index(self, first: int) -> None:
        new, cols = self.recs[first:], self.cols
        self.st.extend(s.start_ns for s in new)
        self.en.extend(s.end_ns for s in new)
        self.clock.extend(s.clock for s in new)
        cols["st"].extend(self.st[first:])
        cols["en"].extend(self.en[first:])
        cols["kind"].extend([s.kind for s in new])
        cols["clock"].extend(_number(self._clock_numbers, self.clock[first:]))
        chains = _number(self._chain_numbers, [s.chain for s in new])
        cols["chain"].extend(chains)
        find, parent = self.find, self.parent
        adopted = []
        link_src, link_dst = [], []
        new_accesses = []
        for i, s in enumerate(new, first):
            p = -1
            if s.parent_span_id:
                p = find(s.trace_id, s.parent_span_id)
                if p < 0:
                    self._orphans[(s.trace_id, s.parent_span_id)].append(i)
            parent.append(p)
            if self._orphans:
                for child in self._orphans.pop((s.trace_id, s.span_id), ()):
                    parent[child] = i
                    adopted.append(child)
            for link in s.links:
                q = find(link.trace_id, link.span_id)
                if q < 0:
                    self._link_waits[(link.trace_id, link.span_id)].append(i)
                elif q != i:
                    link_src.append(2 * q)
                    link_dst.append(2 * i)
            if self._link_waits:
                for linker in self._link_waits.pop((s.trace_id, s.span_id), ()):
                    if linker != i:
                        link_src.append(2 * i)
                        link_dst.append(2 * linker)
            if s.start_ns == s.end_ns:
                at = (chains[i - first], s.start_ns)
                group = self.zero_at[at]
                group.append(i)
                if len(group) > 1:
                    self.zero_shared.add(at)
            if s.state_key and s.state_op in ("read", "write"):
                new_accesses.append(i)
            if s.lock_name:
                self._index_lock(i, s)
            if s.idempotency_key and s.idempotency_outcome == "executed" and s.status_code != STATUS_ERROR:
                self.executions[s.idempotency_key].append(i)
        cols["parent"].extend(parent[first:])
        for child in adopted:
            if child < first:
                cols["parent"].data[child] = parent[child]
        self.edges["link"][0].extend(link_src)
        self.edges["link"][1].extend(link_dst)
        access = [-1] * len(new)
        for j, i in enumerate(new_accesses, len(self.accesses)):
            access[i - first] = j
        cols["access"].extend(access)
        self._index_accesses(new_accesses)

    def _index_lock(self, i: int, s: SpanRecord) -> None:
        name, token = s.lock_name, s.lock_fencing_token
        self.by_lock[name].append(i)
        self.by_lock_clock[(name, s.clock)].append(i)
        if token is None:
            self.untokened.add((name, s.clock))
            return
        # Fencing tokens order the sections: end(a) -> start(b) from each holder of the token before to
        # each holder of the next. A token falling between two held ones is joined to both; the edge
        # between those two stays, which orders nothing the path through the new one does not.
        tokens, members = self._tokens.setdefault(name, ([], {}))
        at = bisect_left(tokens, token)
        if at == len(tokens) or tokens[at] != token:
            tokens.insert(at, token)
            members[token] = []
        src, dst = [], []
        if at > 0:
            for a in members[tokens[at - 1]]:
                src.append(2 * a + 1)
                dst.append(2 * i)
        if at + 1 < len(tokens):
            for b in members[tokens[at + 1]]:
                src.append(2 * i + 1)
                dst.append(2 * b)
        members[token].append(i)
        self.edges["token"][0].extend(src)
        self.edges["token"][1].extend(dst)

    def _index_accesses(self, new_accesses: list[int]) -> None:
        recs, st, en = self.recs, self.st, self.en
        first = len(self.accesses)
        self.accesses.extend(new_accesses)
        self.lane.extend([0] * len(new_accesses))
        self.lpos.extend([0] * len(new_accesses))
        self.version.extend([recs[a].state_version for a in new_accesses])
        by_chain: dict[str, list[int]] = defaultdict(list)
        rf_src, rf_dst = [], []
        for j, a in enumerate(new_accesses, first):
            s = recs[a]
            by_chain[s.chain].append(j)
            key = s.state_key
            if s.state_op == "read":
                if s.state_version is not None:
                    self.reads_by_key[key].append(j)
                    self._consume((key, s.state_version), a, rf_src, rf_dst)
                continue
            if s.write_took_effect:
                self.writes_by_key[key].append(j)
            if s.state_base_version is not None:
                self.writes_by_base[(key, s.state_base_version)].append(j)
                if s.state_base_version == s.state_version and s.write_took_effect:
                    self._direct((key, s.state_version))
                self._consume((key, s.state_base_version), a, rf_src, rf_dst)
            if s.state_version is not None and s.write_took_effect:
                self._produce((key, s.state_version), a, rf_src, rf_dst)
        self.edges["reads_from"][0].extend(rf_src)
        self.edges["reads_from"][1].extend(rf_dst)
        # Lanes: each chain's accesses, in start order, go to a lane whose last member ended by their
        # start (so program order alone orders a lane), or open a new one.
        lane, lpos, sizes, accesses = self.lane, self.lpos, self.lane_sizes, self.accesses
        heappop, heappush = heapq.heappop, heapq.heappush
        for chain in sorted(by_chain):
            free = self._free_lanes.setdefault(chain, [])
            newest = self._chain_newest.get(chain)
            in_order = sorted(by_chain[chain], key=lambda j: st[accesses[j]])
            for j in in_order:
                a = accesses[j]
                if free and free[0][0] <= st[a]:
                    c = heappop(free)[1]
                else:
                    if newest is not None and st[a] < newest:
                        self.late_lanes += 1
                    c = len(sizes)
                    sizes.append(0)
                sizes[c] += 1
                lane[j] = c
                lpos[j] = sizes[c]
                heappush(free, (en[a], c))
            latest = st[accesses[in_order[-1]]]
            self._chain_newest[chain] = latest if newest is None else max(newest, latest)
        self.cols["lane"].extend(lane[first:])
        self.cols["lpos"].extend(lpos[first:])

    # Reads-from: end(w) -> start(r) for w producing (key, v), r observing v or writing on top of it,
    # through one helper node per (key, v) once both sides have a span.

    def _consume(self, kv, a: int, src: list, dst: list) -> None:
        self._consumers[kv].append(a)
        h = self._helper_of.get(kv)
        if h is not None:
            src.append(-h - 1)
            dst.append(2 * a)
        elif self._producers.get(kv) and kv not in self.reads_from_direct:
            self._join(kv, src, dst)

    def _produce(self, kv, a: int, src: list, dst: list) -> None:
        self._producers[kv].append(a)
        h = self._helper_of.get(kv)
        if h is not None:
            src.append(2 * a + 1)
            dst.append(-h - 1)
        elif self._consumers.get(kv) and kv not in self.reads_from_direct:
            self._join(kv, src, dst)

    def _join(self, kv, src: list, dst: list) -> None:
        h = self._helper_of[kv] = self.helpers
        self.helpers += 1
        for w in self._producers[kv]:
            src.append(2 * w + 1)
            dst.append(-h - 1)
        for r in self._consumers[kv]:
            src.append(-h - 1)
            dst.append(2 * r)

    def _direct(self, kv) -> None:
        """A write on top of the version it produced: connected pair by pair (never to itself), per run."""
        self.reads_from_direct.add(kv)
        h = self._helper_of.pop(kv, None)
        if h is not None:
            self.dead_helpers.append(h)

    def reads_from_pairs(self, kv) -> tuple[list[int], list[int]]:
        return self._producers.get(kv, []), self._consumers.get(kv, [])


def _indexed(spans: Iterable[SpanRecord]) -> _Spans:
    sp = _Spans()
    sp.add(spans)
    return sp


# ---------------------------------------------------------------------------
# The happens-before graph


class _Graph:
    """The happens-before graph as an edge list.

    Node 2*i is the start of span i, 2*i+1 its end; helper nodes are numbered from 2*n on: first
    the ones `_Spans` keeps (reads-from), then this graph's own. Edges come in numpy chunks
    (`parts`) from the vectorised and compiled steps, and one by one (`src`, `dst`) from the rest.
    `st`, `en` are the spans' times as the kernels take them.
    """

    __slots__ = ("dst", "en", "fed", "nodes", "parts", "src", "st", "ver")

    def __init__(self, sp: _Spans):
        n = sp.n
        self.st = sp.cols["st"].view()
        self.en = sp.cols["en"].view()
        self.nodes = 2 * n + sp.helpers
        self.parts: list[tuple[np.ndarray, np.ndarray]] = []
        self.src: list[int] = []
        self.dst: list[int] = []
        self.fed = np.full(n, -1, np.int64)  # see hb_kernels.program_order
        self.ver = 0

    def new_node(self) -> int:
        self.nodes += 1
        return self.nodes - 1

    def add(self, u: int, v: int) -> None:
        self.src.append(u)
        self.dst.append(v)

    def edges(self) -> tuple[np.ndarray, np.ndarray]:
        parts = self.parts + [(np.array(self.src, _NODE), np.array(self.dst, _NODE))]
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])

def _kernels():
    """The compiled loops, imported on first use: only processes that analyse pay for Numba (about
    80 MB); web processes import this module for KINDS and the timeline helpers only."""
    from traces import hb_kernels

    return hb_kernels


def _program_order(g: _Graph, ends, end_bounds, starts, start_bounds) -> None:
    src = np.empty(2 * len(ends) + len(starts), _NODE)
    dst = np.empty_like(src)
    m, g.ver, g.nodes = _kernels().program_order(
        ends, end_bounds, starts, start_bounds, g.st, g.en, g.fed, g.ver, g.nodes, src, dst, 0)
    g.parts.append((src[:m], dst[:m]))


def _time_order(g: _Graph, starts: list[int], ends: list[int], sp: _Spans) -> None:
    """Edges end(a) -> start(b) for every a in `ends`, b in `starts`, a != b, en[a] <= st[b]."""
    if not starts or not ends:
        return
    # Within one instant: ends of spans with a duration, starts of zero-length spans, their
    # ends, then the other starts; so a zero-length span never precedes itself.
    pst, pen = sp.st, sp.en
    ends = sorted(ends, key=lambda i: (pen[i], pst[i] == pen[i]))
    starts = sorted(starts, key=lambda i: (pst[i], pst[i] != pen[i]))
    _program_order(g, np.array(ends, _NODE), np.array([0, len(ends)], _NODE),
                   np.array(starts, _NODE), np.array([0, len(starts)], _NODE))
    zero_at: dict[int, list[int]] = defaultdict(list)
    for b in starts:
        if pst[b] == pen[b]:
            zero_at[pst[b]].append(b)
    _zero_length_edges(g, zero_at.values(), set(ends))


def _zero_length_edges(g: _Graph, groups, ends) -> None:
    # Several zero-length spans at one instant: each one's end is <= the others' starts.
    for group in groups:
        if len(group) > 1:
            for a in group:
                if a in ends:
                    for b in group:
                        if a != b:
                            g.add(2 * a + 1, 2 * b)

def _kept_edges(sp: _Spans, name: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """One kind of the edges `_Spans` keeps, with its helper numbers -(h+1) turned into nodes."""
    src, dst = (col.view() for col in sp.edges[name])
    if name == "reads_from":
        if sp.dead_helpers:
            keep = ~(np.isin(src, [-h - 1 for h in sp.dead_helpers]) | np.isin(dst, [-h - 1 for h in sp.dead_helpers]))
            src, dst = src[keep], dst[keep]
        src = np.where(src < 0, 2 * n - 1 - src, src)
        dst = np.where(dst < 0, 2 * n - 1 - dst, dst)
    return src.astype(_NODE), dst.astype(_NODE)


def _build_graph(sp: _Spans) -> _Graph:
    n = sp.n
    g = _Graph(sp)
    cols = sp.cols
    en = g.en
    every = np.arange(n, dtype=_NODE)
    # 1. start(s) -> end(s)
    g.parts.append((2 * every, 2 * every + 1))
    # 2. start(parent) -> start(child); end(child) -> end(parent) when the child is synchronous
    parent = cols["parent"].view()
    has_parent = (parent >= 0) & (parent != every)
    child, par = every[has_parent], parent[has_parent]
    g.parts.append((2 * par, 2 * child))
    kinds = cols["kind"].view()
    clock = cols["clock"].view()
    sync = ((kinds[par] == KIND_CLIENT) & (kinds[child] == KIND_SERVER)) | (
        (clock[par] == clock[child]) & (en[child] <= en[par]))
    g.parts.append((2 * child[sync] + 1, 2 * par[sync] + 1))
    # 3. Program order on each chain: spans sorted by chain, then time, in one compiled pass.
    chain = cols["chain"].view()
    st = g.st
    zero = st == en
    ends = np.lexsort((zero, en, chain)).astype(_NODE)
    starts = np.lexsort((~zero, st, chain)).astype(_NODE)
    bounds = np.searchsorted(chain[ends], np.arange(int(chain.max(initial=-1)) + 2)).astype(_NODE)
    _program_order(g, ends, bounds, starts, bounds)
    _zero_length_edges(g, (sp.zero_at[at] for at in sp.zero_shared), range(n))
    # 4. Links: start(p) -> start(s). 5. Reads-from: end(w) -> start(r) for w producing v, r observing
    # v or based on v. 6. Locks, by fencing token. Kept by `_Spans` as the spans came.
    for name in ("link", "reads_from", "token"):
        g.parts.append(_kept_edges(sp, name, n))
    for kv in sp.reads_from_direct:
        writers, readers = sp.reads_from_pairs(kv)
        if writers and readers:
            _connect(g, writers, readers)
    # 6. Locks without tokens: by time on one clock.
    recs = sp.recs
    for group in sp.untokened:
        members = sp.by_lock_clock[group]
        if len(members) < 2:
            continue
        untokened = [i for i in members if recs[i].lock_fencing_token is None]
        tokened = [i for i in members if recs[i].lock_fencing_token is not None]
        _time_order(g, untokened, members, sp)
        _time_order(g, tokened, untokened, sp)
    return g


def _connect(g: _Graph, froms: list[int], tos: list[int]) -> None:
    """end(a) -> start(b) for every a in froms, b in tos (a != b), through one helper if many-to-many."""
    if len(froms) == 1 or len(tos) == 1 or set(froms) & set(tos):
        for a in froms:
            for b in tos:
                if a != b:
                    g.add(2 * a + 1, 2 * b)
        return
    v = g.new_node()
    for a in froms:
        g.add(2 * a + 1, v)
    for b in tos:
        g.add(v, 2 * b)


class _Clocks:
    """Lane vector clocks at the start of every access span.

    Access spans are split per program-order chain into *lanes* (`_Spans` keeps them): runs of
    accesses where each ends before the next starts, so program order alone orders a lane. An
    access's clock has one field per lane: the position (from 1) of the lane's last access that
    happened-before it. The clocks come from the compiled propagation as rows of one array
    (`rows`); `pack` turns the rows the race checks need into Python ints, one `bits`-wide field
    per lane, a position under a guard bit (`guards` has them all, see `join`). `mask` is larger
    than any position, so it can stand for "no access".
    """

    __slots__ = ("_raw", "_width", "bits", "guards", "lane", "lane_of", "lpos", "lpos_of", "mask", "rank", "rank_of",
                 "shift", "vc")

    def __init__(self, bits: int, sp: _Spans, nlanes: int, rows: np.ndarray, rank: np.ndarray):
        # Lists for the race checks' loops, numpy twins for their sorts.
        self.bits, self.lane, self.lpos, self.rank = bits, sp.lane, sp.lpos, rank.tolist()
        self.rank_of, self.lane_of, self.lpos_of = rank, sp.cols["lane"].view(), sp.cols["lpos"].view()
        self.shift = [c * bits for c in range(nlanes)]
        self.mask = (1 << (bits - 1)) - 1
        self.guards = sum(1 << (s + bits - 1) for s in self.shift)
        self.vc: list[int | None] = [None] * len(rows)
        self._raw, self._width = memoryview(rows).cast("B"), rows.itemsize * nlanes

    def pack(self, js: Iterable[int]) -> None:
        """Fill vc[j] for these accesses (a run revises a few keys: most clocks are never looked at)."""
        vc, raw, width = self.vc, self._raw, self._width
        from_bytes = int.from_bytes
        for j in js:
            if vc[j] is None:
                vc[j] = from_bytes(raw[j * width:(j + 1) * width], "little")

    def join(self, a: int, b: int) -> int:
        """The lane-wise maximum of two packed clocks (SWAR: the guard bits hold a >= b)."""
        guards = self.guards
        d = ((a | guards) - b) & guards
        m = d - (d >> (self.bits - 1))
        return (a & m) | (b & ~m)


def _vector_clocks(sp: _Spans, on_graph=None) -> _Clocks:
    g = _build_graph(sp)
    src, dst = g.edges()
    nodes = g.nodes
    del g
    nlanes, longest = max(len(sp.lane_sizes), 1), max(sp.lane_sizes, default=1)
    # Fields as narrow as the longest lane allows: the packed ints are what the race checks
    # compute on, and at a million spans their memory is a visible part of the time.
    for dtype in (np.uint16, np.uint32, np.uint64):
        bits = 8 * np.dtype(dtype).itemsize
        if longest < (1 << (bits - 1)) - 1:
            break
    access_of_span = sp.cols["access"].view()
    rows = np.zeros((len(sp.accesses), nlanes), dtype)
    rank, visited, indeg, slot, pool, offsets, targets = _kernels().propagate_clocks(
        nodes, src, dst, access_of_span, sp.cols["lane"].view(), sp.cols["lpos"].view().astype(dtype), rows)
    del src, dst
    if on_graph is not None:
        on_graph(offsets, targets)
    clocks = _Clocks(bits, sp, nlanes, rows, rank)
    if visited < nodes:
        _propagate_cycles(clocks, access_of_span, indeg, slot, pool, offsets, targets, visited)
        clocks.rank_of = np.asarray(clocks.rank)
    return clocks


def _csr(nodes: int, src: np.ndarray, dst: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The edges src -> dst as a compressed adjacency (offsets, targets), as propagate_clocks builds it."""
    return _kernels().adjacency(nodes, src.astype(np.int32), dst.astype(np.int32))


def _reachable(offsets: np.ndarray, targets: np.ndarray, origins) -> np.ndarray:
    """Which nodes a path reaches from any of `origins` (included)."""
    seen = np.zeros(len(offsets) - 1, np.bool_)
    _kernels().reach(offsets, targets, np.asarray(origins, np.int32), seen)
    return seen


def _propagate_cycles(clocks: _Clocks, access_of_span, indeg, slot, pool, offsets, targets, done: int) -> None:
    """Finish propagation over the nodes Kahn could not order: condense their cycles
    (malformed timestamps make them; events of one cycle happened-before each other)."""
    left = np.flatnonzero(indeg > 0).tolist()
    n2 = 2 * len(access_of_span)
    join, lane, lpos, shift = clocks.join, clocks.lane, clocks.lpos, clocks.shift
    vc: dict[int, int] = {}
    succ: dict[int, list[int]] = {}
    for u in left:
        # Every successor of an unvisited node is unvisited too.
        succ[u] = targets[offsets[u]:offsets[u + 1]].tolist()
        x = int.from_bytes(pool[slot[u]].tobytes(), "little") if slot[u] >= 0 else 0
        j = int(access_of_span[u >> 1]) if u < n2 else -1
        if j >= 0 and u & 1:
            x = join(x, lpos[j] << shift[lane[j]])
        vc[u] = x
    # Tarjan's strongly connected components, iteratively; emits components sinks first.
    index: dict[int, int] = {}
    low: dict[int, int] = {}
    on_stack: set[int] = set()
    stack: list[int] = []
    comps: list[list[int]] = []
    counter = 0
    for root in left:
        if root in index:
            continue
        work = [(root, iter(succ[root]))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            u, it = work[-1]
            advanced = False
            for v in it:
                if v not in index:
                    index[v] = low[v] = counter
                    counter += 1
                    stack.append(v)
                    on_stack.add(v)
                    work.append((v, iter(succ[v])))
                    advanced = True
                    break
                if v in on_stack:
                    low[u] = min(low[u], index[v])
            if advanced:
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[u])
            if low[u] == index[u]:
                comp = []
                while True:
                    w = stack.pop()
                    on_stack.discard(w)
                    comp.append(w)
                    if w == u:
                        break
                comps.append(comp)
    for comp in reversed(comps):  # sources first
        done += 1
        x = 0
        for u in comp:
            y = vc[u]
            if y and y != x:
                x = join(x, y) if x else y
        members = set(comp)
        for u in comp:
            j = int(access_of_span[u >> 1]) if u < n2 else -1
            if j >= 0 and not u & 1:
                clocks.vc[j] = x
                clocks.rank[j] = done
        for u in comp:
            for v in succ[u]:
                if v not in members:
                    y = vc[v]
                    vc[v] = join(y, x) if y else x


# ---------------------------------------------------------------------------
# Findings


def _finding(sp: _Spans, kind: str, key: str, idxs: Sequence[int], detail: str, *, ordered: bool = True) -> Finding:
    recs = sp.recs
    if ordered:
        idxs = sp.ordered(idxs)
    return Finding(
        kind=kind,
        key=key,
        trace_ids=tuple(sorted({recs[i].trace_id for i in idxs})),
        span_ids=tuple(recs[i].span_id for i in idxs),
        agents=tuple(sorted({recs[i].agent for i in idxs})),
        detail=detail,
    )


def _who(s: SpanRecord) -> str:
    return s.agent or s.span_id


def _span_name(s: SpanRecord) -> str:
    """A span as a reader knows it: its name and who ran it (the page links the ids)."""
    return f"{s.name} ({_who(s)})"

def _races(sp: _Spans, clocks: _Clocks, out: list[Finding], reached=None) -> None:
    """The lost updates, write races and stale reads; with `reached` (a flag per span), only on the
    keys a reached span accessed: every pair on another key would be dropped as unrevised."""
    recs, accesses = sp.recs, sp.accesses
    if reached is None:
        keys = sorted(sp.writes_by_key)
        bases = [kb for kb, group in sp.writes_by_base.items() if len(group) > 1]
    else:
        access_of_span = sp.cols["access"].view()
        revised = access_of_span[reached[:sp.n] & (access_of_span >= 0)].tolist()
        keys = sorted({recs[accesses[j]].state_key for j in revised} & sp.writes_by_key.keys())
        bases = {(recs[accesses[j]].state_key, recs[accesses[j]].state_base_version) for j in revised
                 if recs[accesses[j]].state_op == "write" and recs[accesses[j]].state_base_version is not None}
        bases = [kb for kb in bases if len(sp.writes_by_base[kb]) > 1]
    # lost_update: writes on top of the same version (that took effect or not).
    for key, base in bases:
        group = sp.ordered(accesses[j] for j in sp.writes_by_base[(key, base)] if recs[accesses[j]].write_took_effect)
        for x in range(len(group)):
            for y in range(x + 1, len(group)):
                a, b = recs[group[x]], recs[group[y]]
                out.append(_finding(sp, "lost_update", key, (group[x], group[y]), (
                    f"{_who(a)} (v{a.state_version}) and {_who(b)} (v{b.state_version}) both wrote "
                    f"{key} on top of v{base}: one update overwrote the other unseen")))
    lock_cache: dict = {}
    late = None if reached is None else reached[np.asarray(accesses, np.int64)]  # per access: revised
    for key in keys:
        writes = sp.writes_by_key[key]
        reads = sp.reads_by_key.get(key)
        if reads and late is not None:
            # A stale read's write happened-before the read, so a revised one has its read reached.
            reads = np.asarray(reads)
            reads = reads[late[reads]].tolist()
        if len(writes) > 1:
            _write_races(sp, key, writes, late, clocks, lock_cache, out)
        if reads:
            clocks.pack(reads)
            _stale_reads(sp, key, writes, reads, sp.accesses, clocks, out)


def _write_races(sp, key, writes, late, clocks, lock_cache, out) -> None:
    """Pairs of writes of `key` neither of which happened-before the other. With `late` (per access:
    revised by the run), only pairs with a revised write (the others would be dropped as unrevised)."""
    lane, lpos, shift, mask, avc = clocks.lane, clocks.lpos, clocks.shift, clocks.mask, clocks.vc
    order = np.asarray(writes)
    order = order[np.lexsort((clocks.lpos_of[order], clocks.rank_of[order]))]  # a topological order
    frontier: list[int] = []  # the latest writes seen: every earlier write happened-before one of them
    seen: dict[int, tuple[list[int], list[int]]] = {}
    first = 0
    if late is not None:
        # Writes before the first revised one pair only among themselves: not walked, only filed per
        # lane; each lane's last stands for them in the frontier (each earlier one happened-before it).
        revised = np.flatnonzero(late[order])
        if not len(revised):
            return
        first = int(revised[0])
        earlier = order[:first]
        by_lane = earlier[np.lexsort((clocks.lpos_of[earlier], clocks.lane_of[earlier]))].tolist()
        for j in by_lane:
            positions, members = seen.setdefault(lane[j], ([], []))
            positions.append(lpos[j])
            members.append(j)
        frontier = [members[-1] for _, members in seen.values()]
    order = order[first:].tolist()
    clocks.pack(order)
    clocks.pack(frontier)
    pairs = []
    for j in order:
        x = avc[j]
        covered = True
        for f in frontier:
            if (x >> shift[lane[f]]) & mask < lpos[f]:
                covered = False
                break
        if covered:
            frontier = [j]
        else:
            lj, pj = shift[lane[j]], lpos[j]
            for c, (positions, members) in seen.items():
                at = bisect_right(positions, (x >> shift[c]) & mask)
                if at < len(members):
                    clocks.pack(members[at:])
                for i in members[at:]:
                    if (avc[i] >> lj) & mask >= pj:
                        continue  # j happened-before i (one cycle of malformed timestamps)
                    pairs.append((i, j))
            frontier = [f for f in frontier if (x >> shift[lane[f]]) & mask < lpos[f]]
            frontier.append(j)
        positions, members = seen.setdefault(lane[j], ([], []))
        positions.append(lpos[j])
        members.append(j)
    recs, accesses = sp.recs, sp.accesses
    for i, j in pairs:
        a, b = sp.ordered((accesses[i], accesses[j]))
        ra, rb = recs[a], recs[b]
        if ra.state_base_version is not None and ra.state_base_version == rb.state_base_version:
            continue  # reported as lost_update
        if sp.lock_names_above(a, lock_cache) & sp.lock_names_above(b, lock_cache):
            continue
        out.append(_finding(sp, "write_race", key, (a, b), (
            f"writes of {key} by {_who(ra)} (v{ra.state_version}) and {_who(rb)} (v{rb.state_version}) "
            f"are unordered: neither writer could have seen the other's write")))


def _stale_reads(sp, key, writes, reads, accesses, clocks, out) -> None:
    lane, lpos, shift, mask, avc = clocks.lane, clocks.lpos, clocks.shift, clocks.mask, clocks.vc
    version = sp.version
    producing = [j for j in writes if version[j] is not None]
    if not producing:
        return
    # A read of v is stale when some write of a version above v happened-before it. Per
    # lane, the earliest such write is enough: `above` holds its position in each lane's
    # field (mask: none), so one SWAR comparison with the read's clock tells whether any
    # lane has one. Reads are taken from the highest version down, so `above` only gains
    # writes. The rare stale reads then look for the newest write they saw.
    producing.sort(key=version.__getitem__, reverse=True)
    guards = clocks.guards
    above = guards - (guards >> mask.bit_length())  # every field all ones
    taken = 0
    stale = []
    for r in sorted(reads, key=version.__getitem__, reverse=True):
        v = version[r]
        while taken < len(producing) and version[producing[taken]] > v:
            w = producing[taken]
            taken += 1
            sh, p = shift[lane[w]], lpos[w]
            old = (above >> sh) & mask
            if p < old:
                above -= (old - p) << sh
        if taken and ((avc[r] | guards) - above) & guards:
            stale.append(r)
    if stale:
        _report_stale_reads(sp, key, producing, stale, version, accesses, clocks, out)


def _report_stale_reads(sp, key, producing, stale, version, accesses, clocks, out) -> None:
    """For each stale read, the newest write that happened-before it."""
    recs = sp.recs
    lane, lpos, shift, mask, avc = clocks.lane, clocks.lpos, clocks.shift, clocks.mask, clocks.vc
    # Newest first: highest version, then (trace_id, span_id). The newest write a stale read saw is
    # above the version it read, so writes at or below the lowest version read stale are left out.
    low = min(version[r] for r in stale)
    producing = sorted((j for j in producing if version[j] > low),
                       key=lambda j: (-version[j], recs[accesses[j]].trace_id, recs[accesses[j]].span_id))
    order = {j: o for o, j in enumerate(producing)}
    per_lane: dict[int, list[int]] = defaultdict(list)
    for j in producing:
        per_lane[lane[j]].append(j)
    lanes = []
    for c, members in per_lane.items():
        members.sort(key=lpos.__getitem__)
        best = []
        b = len(producing)
        for j in members:
            b = min(b, order[j])
            best.append(b)
        lanes.append((shift[c], [lpos[j] for j in members], best))
    for r in stale:
        x = avc[r]
        found = len(producing)
        for sh, positions, best in lanes:
            at = bisect_right(positions, (x >> sh) & mask)
            if at and best[at - 1] < found:
                found = best[at - 1]
        w = producing[found]
        rr, rw = recs[accesses[r]], recs[accesses[w]]
        out.append(_finding(sp, "stale_read", key, (accesses[r], accesses[w]), (
            f"{_who(rr)} read {key} at v{version[r]} after {_who(rw)}'s write of v{version[w]} "
            f"had happened-before the read"), ordered=False))


def _duplicates(sp: _Spans, out: list[Finding], keys=None) -> None:
    """Duplicate executions, of every idempotency key or of `keys`."""
    for key in sp.executions if keys is None else keys:
        members = sp.executions.get(key, ())
        if len(members) > 1:
            agents = sorted({sp.recs[i].agent for i in members})
            out.append(_finding(sp, "duplicate_side_effect", key, members, (
                f"{len(members)} spans executed the side effect {key} "
                f"(agents: {', '.join(agents)})")))



def _is_ancestor(sp: _Spans, a: int, b: int) -> bool:
    seen = set()
    j = sp.parent[b]
    while j >= 0 and j not in seen:
        if j == a:
            return True
        seen.add(j)
        j = sp.parent[j]
    return False

def _lock_overlaps(sp: _Spans, out: list[Finding], names=None) -> None:
    """Overlapping critical sections, of every lock or of the locks `names`."""
    recs, st, en = sp.recs, sp.st, sp.en
    for name in sp.by_lock if names is None else names:
        sections = sp.by_lock.get(name, ())
        pairs = set()
        tokens: dict[int, list[int]] = defaultdict(list)
        by_clock: dict[str, list[int]] = defaultdict(list)
        for i in sections:
            t = recs[i].lock_fencing_token
            if t is not None:
                tokens[t].append(i)
            by_clock[sp.clock[i]].append(i)
        for t, group in tokens.items():
            for x in range(len(group)):
                for y in range(x + 1, len(group)):
                    pairs.add((group[x], group[y], f"token {t} was held twice"))
        for clock, members in by_clock.items():
            members = sorted(members, key=lambda i: (st[i], en[i]))
            active: list[tuple[int, int]] = []
            for b in members:
                while active and active[0][0] <= st[b]:
                    heapq.heappop(active)
                for _, a in active:
                    if recs[a].lock_fencing_token is None or recs[b].lock_fencing_token is None:
                        if st[a] < en[b] and st[b] < en[a]:
                            pairs.add((a, b, f"held at the same time on clock {clock}"))
                heapq.heappush(active, (en[b], b))
        for a, b, why in pairs:
            a, b = sp.ordered((a, b))
            if _is_ancestor(sp, a, b) or _is_ancestor(sp, b, a):
                continue  # a nested section of the lock already held (re-entrant)
            out.append(_finding(sp, "lock_overlap", name, (a, b), (
                f"critical sections of lock {name} by {_who(recs[a])} and {_who(recs[b])} overlap: {why}")))

def _causality(sp: _Spans, skew_ns: float, same_ns: float, report_orphans: bool, out: list[Finding],
               revised: list[int] | None = None) -> None:
    """With `revised` (the spans the new ones reach), only their findings: a span whose parent or linked
    span was reached was reached too (through the edge from that span's start to its own)."""
    recs, st, parent, clock, find = sp.recs, sp.st, sp.parent, sp.clock, sp.find
    for i in range(len(recs)) if revised is None else revised:
        s = recs[i]
        p = parent[i]
        if p >= 0 and p != i:
            tolerance = same_ns if clock[p] == clock[i] else skew_ns
            if st[p] - st[i] > tolerance:
                out.append(_finding(sp, "causality_violation", "", (i, p), (
                    f"{_span_name(s)} starts {(st[p] - st[i]) / 1e6:.3f} ms before its parent "
                    f"{_span_name(recs[p])} starts"), ordered=False))
        elif p < 0 and s.parent_span_id and report_orphans:
            out.append(_finding(sp, "orphan_span", "", (i,), (
                f"{_span_name(s)} names parent span {s.parent_span_id}, which is not among the spans analysed")))
        for link in s.links:
            q = find(link.trace_id, link.span_id)
            if q >= 0 and q != i:
                tolerance = same_ns if clock[q] == clock[i] else skew_ns
                if st[q] - st[i] > tolerance:
                    out.append(_finding(sp, "causality_violation", "", (i, q), (
                        f"{_span_name(s)} starts {(st[q] - st[i]) / 1e6:.3f} ms before the span "
                        f"{_span_name(recs[q])} it links to starts"), ordered=False))

def _revised_only(sp: _Spans, out: list[Finding], revised: list[int], new: list[int]) -> list[Finding]:
    recs = sp.recs
    touched = {recs[i].span_id for i in revised}
    keys = {recs[i].idempotency_key for i in new if recs[i].idempotency_key}
    kept = [f for f in out if touched.intersection(f.span_ids) or (f.kind == "duplicate_side_effect" and f.key in keys)]
    return kept, {(recs[i].trace_id, recs[i].span_id) for i in revised}


def _sort_key(f: Finding):
    return (_KIND_ORDER[f.kind], f.key, f.span_ids, f.trace_ids, f.detail)


def analyse(
    spans: Iterable[SpanRecord],
    *,
    skew_tolerance_ms: float = 50.0,
    same_clock_tolerance_ms: float = 0.0,
    report_orphans: bool = True,
    revised_by: Iterable[tuple[str, str]] | None = None,
) -> list[Finding]:
    """All findings over a set of spans, per spec v1, in a deterministic order.

    The order is by kind (KINDS order), key, span ids. The same spans in any order or
    split give the same list.

    With `revised_by` (the (trace_id, span_id) of spans that arrived since the others were
    analysed), only the findings those spans can have changed: those with a span that
    happened after one of them (start reachable from its start: the new span itself, its
    happens-before descendants, an orphan whose parent it is) and the duplicate executions
    of their idempotency keys. Every other finding of the full list is decided by spans that
    were all there before, in the same way as before (`docs/concurrency.md`, live analysis).
    """
    with collector_paused():
        sp = _indexed(spans)
    return _analyse(sp, skew_tolerance_ms, same_clock_tolerance_ms, report_orphans, revised_by)[0]


class Revision(NamedTuple):
    found: list[Finding]  # the findings the new spans can have changed, as they stand now
    touched: set[tuple[str, str]]  # (trace_id, span_id) of the spans that happened after a new one
    graph: HappensBefore  # the happens-before graph the analysis built, to say why a finding went


def analyse_revised(spans: Iterable[SpanRecord], revised_by: Iterable[tuple[str, str]], **options) -> Revision:
    """`analyse(spans, revised_by=...)`, and the (trace_id, span_id) of the spans that happened after
    one of `revised_by` (they included): a stored finding none of whose spans is among them, and not
    a duplicate execution of one of their idempotency keys, is not changed by them."""
    window = Window()
    window.add(spans)
    return window.revise(revised_by, **options)


class Window:
    """Spans analysed again each time more arrive: the live analysis keeps one per project between
    runs, so a run indexes only its new spans (docs/concurrency.md, live analysis). Spans are only
    added; `analyse_revised(spans, revised_by)` is `Window().add(spans)` then `revise(revised_by)`."""

    def __init__(self):
        self._sp = _Spans()

    def __len__(self) -> int:
        return self._sp.n

    @property
    def lanes(self) -> int:
        """How many lanes the access clocks have (the width of every clock: see `_Clocks`)."""
        return len(self._sp.lane_sizes)

    @property
    def worn(self) -> bool:
        """Whether a window built afresh from these spans would analyse faster (see `_Spans.worn`)."""
        return self._sp.worn

    def add(self, spans: Iterable[SpanRecord]) -> None:
        """Add spans; those held already are skipped (a better copy replaces its span, as `analyse` keeps)."""
        with collector_paused():
            self._sp.add(spans)
            if self._sp.replaced:
                self._sp = _indexed(self._sp.recs)

    def revise(self, revised_by: Iterable[tuple[str, str]], **options) -> Revision:
        """What `analyse_revised` says of the spans added so far, `revised_by` among them."""
        found, touched, graph = _analyse(self._sp, options.get("skew_tolerance_ms", 50.0),
                                         options.get("same_clock_tolerance_ms", 0.0),
                                         options.get("report_orphans", True), revised_by)
        return Revision(found, touched, graph)


def _analyse(sp, skew_tolerance_ms, same_clock_tolerance_ms, report_orphans, revised_by):
    # Millions of small objects (indexes, lists per key, packed clocks) and no cycles among them.
    with collector_paused():
        # The new spans' positions, when only what they can change is asked for.
        new = None if revised_by is None else [i for t, s in revised_by if (i := sp.find(t, s)) >= 0]
        out: list[Finding] = []
        reached = None
        graph = None

        def descendants(offsets, targets):
            nonlocal reached, graph
            reached = _reachable(offsets, targets, [2 * i for i in new])[0:2 * sp.n:2]
            graph = HappensBefore.of_adjacency(sp, offsets, targets)

        on_graph = descendants if new is not None else None
        if sp.accesses:
            clocks = _vector_clocks(sp, on_graph)
            _races(sp, clocks, out, reached)
        elif on_graph is not None:
            g = _build_graph(sp)
            descendants(*_csr(g.nodes, *g.edges()))
        revised = None if reached is None else np.flatnonzero(reached).tolist()  # the spans the new ones reach
        if revised is None:
            _duplicates(sp, out)
            _lock_overlaps(sp, out)
        else:
            recs = sp.recs
            _duplicates(sp, out, {recs[i].idempotency_key for i in revised + new if recs[i].idempotency_key})
            _lock_overlaps(sp, out, {recs[i].lock_name for i in revised if recs[i].lock_name})
        _causality(sp, skew_tolerance_ms * 1e6, same_clock_tolerance_ms * 1e6, report_orphans, out, revised)
        touched = None
        if new is not None:
            out, touched = _revised_only(sp, out, revised, new)
    out.sort(key=_sort_key)
    unique: list[Finding] = []
    last = None
    for f in out:
        ident = (f.kind, f.key, f.span_ids)
        if ident != last:
            unique.append(f)
            last = ident
    return unique, touched, graph


def kernels_load() -> None:
    """Compile (first run after an install) or load (from Numba's cache) every compiled loop, on a few
    spans that take each of them: an analysis worker calls it as it starts, so its first run does not
    keep traces waiting seconds for the compiler."""
    spans = [SpanRecord("0" * 32, f"{i:016x}", "", "write", KIND_SERVER, 10 * i, 10 * i + 5, chain=f"c{i}",
                        clock=f"c{i}", state_key="k", state_op="write", state_version=2, state_base_version=1)
             for i in (1, 2)]
    first, second = (("0" * 32, s.span_id) for s in spans)
    graph = analyse_revised(spans, [first]).graph
    graph.between(first, second, graph.indexes([first]))


# ---------------------------------------------------------------------------
# One trace: critical path, clock skew, causal edges


def _roots(spans: Sequence[SpanRecord], ids: set) -> list[SpanRecord]:
    roots = [s for s in spans if not s.parent_span_id or s.parent_span_id not in ids]
    return sorted(roots, key=lambda s: (s.start_ns, -s.end_ns, s.span_id))


def critical_path(spans: Sequence[SpanRecord]) -> list[str]:
    """Span ids on one trace's critical path, root first.

    Jaeger's algorithm: from the root's end, walk backwards through the last-finishing
    child that finished before the point reached; when a span has no such child, the
    walk returns to its parent at that span's start. Children are first clipped to their
    parent's interval (those wholly outside it are dropped), as Jaeger's UI does. With
    several roots, the earliest-starting one's tree is used, preferring a root that links to
    no span of the trace: a root started by a message from the trace (a consumer) comes after
    its sender, whatever its clock says. Each span is listed once.
    """
    if not spans:
        return []
    by_id = {s.span_id: s for s in spans}
    ids = set(by_id)
    roots = _roots(spans, ids)
    origins = [r for r in roots if not any(link.trace_id == r.trace_id and link.span_id in ids and link.span_id != r.span_id
                                         for link in r.links)]
    root = (origins or roots)[0]
    children: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in by_id.values():
        if s.parent_span_id and s.parent_span_id in ids and s.span_id != s.parent_span_id:
            children[s.parent_span_id].append(s)
    # Clip children into their parent, top down.
    clipped: dict[str, tuple[int, int]] = {root.span_id: (root.start_ns, root.end_ns)}
    todo = [root.span_id]
    while todo:
        pid = todo.pop()
        ps, pe = clipped[pid]
        kept = []
        for c in children.get(pid, ()):
            if c.span_id in clipped:
                continue
            cs, ce = max(c.start_ns, ps), min(c.end_ns, pe)
            if c.start_ns > pe or c.end_ns < ps or cs > ce:
                continue
            clipped[c.span_id] = (cs, ce)
            kept.append(c)
            todo.append(c.span_id)
        children[pid] = sorted(kept, key=lambda c: (-clipped[c.span_id][1], c.span_id))
    path: list[str] = []
    seen: set[str] = set()
    current = root.span_id
    returning: int | None = None
    for _ in range(4 * len(by_id) + 4):
        if current not in seen:
            seen.add(current)
            path.append(current)
        last = None
        for c in children.get(current, ()):
            if returning is None or clipped[c.span_id][1] < returning:
                last = c
                break
        if last is not None:
            current, returning = last.span_id, None
            continue
        if current == root.span_id:
            break
        returning = clipped[current][0]
        current = by_id[current].parent_span_id
    return path


def _skew_delta(child_start: int, child_end: int, parent_start: int, parent_end: int) -> int:
    """Jaeger's calculateSkew: the shift that makes the child fit inside its parent."""
    parent_duration = parent_end - parent_start
    child_duration = child_end - child_start
    if child_duration > parent_duration:
        return parent_start - child_start
    if child_start >= parent_start and child_end <= parent_end:
        return 0
    latency = (parent_duration - child_duration) // 2
    return parent_start + latency - child_start


def clock_skew(spans: Sequence[SpanRecord]) -> dict[str, int]:
    """Per process clock id: how far that clock reads ahead of its callers, in ns.

    Subtract the offset from a clock's timestamps to line them up with the callers'.

    RPCs first, as Jaeger's skew adjuster does: each trace is walked from its roots; a
    SERVER child of a CLIENT parent on another clock must fit inside its (already
    adjusted) parent, and the adjustment found carries down to that child's same-clock
    descendants. A clock estimated several times gets the lower median; a root's clock
    is 0 (the reference), unless the message rule below places it.

    Then messages, for every clock without an RPC estimate that is not the clock of a
    trace's origin (a root that links to no span given; a consumer that started a root
    of its own links to its producer, so is no origin). Such a clock is bounded by the
    other cross-clock edges whose timestamps the spec holds to causality, the ones
    causality_violation judges: start(parent) -> start(child) of a parent and child on
    two clocks that are not a CLIENT/SERVER pair (a PRODUCER and the CONSUMER under
    it), and start(linked span) -> start(linking span) of a span link (a message
    received). An edge from span a on clock u to span b on clock v asks that, adjusted,
    b starts no earlier than a: offset(v) - offset(u) <= start(b) - start(a). The clock
    gets the offset nearest 0 that satisfies every such edge between it and the clocks
    already placed: a receive that starts before its send makes the receiving clock read
    behind by at least the gap (the largest gap, when several), a send that starts after
    its receive makes the sending clock read ahead by at least that. It is a lower
    bound, the smallest shift that removes the contradiction; a clock that is off but
    contradicts nothing stays 0. Clocks are placed in rounds outwards from the origins'
    clocks and the RPC estimates, each round against the earlier rounds only, so a
    clock is judged by the clocks nearer the origin, as Jaeger judges a callee by its
    caller; bounds that contradict each other (timestamps no skew explains) give their
    middle. A clock no edge reaches is 0.

    The result is a function of the set of spans (of two copies of one span, the
    later-ending one counts, as in `analyse`). For display only: HB never uses it.
    """
    unique: dict[tuple[str, str], SpanRecord] = {}
    for s in spans:
        k = (s.trace_id, s.span_id)
        if k not in unique or _copy_rank(s) > _copy_rank(unique[k]):
            unique[k] = s
    estimates: dict[str, list[int]] = defaultdict(list)
    root_clocks: set[str] = set()
    origin_clocks: set[str] = set()  # of roots that link to no span given
    clocks: set[str] = set()
    by_trace: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in unique.values():
        by_trace[s.trace_id].append(s)
        clocks.add(s.clock)
    for trace_spans in by_trace.values():
        by_id = {s.span_id: s for s in trace_spans}
        ids = set(by_id)
        children: dict[str, list[SpanRecord]] = defaultdict(list)
        for s in by_id.values():
            if s.parent_span_id in ids and s.parent_span_id != s.span_id:
                children[s.parent_span_id].append(s)
        for root in _roots(list(by_id.values()), ids):
            root_clocks.add(root.clock)
            if not any((link.trace_id, link.span_id) in unique and link.span_id != root.span_id
                       for link in root.links):
                origin_clocks.add(root.clock)
            todo = [(root, 0)]
            visited = {root.span_id}
            while todo:
                s, delta = todo.pop()
                for c in sorted(children.get(s.span_id, ()), key=lambda c: c.span_id):
                    if c.span_id in visited:
                        continue
                    visited.add(c.span_id)
                    d = delta
                    if c.clock != s.clock:
                        if s.kind == KIND_CLIENT and c.kind == KIND_SERVER:
                            d = _skew_delta(c.start_ns, c.end_ns, s.start_ns + delta, s.end_ns + delta)
                            estimates[c.clock].append(d)
                        else:
                            d = 0
                    todo.append((c, d))
    result = {}
    for clock in sorted(clocks):
        found = sorted(estimates.get(clock, ()))
        if clock in root_clocks or not found:
            result[clock] = 0
        else:
            result[clock] = -found[(len(found) - 1) // 2]
    settled = origin_clocks | set(estimates)
    _bound_by_messages(unique, result, settled)
    return result


def _message_edges(unique: dict[tuple[str, str], SpanRecord]) -> dict[tuple[str, str], int]:
    """{(sending clock, receiving clock): the smallest start(receive) - start(send)} over the
    cross-clock edges clock_skew bounds a clock by: links, and parent -> child other than RPC."""
    gaps: dict[tuple[str, str], int] = {}

    def add(a: SpanRecord, b: SpanRecord) -> None:
        if a.clock != b.clock and a is not b:
            pair, gap = (a.clock, b.clock), b.start_ns - a.start_ns
            if pair not in gaps or gap < gaps[pair]:
                gaps[pair] = gap

    for s in unique.values():
        if s.parent_span_id:
            p = unique.get((s.trace_id, s.parent_span_id))
            if p is not None and not (p.kind == KIND_CLIENT and s.kind == KIND_SERVER):
                add(p, s)
        for link in s.links:
            q = unique.get((link.trace_id, link.span_id))
            if q is not None:
                add(q, s)
    return gaps


def _bound_by_messages(unique: dict[tuple[str, str], SpanRecord], result: dict[str, int], settled: set[str]) -> None:
    """Give each clock outside `settled` its offset from the message edges (clock_skew, second part)."""
    gaps = _message_edges(unique)
    if not gaps:
        return
    near: dict[str, list[tuple[str, int, bool]]] = defaultdict(list)  # clock: (other clock, gap, other sends)
    for (u, v), gap in gaps.items():
        near[v].append((u, gap, True))
        near[u].append((v, gap, False))
    done = set(settled)
    while True:
        frontier = sorted(c for c in near if c not in done and any(o in done for o, _, _ in near[c]))
        if not frontier:
            return
        found = {}
        for c in frontier:
            low, high = None, None
            for other, gap, other_sends in near[c]:
                if other not in done:
                    continue
                if other_sends:  # offset(c) - offset(other) <= gap
                    bound = result[other] + gap
                    high = bound if high is None else min(high, bound)
                else:  # offset(other) - offset(c) <= gap
                    bound = result[other] - gap
                    low = bound if low is None else max(low, bound)
            if low is not None and high is not None and low > high:
                found[c] = (low + high) // 2
            elif high is not None and high < 0:
                found[c] = high
            elif low is not None and low > 0:
                found[c] = low
            else:
                found[c] = 0
        result.update(found)
        done.update(frontier)


def causal_edges(spans: Sequence[SpanRecord]) -> list[tuple[str, str, str]]:
    """(from_span_id, to_span_id, edge_kind) worth drawing between different agents.

    edge_kind: "link" (linked span -> linking span), "reads_from" (the write that produced a
    version -> each read of it and each write based on it), "lock" (a critical section ->
    the next one of that lock: next larger fencing token, or without tokens on one clock
    the latest section that ended before it started), "rpc" (CLIENT parent -> SERVER child
    on another clock). Sorted, unique.
    """
    by_id: dict[tuple[str, str], SpanRecord] = {(s.trace_id, s.span_id): s for s in spans}
    edges: set[tuple[str, str, str]] = set()

    def add(a: SpanRecord, b: SpanRecord, kind: str) -> None:
        if a.agent != b.agent and a is not b:
            edges.add((a.span_id, b.span_id, kind))

    producers: dict[tuple[str, int], list[SpanRecord]] = defaultdict(list)
    sections: dict[str, list[SpanRecord]] = defaultdict(list)
    for s in by_id.values():
        p = by_id.get((s.trace_id, s.parent_span_id)) if s.parent_span_id else None
        if p is not None and p.kind == KIND_CLIENT and s.kind == KIND_SERVER and p.clock != s.clock:
            add(p, s, "rpc")
        for link in s.links:
            q = by_id.get((link.trace_id, link.span_id))
            if q is not None:
                add(q, s, "link")
        if s.state_op == "write" and s.write_took_effect and s.state_version is not None and s.state_key:
            producers[(s.state_key, s.state_version)].append(s)
        if s.lock_name:
            sections[s.lock_name].append(s)
    for s in by_id.values():
        if not s.state_key:
            continue
        v = s.state_version if s.state_op == "read" else s.state_base_version if s.state_op == "write" else None
        if v is not None:
            for w in producers.get((s.state_key, v), ()):
                add(w, s, "reads_from")
    for members in sections.values():
        tokened = defaultdict(list)
        for s in members:
            if s.lock_fencing_token is not None:
                tokened[s.lock_fencing_token].append(s)
        tokens = sorted(tokened)
        for t0, t1 in zip(tokens, tokens[1:]):
            for a in tokened[t0]:
                for b in tokened[t1]:
                    add(a, b, "lock")
        by_clock = defaultdict(list)
        for s in members:
            by_clock[s.clock].append(s)
        for group in by_clock.values():
            ends = sorted(group, key=lambda s: (s.end_ns, s.span_id))
            for b in group:
                if b.lock_fencing_token is not None and all(
                    a.lock_fencing_token is not None for a in group
                ):
                    continue
                before = [a for a in ends if a.end_ns <= b.start_ns and a is not b
                          and (a.lock_fencing_token is None or b.lock_fencing_token is None)]
                if before:
                    add(before[-1], b, "lock")
    return sorted(edges)


# ---------------------------------------------------------------------------
# Live analysis over a sliding window


class HappensBefore:
    """The happens-before graph of some spans, built once to answer many pairs: the live product
    asks it why a run's withdrawn findings are no longer ones (which later spans ordered the
    accesses). Searches run compiled over the adjacency, so a pair costs what its paths reach,
    never a rebuild of the graph."""

    def __init__(self, spans: Iterable[SpanRecord]):
        with collector_paused():
            sp = _indexed(spans)
        g = _build_graph(sp)
        self._spans, self._forward = sp, _csr(g.nodes, *g.edges())

    @classmethod
    def of_adjacency(cls, sp: _Spans, offsets: np.ndarray, targets: np.ndarray) -> HappensBefore:
        """The graph an analysis already built, as its compressed adjacency (analyse_revised hands it on)."""
        graph = cls.__new__(cls)
        graph._spans, graph._forward = sp, (offsets, targets)
        return graph

    def span(self, key: tuple[str, str]) -> SpanRecord | None:
        """The span (trace_id, span_id) among the graph's, or None."""
        i = self._spans.find(*key)
        return self._spans.recs[i] if i >= 0 else None

    def indexes(self, keys: Iterable[tuple[str, str]]) -> np.ndarray:
        """Positions of (trace_id, span_id) keys among the spans, for `between`; unknown keys left out."""
        found = [i for t, s in keys if (i := self._spans.find(t, s)) >= 0]
        return np.unique(np.asarray(found, dtype=np.int64))

    def between(self, first: tuple[str, str], second: tuple[str, str], among: np.ndarray) -> list[tuple[str, str]]:
        """The spans at positions `among` (see `indexes`) on a happens-before path between two spans,
        in whichever direction one happened before the other, as (trace_id, span_id); [] when
        neither did."""
        sp = self._spans
        a, b = sp.find(*first), sp.find(*second)
        if a < 0 or b < 0:
            return []
        offsets, targets = self._forward
        on_path = _kernels().on_paths(offsets, targets, 2 * a + 1, 2 * b)
        if not on_path[2 * b]:
            a, b = b, a
            on_path = _kernels().on_paths(offsets, targets, 2 * a + 1, 2 * b)
            if not on_path[2 * b]:
                return []
        hits = among[(on_path[2 * among] | on_path[2 * among + 1]) & (among != a) & (among != b)]
        return sorted((sp.recs[i].trace_id, sp.recs[i].span_id) for i in hits.tolist())


def spans_between(spans: Iterable[SpanRecord], first: tuple[str, str], second: tuple[str, str],
                  among: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """HappensBefore(spans).between(...), for one pair."""
    graph = HappensBefore(spans)
    return graph.between(first, second, graph.indexes(among))
