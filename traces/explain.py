"""One finding explained: the causal slice to draw, the happens-before evidence, the key's
version chain and the plain words, for the finding page.

Plain Python over `SpanRecord`s, no Django import. The happens-before graph here is the
spec's (docs/concurrency.md, "How Causeway orders things") built over the few hundred spans
around one finding, with every edge labelled by its reason, so a path can be shown edge by
edge. `traces.analysis` decides the findings over whole windows with packed vector clocks and
unlabelled helper nodes; this module only re-derives, for the spans it is given, why a pair is
ordered or not. A path needs every span it runs through: callers pass the spans of the
finding's traces and every span that ran between the finding's first start and last end.
"""

from __future__ import annotations

import itertools
from bisect import bisect_left
from collections import defaultdict, deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

from traces.records import KIND_CLIENT, KIND_CONSUMER, KIND_PRODUCER, KIND_SERVER, SpanRecord

DOCS_PAGE = "concurrency"
SLICE_MAX = 80  # spans drawn around a finding, beyond the ones on its evidence

# Edge reasons, as the page names them (docs/concurrency.md section 3 numbers them 1-6).
DURING, PARENT_CHILD, CHILD_RETURNS, PROGRAM_ORDER, LINK, READS_FROM, LOCK = (
    "span runs", "parent/child", "child returns", "program order", "link", "reads-from", "lock hand-off")


@dataclass(frozen=True, slots=True)
class Step:
    """One edge of a happens-before path between two spans (their end or start)."""

    reason: str
    src: SpanRecord
    dst: SpanRecord
    note: str = ""  # "v5", "token 7", ...


@dataclass(slots=True)
class PairEvidence:
    """Whether `first` happened before `second` (or the other way round), and why."""

    first: SpanRecord
    second: SpanRecord
    ordered: bool  # a path runs first -> second (after swapping, when only the reverse held)
    path: list[Step] = field(default_factory=list)
    near: list[tuple[str, list[Step]]] = field(default_factory=list)  # for concurrent pairs: the late edges
    summary: str = ""


@dataclass(frozen=True, slots=True)
class VersionRow:
    span: SpanRecord
    op: str  # "read" | "write"
    version: int | None
    base: int | None
    outcome: str  # "took effect", "rejected (compare-and-set conflict)", "failed", "saw"
    in_finding: bool


@dataclass(slots=True)
class Explanation:
    kind: str
    key: str
    sides: list[SpanRecord]  # the finding's spans that were found, in the finding's order
    missing: list[str]  # span ids of the finding that were not among the spans given
    headline: str
    what: str
    why: str
    fixes: list[str]
    docs_anchor: str
    evidence: list[PairEvidence] = field(default_factory=list)
    versions: list[VersionRow] = field(default_factory=list)
    facts: list[str] = field(default_factory=list)  # kind-specific observations (overlaps, clock gaps)
    slice: list[SpanRecord] = field(default_factory=list)

    @property
    def evidence_edges(self) -> list[tuple[str, str, str]]:
        """(from span id, to span id, kind) to draw: "evidence" for path steps, "no_path" between
        the two sides of a concurrent pair, "late" for the edges that came too late."""
        return edges_of(self.evidence)


def edges_of(evidence: Iterable[PairEvidence]) -> list[tuple[str, str, str]]:
    """Explanation.evidence_edges for any list of pair evidence."""
    edges: list[tuple[str, str, str]] = []
    for ev in evidence:
        for step in ev.path:
            if step.src.span_id != step.dst.span_id:
                edges.append((step.src.span_id, step.dst.span_id, "evidence"))
        if not ev.ordered:
            edges.append((ev.first.span_id, ev.second.span_id, "no_path"))
            for _, steps in ev.near:
                for step in steps:
                    if step.src.span_id != step.dst.span_id:
                        edges.append((step.src.span_id, step.dst.span_id, "late"))
    return list(dict.fromkeys(edges))


def name_of(s: SpanRecord) -> str:
    """How the page and finding texts name a span: its name and its agent."""
    return f"{s.name} ({s.agent or s.service_name or '?'})"


# ---------------------------------------------------------------------------
# The labelled happens-before graph


