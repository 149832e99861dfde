"""The loops of the happens-before analysis that touch every event, compiled by Numba.

`traces.analysis` decides what the edges are; these functions only walk arrays: building
the program-order edges of time-sorted spans, propagating lane vector clocks over the
graph in topological order, and searching it from the new spans. In plain Python those
loops were most of the time of a million-span analysis; compiled, they are a small part of
it. Numba caches the machine code beside this file (`cache=True`), so only the first run
after an install compiles.

Timestamps are uint64 arrays, as OTLP sends them; node and span numbers are int32.
"""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True, nogil=True)
def program_order(ends, end_bounds, starts, start_bounds, st, en, fed, ver, next_node, src, dst, m):
    """Edges end(a) -> start(b) for a in a segment's `ends`, b in its `starts`, a != b, en[a] <= st[b].

    Segment g is ends[end_bounds[g]:end_bounds[g+1]] (sorted by end time, ends of spans with
    a duration first within an instant) and starts[start_bounds[g]:start_bounds[g+1]]
    (sorted by start time, starts of zero-length spans first within an instant). The edges
    go through helper nodes that stand for "every end so far": node numbers from
    `next_node` on. When the span whose end comes next was itself started after
    everything in the current set, its end alone stands for the set, so a thread running
    one span after another costs one edge per span. `fed[b]` records the version of the
    set start(b) was given; versions only grow (`ver`), so `fed` is shared by all calls.
    Zero-length spans at one instant are left to the caller. Edges are written to
    src[m:], dst[m:] (room for 2*len(ends) + len(starts) is enough); returns
    (m, ver, next_node).
    """
    for g in range(len(end_bounds) - 1):
        e0, e1 = end_bounds[g], end_bounds[g + 1]
        s0, s1 = start_bounds[g], start_bounds[g + 1]
        if e0 == e1 or s0 == s1:
            continue
        ver += 1
        cur = -1  # the node standing for every end processed so far
        open_helper = False  # cur is a helper node no start has read yet
        j = e0
        for q in range(s0, s1):
            b = starts[q]
            t = st[b]
            zb = t == en[b]
            while j < e1:
                a = ends[j]
                ta = en[a]
                if ta > t or (ta == t and zb and st[a] == ta):
                    break
                j += 1
                e = 2 * a + 1
                if fed[a] == ver:
                    cur = e
                    ver += 1
                    open_helper = False
                elif open_helper:
                    src[m] = e
                    dst[m] = cur
                    m += 1
                else:
                    v = next_node
                    next_node += 1
                    if cur >= 0:
                        src[m] = cur
                        dst[m] = v
                        m += 1
                    src[m] = e
                    dst[m] = v
                    m += 1
                    cur = v
                    ver += 1
                    open_helper = True
            if cur >= 0:
                src[m] = cur
                dst[m] = 2 * b
                m += 1
                open_helper = False
            fed[b] = ver
    return m, ver, next_node


@njit(cache=True, nogil=True)
def adjacency(nnodes, src, dst):
    """The edges src -> dst as a compressed adjacency (offsets, targets), by counting: linear in the edges."""
    offsets = np.zeros(nnodes + 1, np.int64)
    for e in range(len(src)):
        offsets[src[e] + 1] += 1
    for u in range(nnodes):
        offsets[u + 1] += offsets[u]
    targets = np.empty(len(src), np.int32)
    fill = offsets[:-1].copy()
    for e in range(len(src)):
        u = src[e]
        targets[fill[u]] = dst[e]
        fill[u] += 1
    return offsets, targets