class LabelledHappensBefore:
    """The spec's happens-before edges over a handful of spans, each with its reason.

    Node 2*i is the start of span i, 2*i+1 its end. Program-order successors are not stored
    (they are quadratic): a search enumerates them from each chain's spans sorted by start.
    """

    def __init__(self, spans: Iterable[SpanRecord]):
        recs: dict[tuple[str, str], SpanRecord] = {}
        for s in spans:
            recs[(s.trace_id, s.span_id)] = s
        self.recs = sorted(recs.values(), key=lambda s: (s.start_ns, s.trace_id, s.span_id))
        self.index = {(s.trace_id, s.span_id): i for i, s in enumerate(self.recs)}
        self.by_span_id: dict[str, int] = {}
        for i, s in enumerate(self.recs):
            self.by_span_id.setdefault(s.span_id, i)
        self.out: dict[int, list[tuple[int, str, str]]] = defaultdict(list)
        self._chains: dict[str, tuple[list[int], list[int]]] = {}
        self._build()

    def find(self, trace_id: str, span_id: str) -> int:
        return self.index.get((trace_id, span_id), self.by_span_id.get(span_id, -1) if not trace_id else -1)

    def _build(self) -> None:
        recs, out = self.recs, self.out
        by_chain: dict[str, list[int]] = defaultdict(list)
        producers: dict[tuple[str, int], list[int]] = defaultdict(list)
        sections: dict[str, list[int]] = defaultdict(list)
        for i, s in enumerate(recs):
            p = self.index.get((s.trace_id, s.parent_span_id), -1) if s.parent_span_id else -1
            if p >= 0 and p != i:
                parent = recs[p]
                out[2 * p].append((2 * i, PARENT_CHILD, ""))
                rpc = parent.kind == KIND_CLIENT and s.kind == KIND_SERVER
                if rpc or (parent.clock == s.clock and s.end_ns <= parent.end_ns):
                    out[2 * i + 1].append((2 * p + 1, CHILD_RETURNS, "rpc" if rpc else ""))
            for link in s.links:
                q = self.index.get((link.trace_id, link.span_id), -1)
                if q >= 0 and q != i:
                    out[2 * q].append((2 * i, LINK, ""))
            by_chain[s.chain].append(i)
            if s.state_key and s.write_took_effect and s.state_version is not None:
                producers[(s.state_key, s.state_version)].append(i)
            if s.lock_name:
                sections[s.lock_name].append(i)
        for i, s in enumerate(recs):
            if not s.state_key:
                continue
            seen = s.state_version if s.state_op == "read" else s.state_base_version if s.state_op == "write" else None
            if seen is not None:
                for w in producers.get((s.state_key, seen), ()):
                    if w != i:
                        out[2 * w + 1].append((2 * i, READS_FROM, f"v{seen}"))
        for members in sections.values():
            self._lock_edges(members)
        for chain, members in by_chain.items():
            members.sort(key=lambda i: (recs[i].start_ns, i))
            self._chains[chain] = (members, [recs[i].start_ns for i in members])

    def _lock_edges(self, members: list[int]) -> None:
        recs, out = self.recs, self.out
        tokens: dict[int, list[int]] = defaultdict(list)
        for i in members:
            if recs[i].lock_fencing_token is not None:
                tokens[recs[i].lock_fencing_token].append(i)
        ordered = sorted(tokens)
        for t0, t1 in itertools.pairwise(ordered):
            for a in tokens[t0]:
                for b in tokens[t1]:
                    out[2 * a + 1].append((2 * b, LOCK, f"token {t0} → {t1}"))
        by_clock: dict[str, list[int]] = defaultdict(list)
        for i in members:
            by_clock[recs[i].clock].append(i)
        for group in by_clock.values():
            for a in group:
                for b in group:
                    if a != b and recs[a].end_ns <= recs[b].start_ns and (
                            recs[a].lock_fencing_token is None or recs[b].lock_fencing_token is None):
                        out[2 * a + 1].append((2 * b, LOCK, "one process, one after the other"))

    def _successors(self, u: int, chain_cut: dict[str, int]):
        if not u & 1:  # a span's start precedes its end: not stored, there is one such edge per span
            yield u + 1, DURING, ""
        yield from self.out.get(u, ())
        if u & 1:  # program order: every span of the chain that starts once this one ended
            s = self.recs[u >> 1]
            members, starts = self._chains[s.chain]
            lo = bisect_left(starts, s.end_ns)
            hi = chain_cut.get(s.chain, len(members))
            if lo < hi:
                chain_cut[s.chain] = lo
                for k in range(lo, hi):
                    j = members[k]
                    if j != u >> 1:
                        yield 2 * j, PROGRAM_ORDER, ""

    def search(self, origin: int, target: int = -1) -> dict[int, tuple[int, str, str]]:
        """Breadth first from node `origin`: every node reached, with the edge it was reached by;
        only until `target` is reached when one is given (its shortest path is then known, and the
        rest of the window, thousands of spans when the two sides are seconds apart, is not walked)."""
        came: dict[int, tuple[int, str, str]] = {origin: (-1, "", "")}
        chain_cut: dict[str, int] = {}
        todo = deque([origin])
        while todo:
            u = todo.popleft()
            for v, reason, note in self._successors(u, chain_cut):
                if v not in came:
                    came[v] = (u, reason, note)
                    if v == target:
                        return came
                    todo.append(v)
        return came

    def steps_to(self, came: dict, target: int) -> list[Step]:
        """The path the search took to `target`, as steps between spans (span-runs edges folded)."""
        nodes = []
        v = target
        while v >= 0:
            nodes.append(v)
            v = came[v][0]
        nodes.reverse()
        steps = []
        for u, v in itertools.pairwise(nodes):
            _, reason, note = came[v]
            if reason != DURING:
                steps.append(Step(reason, self.recs[u >> 1], self.recs[v >> 1], note))
        return steps

    def path(self, a: int, b: int) -> list[Step] | None:
        """The shortest path from a's end to b's start, or None when a did not happen before b."""
        came = self.search(2 * a + 1, 2 * b)
        return self.steps_to(came, 2 * b) if 2 * b in came else None


# ---------------------------------------------------------------------------
# Pairs: ordered or concurrent


def pair_evidence(hb: LabelledHappensBefore, a: int, b: int) -> PairEvidence:
    recs = hb.recs
    forward = hb.search(2 * a + 1, 2 * b)  # when no path, every node reached: the near edges come from it
    if 2 * b in forward:
        ev = PairEvidence(recs[a], recs[b], True, hb.steps_to(forward, 2 * b))
    else:
        backward = hb.search(2 * b + 1, 2 * a)
        if 2 * a in backward:
            ev = PairEvidence(recs[b], recs[a], True, hb.steps_to(backward, 2 * a))
        else:
            ev = PairEvidence(recs[a], recs[b], False)
            ev.near = [_too_late(hb, forward, a, b), _too_late(hb, backward, b, a)]
    ev.summary = _pair_summary(ev)
    return ev


def _too_late(hb: LabelledHappensBefore, came: dict, a: int, b: int) -> tuple[str, list[Step]]:
    """The first span on b's side (b's agent; b's thread when both are one agent's) that a's end
    reached: the edge that would have ordered them, had it arrived before b started."""
    recs = hb.recs
    target = recs[b]
    same_agent = recs[a].agent == target.agent
    side = target.chain if same_agent else target.agent
    where = f"{target.agent or '?'}'s thread {target.thread_id or target.chain}" if same_agent else (
        target.agent or "?")
    reached = [v >> 1 for v in came if not v & 1 and (v >> 1) != a and recs[v >> 1].start_ns >= target.start_ns
               and (recs[v >> 1].chain if same_agent else recs[v >> 1].agent) == side]
    if not reached:
        return (f"Nothing that followed {name_of(recs[a])} reached {where} among the spans around.", [])
    first = min(reached, key=lambda i: (recs[i].start_ns, i))
    late_ms = (recs[first].start_ns - target.start_ns) / 1e6
    return ((f"The nearest edge from {name_of(recs[a])} to {where} arrived at {name_of(recs[first])}, "
            f"{late_ms:.1f} ms after {name_of(target)} had started: too late to order them."),
            hb.steps_to(came, 2 * first))