@njit(cache=True, nogil=True)
def propagate_clocks(nnodes, src, dst, access_of_span, lane, lpos, clocks):
    """Lane vector clocks at the start of every access, by Kahn's algorithm.

    Nodes 2*i and 2*i+1 are the start and end of span i (access_of_span[i] is its access
    number or -1); larger nodes are helpers. The end of access j adds position lpos[j] in
    lane lane[j]. Clocks live in a pool of rows that a node holds only while it has a
    clock and has not been visited, so memory follows the frontier, not the graph.

    Writes the clock at the start of access j to clocks[j] (one column per lane; lpos and
    clocks share one unsigned dtype). Returns (rank, visited, indeg, slot, pool, offsets,
    targets): rank[j] is when the start of access j was visited. When
    visited < nnodes, the nodes with indeg > 0 lie on or behind a cycle; their pending
    clocks are pool[slot[u]] (slot -1: none) and offsets/targets are the graph, for the
    caller to finish.
    """
    offsets, targets = adjacency(nnodes, src, dst)
    indeg = np.zeros(nnodes, np.int32)
    for e in range(len(dst)):
        indeg[dst[e]] += 1

    naccess, nlanes = clocks.shape
    rank = np.zeros(naccess, np.int64)
    slot = np.full(nnodes, -1, np.int32)
    capacity = 1024
    pool = np.zeros((capacity, nlanes), clocks.dtype)
    free = np.arange(capacity - 1, -1, -1)
    nfree = capacity
    stack = np.empty(nnodes, np.int32)
    top = 0
    for u in range(nnodes):
        if indeg[u] == 0:
            stack[top] = u
            top += 1
    n2 = 2 * len(access_of_span)
    visited = 0
    while top > 0:
        top -= 1
        u = stack[top]
        visited += 1
        su = slot[u]
        if u < n2:
            j = access_of_span[u >> 1]
            if j >= 0:
                if u & 1:
                    if su < 0:
                        su, pool, free, nfree = _take(pool, free, nfree)
                        pool[su, :] = 0
                        slot[u] = su
                    pool[su, lane[j]] = max(pool[su, lane[j]], lpos[j])
                else:
                    if su >= 0:
                        clocks[j, :] = pool[su, :]
                    rank[j] = visited
        handed = False  # u's row went to a successor that had none: u's clock is its clock so far
        for q in range(offsets[u], offsets[u + 1]):
            v = targets[q]
            if su >= 0:
                sv = slot[v]
                if sv < 0:
                    if handed:
                        sv, pool, free, nfree = _take(pool, free, nfree)
                        pool[sv, :] = pool[su, :]
                    else:
                        # Nothing writes to v's row before u's edges are done (a node's row is joined
                        # into only by its predecessors, as each is visited), so u keeps reading it.
                        sv, handed = su, True
                    slot[v] = sv
                elif sv != su:
                    for c in range(nlanes):
                        pool[sv, c] = max(pool[sv, c], pool[su, c])
            d = indeg[v] - 1
            indeg[v] = d
            if d == 0:
                stack[top] = v
                top += 1
        if su >= 0:
            if not handed:
                free[nfree] = su
                nfree += 1
            slot[u] = -1
    return rank, visited, indeg, slot, pool, offsets, targets


@njit(cache=True, nogil=True)
def _take(pool, free, nfree):
    """A free row of the pool: (row, pool, free, nfree), the pool doubled when it is full."""
    if nfree == 0:
        pool, free, nfree = _grow(pool, free)
    nfree -= 1
    return free[nfree], pool, free, nfree


@njit(cache=True, nogil=True)
def _grow(pool, free):
    capacity, nlanes = pool.shape
    bigger = np.zeros((2 * capacity, nlanes), pool.dtype)
    bigger[:capacity, :] = pool
    more = np.empty(2 * capacity, np.int64)
    nfree = 0
    for s in range(2 * capacity - 1, capacity - 1, -1):
        more[nfree] = s
        nfree += 1
    return bigger, more, nfree


@njit(cache=True, nogil=True)
def reach(offsets, targets, origins, seen):
    """Mark in `seen` every node a path of the CSR graph (offsets, targets) reaches from `origins`
    (included), depth first; a search costs what it reaches, not the graph."""
    stack = np.empty(len(seen), np.int32)
    top = 0
    for o in origins:
        if not seen[o]:
            seen[o] = True
            stack[top] = o
            top += 1
    while top > 0:
        top -= 1
        u = stack[top]
        for q in range(offsets[u], offsets[u + 1]):
            v = targets[q]
            if not seen[v]:
                seen[v] = True
                stack[top] = v
                top += 1


@njit(cache=True, nogil=True)
def on_paths(offsets, targets, a, b):
    """The nodes on a path of the CSR graph (offsets, targets) from node a to node b, a and b included:
    those a reaches that reach b (none when a does not reach b). Only what a reaches is searched,
    twice at most for a graph without cycles, and no backward adjacency is built: a run asks this
    of a few withdrawn findings, and reversing a window's million edges cost more than the searches.
    """
    nodes = len(offsets) - 1
    seen = np.zeros(nodes, np.bool_)
    on = np.zeros(nodes, np.bool_)
    order = np.empty(nodes, np.int32)  # what a reaches, each node after every node its search went on to
    stack = np.empty(nodes, np.int32)
    step = np.empty(nodes, np.int64)
    seen[a] = True
    stack[0], step[0], top, done = a, offsets[a], 1, 0
    while top > 0:
        u = stack[top - 1]
        q = step[top - 1]
        if q < offsets[u + 1]:
            step[top - 1] = q + 1
            v = targets[q]
            if not seen[v]:
                seen[v] = True
                stack[top], step[top] = v, offsets[v]
                top += 1
        else:
            top -= 1
            order[done] = u
            done += 1
    if not seen[b]:
        return on
    on[b] = True
    # In that order a node's successors come first, so one pass settles a graph without cycles; a
    # cycle (malformed timestamps) takes another pass for each time a path goes round it.
    changed = True
    while changed:
        changed = False
        for k in range(done):
            u = order[k]
            if not on[u]:
                for q in range(offsets[u], offsets[u + 1]):
                    if on[targets[q]]:
                        on[u] = True
                        changed = True
                        break
    return on