def _pair_summary(ev: PairEvidence) -> str:
    if ev.ordered:
        hops = ", then ".join(f"{STEP_WORDS.get(s.reason, s.reason)}" for s in ev.path) or "the same span"
        return (f"{name_of(ev.first)} happened before {name_of(ev.second)}: a chain of {len(ev.path)} "
                f"edge{'s' if len(ev.path) != 1 else ''} leads from one to the other ({hops}).")
    return (f"No chain of edges leads from {name_of(ev.first)} to {name_of(ev.second)}, nor back: "
            f"neither could have seen the other. They ran concurrently.")


STEP_WORDS = {
    PARENT_CHILD: "parent started child",
    CHILD_RETURNS: "child returned to its parent",
    PROGRAM_ORDER: "program order on one thread",
    LINK: "message link",
    READS_FROM: "reads-from",
    LOCK: "lock hand-off",
}


def step_text(step: Step) -> str:
    """One edge in words: "write (agent-0) --reads-from v5--> read (agent-1)"."""
    reason = STEP_WORDS.get(step.reason, step.reason) + (f" {step.note}" if step.note else "")
    return f"{name_of(step.src)} → {reason} → {name_of(step.dst)}"


# ---------------------------------------------------------------------------
# The finding in plain words

_TEXTS = {
    "lost_update": (
        "Lost update on {key}",
        ("{a} and {b} both wrote {key} on top of version {base}. Each started from the same version "
        "and neither saw the other's change."),
        ("The write that landed second replaced the first one's work without reading it: one update is "
        "gone, and nothing failed to say so."),
        [("Write with compare-and-set on state.base_version: the store rejects a write whose base is not "
         "the current version, and the agent reads again and retries."),
         "Or serialise the writers with a lock whose fencing token the store checks.",
         "Or pass the version along the message that hands the work over, so the next writer builds on it."],
    ),
    "write_race": (
        "Unordered writes of {key}",
        ("{a} and {b} both wrote {key}, and nothing orders the two writes: no message, no version read, "
        "no lock and no thread connects one to the other."),
        ("Which write wins depends on timing alone; a re-run can end with the other value, and neither "
        "writer knew the other was writing."),
        [("Write with compare-and-set on state.base_version, so a writer that did not see the latest "
         "version is rejected."),
         "Or hold one lock (with a fencing token) around every write of the key.",
         "Or hand the key from one agent to the next with a message that carries the version."],
    ),
    "stale_read": (
        "Stale read of {key}",
        ("{a} read {key} at an old version although {b}'s newer write had already happened before the "
        "read (the chain of edges below)."),
        ("The reader had every reason to see the newer version: it acted on data it was causally "
        "past, typically from a cache or a lagging replica."),
        ["Read through the store, or invalidate the cache on write.",
         "Pass the version along the message and have the reader wait for (or reject) anything older.",
         "Check state.base_version when writing back what was read."],
    ),
    "duplicate_side_effect": (
        "Side effect {key} executed more than once",
        "{count} spans executed the side effect {key} (idempotency.outcome = executed): {names}.",
        ("An action meant to happen once happened several times: a retry or a second agent did not check "
        "the idempotency key before acting."),
        [("Record the idempotency key atomically with the action and check it first; later attempts "
         "report idempotency.outcome = deduplicated."),
         "Let the receiving side deduplicate on the key, so retries are harmless."],
    ),
    "lock_overlap": (
        "Lock {key} held twice at once",
        "{a} and {b} were both inside a critical section of lock {key} at the same time.",
        ("A lock is meant to let one holder in at a time; here two were in, so whatever the lock "
        "protects was open to a race."),
        [("Use fencing tokens: each grant a larger token, and the protected store rejects a write with a "
         "token smaller than one it has seen."),
         ("Check that the lock service never grants a held token again, and that holders renew before "
         "their lease ends.")],
    ),
    "causality_violation": (
        "Clocks disagree with causality",
        "{a} starts before {b}, which caused it ({relation}), by {gap}.",
        ("A cause cannot start after its effect: one of the two process clocks is off (or the parent id "
        "is wrong). Timestamps across these processes cannot be compared; Causeway's ordering does not "
        "use them, but a timeline drawn by wall clock misleads."),
        ["Synchronise the hosts' clocks (NTP or chrony) and alert on offset.",
         "Check that the span's parent id (or link) names the span that really caused it.",
         "Tick \"Adjust for clock skew\" on the trace page to see the processes shifted by their estimated offsets."],
    ),
    "orphan_span": (
        "Span without its parent",
        "{a} names a parent span ({parent}) that was never received.",
        ("Happens-before through the missing parent is lost, so races around it may be missed or "
        "reported wrongly; usually an exporter dropped data or a span was never ended."),
        ["End every span (also on error paths) and flush the exporter before the process exits.",
         "Check the exporter's queue size and the collector's drop counters."],
    ),
}

ANCHORS = {kind: kind for kind in _TEXTS}


def explain(*, kind: str, key: str, span_ids: Sequence[str], trace_ids: Sequence[str], detail: str,
            spans: Iterable[SpanRecord]) -> Explanation:
    """Explain one finding over the spans around it (see the module docstring for which)."""
    hb = LabelledHappensBefore(spans)
    idxs, missing = _locate(hb, span_ids, trace_ids)
    recs = hb.recs
    sides = [recs[i] for i in idxs]
    headline, what, why, fixes = _TEXTS.get(kind, ("{kind}", "{detail}", "", []))
    words = _words(kind, key, sides, missing, detail, hb, idxs)
    ex = Explanation(kind=kind, key=key, sides=sides, missing=missing, headline=headline.format(**words),
                     what=what.format(**words), why=why, fixes=list(fixes), docs_anchor=ANCHORS.get(kind, ""))
    ex.evidence = _evidence(hb, kind, idxs)
    if key and kind in ("lost_update", "write_race", "stale_read"):
        ex.versions = version_chain(recs, key, sides)
    ex.facts = _facts(kind, sides, hb, idxs)
    ex.slice = causal_slice(hb, idxs, ex.evidence, key)
    return ex


def _locate(hb: LabelledHappensBefore, span_ids: Sequence[str], trace_ids: Sequence[str]) -> tuple[list[int], list[str]]:
    """(indexes of the finding's spans among hb's, the span ids not among them)."""
    traces = set(trace_ids)
    idxs, missing = [], []
    for span_id in span_ids:
        i = next((hb.index[(t, span_id)] for t in traces if (t, span_id) in hb.index), hb.by_span_id.get(span_id, -1))
        (idxs.append(i) if i >= 0 else missing.append(span_id))
    return idxs, missing


def _evidence(hb: LabelledHappensBefore, kind: str, idxs: list[int]) -> list[PairEvidence]:
    """The pairs that show a finding of this kind: ordered with their path, or concurrent."""
    recs = hb.recs
    if kind == "causality_violation" and len(idxs) == 2:
        return [_cause_evidence(recs[idxs[0]], recs[idxs[1]])]
    if kind == "duplicate_side_effect" and len(idxs) >= 2:
        evidence = [pair_evidence(hb, a, b) for a, b in _consecutive(recs, idxs)]
        # An ordered pair is the plainest proof (the later one could have checked); then the rest.
        return sorted(evidence, key=lambda ev: not ev.ordered)[:3]
    if kind == "stale_read" and len(idxs) == 2:  # (read, newest write): the write's path to the read
        return [pair_evidence(hb, idxs[1], idxs[0])]
    if len(idxs) >= 2:
        return [pair_evidence(hb, idxs[0], idxs[1])]
    return []


def findings_evidence_edges(findings: Sequence[dict], spans: Iterable[SpanRecord],
                            limit: int = 100) -> dict[object, tuple[list[tuple[str, str, str]], int]]:
    """{finding id: (its evidence edges over these spans, as Explanation.evidence_edges; how many
    of its spans are not among them)} for the first `limit` findings (dicts with id, kind,
    span_ids, trace_ids). One happens-before graph serves them all: the trace page draws a
    finding's evidence from the spans it already holds. A pair with a side on another trace
    cannot be shown here; the finding page loads both traces for it."""
    if not findings:  # most traces: the graph (half a second for 10,000 spans) is not built
        return {}
    hb = LabelledHappensBefore(spans)
    out = {}
    for f in findings[:limit]:
        idxs, missing = _locate(hb, f["span_ids"], f["trace_ids"])
        out[f["id"]] = (edges_of(_evidence(hb, f["kind"], idxs)), len(missing))
    return out


def evidence_incomplete(ex: Explanation) -> bool:
    """Whether the spans given were too few to show the evidence: a stale read's newer write happened
    before the read (the analysis found the path), so a pair shown unordered lacks spans its path
    runs through, spans that ran far away in time or on a clock far off."""
    return ex.kind == "stale_read" and any(not ev.ordered for ev in ex.evidence)


def path_references(spans: Iterable[SpanRecord], known: Iterable[SpanRecord],
                    ) -> tuple[set[tuple[str, str]], set[tuple[str, int]]]:
    """Where the happens-before edges into `spans` come from, when not among `known`: spans as (trace
    id, span id) (a parent, a linked span) and writes as (key, version) (a version read or written on)."""
    have = {(s.trace_id, s.span_id) for s in known}
    produced = {(s.state_key, s.state_version) for s in known
                if s.state_key and s.write_took_effect and s.state_version is not None}
    named, versions = set(), set()
    for s in spans:
        if s.parent_span_id and (s.trace_id, s.parent_span_id) not in have:
            named.add((s.trace_id, s.parent_span_id))
        named.update((link.trace_id, link.span_id) for link in s.links if (link.trace_id, link.span_id) not in have)
        seen = s.state_version if s.state_op == "read" else s.state_base_version if s.state_op == "write" else None
        if s.state_key and seen is not None and (s.state_key, seen) not in produced:
            versions.add((s.state_key, seen))
    return named, versions


def _cause_evidence(child: SpanRecord, cause: SpanRecord) -> PairEvidence:
    """The edge that makes `cause` come first, although the clocks put `child` first."""
    link = child.parent_span_id != cause.span_id
    step = Step(LINK if link else PARENT_CHILD, cause, child)
    gap = (cause.start_ns - child.start_ns) / 1e6
    return PairEvidence(cause, child, True, [step], summary=(
        f"{name_of(cause)} caused {name_of(child)} ({STEP_WORDS[step.reason]}), so it started first; "
        f"yet the timestamps put {name_of(child)} {gap:.3f} ms earlier."))


def _consecutive(recs, idxs: list[int]) -> list[tuple[int, int]]:
    by_start = sorted(idxs, key=lambda i: recs[i].start_ns)[:4]  # three pairs are shown
    return list(itertools.pairwise(by_start))


def _words(kind, key, sides, missing, detail, hb, idxs) -> dict:
    a = name_of(sides[0]) if sides else (missing[0] if missing else "?")
    b = name_of(sides[1]) if len(sides) > 1 else (missing[-1] if missing else "?")
    words = {"kind": kind, "key": key or "", "a": a, "b": b, "detail": detail, "count": len(sides) + len(missing),
             "names": ", ".join(name_of(s) for s in sides[:6]) + (" and more" if len(sides) > 6 else ""),
             "base": sides[0].state_base_version if sides else "?", "parent": "", "relation": "", "gap": ""}
    if kind == "orphan_span" and sides:
        words["parent"] = sides[0].parent_span_id
    if kind == "causality_violation" and len(sides) == 2:
        child, cause = sides
        words["relation"] = "its parent" if child.parent_span_id == cause.span_id else "the span it links to"
        words["gap"] = f"{(cause.start_ns - child.start_ns) / 1e6:.3f} ms"
    return words


def _facts(kind: str, sides: list[SpanRecord], hb: LabelledHappensBefore, idxs: list[int]) -> list[str]:
    facts = []
    if kind == "lock_overlap" and len(sides) == 2:
        a, b = sides
        lo, hi = max(a.start_ns, b.start_ns), min(a.end_ns, b.end_ns)
        tokens = [s.lock_fencing_token for s in sides]
        if tokens[0] is not None and tokens[0] == tokens[1]:
            facts.append(f"Both sections hold fencing token {tokens[0]}: the lock granted it twice.")
        if hi > lo:
            facts.append(f"They overlap for {(hi - lo) / 1e6:.3f} ms.")
    if kind == "causality_violation" and len(sides) == 2:
        child, cause = sides
        if child.clock != cause.clock:
            facts.append(f"{name_of(child)} runs on clock {child.clock}; {name_of(cause)} on clock {cause.clock}.")
        else:
            facts.append(f"Both run on one process clock ({child.clock}): the parent id is more likely wrong "
                         f"than the clock.")
    if kind == "orphan_span" and sides:
        facts.append(f"{name_of(sides[0])} is in trace {sides[0].trace_id}; no span {sides[0].parent_span_id} "
                     f"was received in it.")
    return facts


def version_chain(recs: Sequence[SpanRecord], key: str, sides: Sequence[SpanRecord], around: int = 3) -> list[VersionRow]:
    """Who read which version of the key and who wrote which on top of which, for the versions
    within `around` of the finding's, by version then time."""
    mentioned = [v for s in sides for v in (s.state_version, s.state_base_version) if v is not None]
    if not mentioned:
        return []
    lo, hi = min(mentioned) - around, max(mentioned) + around
    wanted = {(s.trace_id, s.span_id) for s in sides}
    rows = []
    for s in recs:
        if s.state_key != key or s.state_op not in ("read", "write"):
            continue
        version = s.state_version
        shown = version if version is not None else s.state_base_version
        if shown is None or not lo <= shown <= hi:
            continue
        if s.state_op == "read":
            outcome = "saw"
        elif s.state_conflict:
            outcome = "rejected (compare-and-set conflict)"
        elif s.is_error:
            outcome = "failed"
        else:
            outcome = "took effect"
        rows.append(VersionRow(s, s.state_op, version, s.state_base_version, outcome,
                               (s.trace_id, s.span_id) in wanted))
    rows.sort(key=lambda r: (r.version if r.version is not None else (r.base or 0), r.op != "write", r.span.start_ns))
    return rows


# ---------------------------------------------------------------------------
# The causal slice: what to draw


def _matters(s: SpanRecord, key: str) -> bool:
    """Spans that carry or could carry happens-before between agents, or touch the key."""
    return bool((key and (s.state_key == key or s.idempotency_key == key or s.lock_name == key))
                or s.lock_name or s.links or s.kind in (KIND_CLIENT, KIND_SERVER, KIND_PRODUCER, KIND_CONSUMER)
                or (s.state_key and s.state_op))


def causal_slice(hb: LabelledHappensBefore, idxs: list[int], evidence: list[PairEvidence], key: str) -> list[SpanRecord]:
    """The finding's spans, every span on its evidence, their ancestors, and for each agent involved
    the spans around them that matter (accesses, locks, messages, RPCs), nearest in time first."""
    recs = hb.recs
    chosen: dict[tuple[str, str], SpanRecord] = {}

    def take(s: SpanRecord) -> None:
        chosen[(s.trace_id, s.span_id)] = s

    for i in idxs:
        take(recs[i])
    for ev in evidence:
        for step in ev.path:
            take(step.src)
            take(step.dst)
        for _, steps in ev.near:
            for step in steps:
                take(step.src)
                take(step.dst)
    for s in list(chosen.values()):  # ancestors, so each bar sits in its tree
        j = hb.index.get((s.trace_id, s.parent_span_id), -1) if s.parent_span_id else -1
        seen = 0
        while j >= 0 and seen < 32:
            take(recs[j])
            p = recs[j]
            j = hb.index.get((p.trace_id, p.parent_span_id), -1) if p.parent_span_id else -1
            seen += 1
    if not idxs:
        return sorted(chosen.values(), key=lambda s: (s.start_ns, s.span_id))
    agents = {recs[i].agent for i in idxs} | {s.agent for s in chosen.values()}
    lo = min(recs[i].start_ns for i in idxs)
    hi = max(recs[i].end_ns for i in idxs)
    pad = max((hi - lo) // 2, 20_000_000)
    candidates = [s for s in recs if s.agent in agents and s.end_ns >= lo - pad and s.start_ns <= hi + pad
                  and (s.trace_id, s.span_id) not in chosen and _matters(s, key)]
    mid = (lo + hi) // 2
    candidates.sort(key=lambda s: abs((s.start_ns + s.end_ns) // 2 - mid))
    for s in candidates[:max(SLICE_MAX - len(chosen), 0)]:
        take(s)
    return sorted(chosen.values(), key=lambda s: (s.start_ns, s.span_id))
