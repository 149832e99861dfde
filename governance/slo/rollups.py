"""The SLI rollup stage: per-minute and per-hour counts of every SLI of a project.

`sli_rollups_update(project_id=, trace_ids=)` is the stage's entry point: it finds the minutes
the quiet traces touch (their spans' start minutes, and the minutes of the findings and
duplicate side effects that involve them) and recomputes every SLI of the project for those
minutes from what is stored, replacing the rows there. Running it twice changes nothing; a
late span reopens its trace, and when the trace is quiet again its minutes are counted anew.

A recomputation holds a row lock on the SLIs it writes, taken before it reads, so two runs
over the same minutes write one after the other, the later from what the earlier saw and more.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from datetime import datetime, timedelta
from functools import lru_cache

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from governance.models import Project
from governance.slo.core import sli as core
from governance.slo.models import Lease, Sli, SliRollup
from policies.models import Violation
from traces.models import Finding, FindingSpan, Span

log = logging.getLogger(__name__)

NS = core.NS_PER_MINUTE
LIVE_FINDINGS = (Finding.Status.OPEN, Finding.Status.ACKNOWLEDGED)
SPAN_FIELDS = ("trace_id", "span_id", "name", "kind", "service_name", "agent", "start_ns", "end_ns", "status_code",
               "state_op", "state_conflict", "idempotency_key", "idempotency_outcome")
MERGE_GAP_MINUTES = 5  # touched minutes this close are recounted in one pass (the gap too: it is idempotent)


@lru_cache(maxsize=4096)
def _compiled(key: str, definition_json: str) -> core.Sli:
    import json

    return core.Sli.parse(json.loads(definition_json))


def compiled_slis(*, project_id: int, sli_ids: Iterable[int] | None = None) -> dict[int, core.Sli]:
    import json

    rows = Sli.objects.filter(project_id=project_id)
    if sli_ids is not None:
        rows = rows.filter(pk__in=list(sli_ids))
    return {pk: _compiled(key, json.dumps(definition, sort_keys=True))
            for pk, key, definition in rows.values_list("pk", "key", "definition")}


# --- the stage ------------------------------------------------------------------------------------------


def sli_rollups_update(*, project_id: int, trace_ids: list[str]) -> int:
    """Recount every SLI of the project over the minutes these quiet traces touch. Returns rows written."""
    if not trace_ids or not Sli.objects.filter(project_id=project_id).exists():
        return 0
    return sli_rollups_recompute(project_id=project_id, minutes=touched_minutes(project_id=project_id, trace_ids=trace_ids))


def touched_minutes(*, project_id: int, trace_ids: list[str]) -> set[int]:
    """Minutes whose counts these traces can change: their spans', their findings' (withdrawn ones too:
    a withdrawal changes a count), and the spans of the duplicate side effects they take part in."""
    minutes = {ns // NS for ns in Span.objects.filter(project_id=project_id, trace_id__in=trace_ids)
               .values_list("start_ns", flat=True)}
    findings = list(Finding.objects.filter(
        pk__in=FindingSpan.objects.filter(project_id=project_id, trace_id__in=trace_ids).values("finding_id"))
        .values_list("pk", "kind", "first_ns"))
    minutes.update(first_ns // NS for _, _, first_ns in findings)
    duplicates = [pk for pk, kind, _ in findings if kind == "duplicate_side_effect"]
    if duplicates:
        members = list(FindingSpan.objects.filter(finding_id__in=duplicates).values_list("trace_id", "span_id"))
        minutes.update(ns // NS for ns in Span.objects.filter(
            project_id=project_id, trace_id__in={t for t, _ in members}, span_id__in={s for _, s in members})
            .values_list("start_ns", flat=True))
    return minutes


def minute_runs(minutes: Iterable[int], gap: int = MERGE_GAP_MINUTES) -> list[tuple[int, int]]:
    """Sorted minutes as inclusive (first, last) runs, joining runs at most `gap` minutes apart."""
    runs: list[list[int]] = []
    for minute in sorted(set(minutes)):
        if runs and minute - runs[-1][1] <= gap:
            runs[-1][1] = minute
        else:
            runs.append([minute, minute])
    return [(a, b) for a, b in runs]


def sli_rollups_recompute(*, project_id: int, minutes: Iterable[int], sli_ids: Iterable[int] | None = None) -> int:
    """Recount the SLIs (all of the project's, or `sli_ids`) over these minutes from the stored events,
    replacing their minute rows there and the hour rows that contain them. Returns rows written."""
    slis = compiled_slis(project_id=project_id, sli_ids=sli_ids)
    if not slis:
        return 0
    # Spans past the project's retention are deleted, but SLO windows reach further back: the counts of
    # those minutes are all that is left of them, and recounting would wipe them.
    retention_days = Project.objects.filter(pk=project_id).values_list("retention_days", flat=True).get()
    kept_from = int((timezone.now() - timedelta(days=retention_days)).timestamp()) // 60 + 1
    minutes = [m for m in minutes if m >= kept_from]
    regular = {pk: s for pk, s in slis.items() if s.kind.name != "recovery"}
    recovery = {pk: s for pk, s in slis.items() if s.kind.name == "recovery"}
    horizon = settings.SLI_RECOVERY_HORIZON_MINUTES
    now_minute = int(timezone.now().timestamp()) // 60
    written = 0
    for first, last in minute_runs(minutes):
        with transaction.atomic():
            _lock(slis)
            if regular:
                written += _replace_minutes(regular, first, last, count_minutes(project_id, regular, first, last))
            for pk, sli in recovery.items():
                # A success's recovery reads back at most the horizon; a failure here can end in a
                # success up to the horizon later, so those minutes are recounted too.
                through = max(last, min(last + horizon, now_minute))
                counts = _recoveries(project_id, sli, first - horizon, through)
                written += _replace_minutes({pk: sli}, first, through,
                                            {(pk, m): c for m, c in counts.items() if first <= m <= through})
            written += _replace_hours(slis, first, max(last, min(last + horizon, now_minute)) if recovery else last)
    return written


def _lock(slis: dict) -> None:
    list(Sli.objects.select_for_update().filter(pk__in=sorted(slis)).order_by("pk").values_list("pk", flat=True))


def _spans(project_id: int, first: int, last: int, *, attributes: bool, where: Q | None = None) -> list[core.SliSpan]:
    fields = SPAN_FIELDS + (("attributes", "resource_attributes") if attributes else ())
    rows = (Span.objects.filter(where or Q(), project_id=project_id, start_ns__gte=first * NS, start_ns__lt=(last + 1) * NS)
            .values_list(*fields))
    return [core.SliSpan(*row) for row in rows.iterator(chunk_size=5000)]


def count_minutes(project_id: int, slis: dict[int, core.Sli], first: int, last: int) -> dict:
    kinds = {s.kind.source for s in slis.values()}
    spans = _spans(project_id, first, last, attributes=any(s.needs_attributes for s in slis.values())) \
        if "spans" in kinds else []
    duplicates: set[str] = set()
    if any(s.kind.name == "idempotency" for s in slis.values()):
        duplicates = duplicate_spans(project_id, {s.idempotency_key for s in spans if s.idempotency_key})
    findings = []
    if "findings" in kinds:
        findings = [core.FindingEvent(kind, key, tuple(a for a in agents.split("|") if a), first_ns,
                                      trace_ids[0] if trace_ids else "", span_ids[0] if span_ids else "")
                    for kind, key, agents, first_ns, trace_ids, span_ids in Finding.objects.filter(
                        project_id=project_id, status__in=LIVE_FINDINGS, first_ns__gte=first * NS,
                        first_ns__lt=(last + 1) * NS).values_list("kind", "key", "agents", "first_ns", "trace_ids",
                                                                  "span_ids")]
    violations = []
    if "violations" in kinds:
        violations = [core.ViolationEvent(*row) for row in Violation.objects.filter(
            project_id=project_id, start_ns__gte=first * NS, start_ns__lt=(last + 1) * NS).values_list(
            "policy__name", "rule_id", "agent", "service", "enforced", "start_ns", "trace_id", "span_id")]
    return core.rollup(slis, spans=spans, findings=findings, violations=violations, duplicates=duplicates)


def duplicate_spans(project_id: int, keys: set[str]) -> set[str]:
    """Span ids of repeated executions among these idempotency keys, from the duplicate_side_effect findings."""
    if not keys:
        return set()
    groups = list(Finding.objects.filter(project_id=project_id, kind="duplicate_side_effect", status__in=LIVE_FINDINGS,
                                         key__in=keys).values_list("key", "span_ids"))
    if not groups:
        return set()
    starts = dict(Span.objects.filter(project_id=project_id, idempotency_key__in={k for k, _ in groups},
                                      span_id__in={s for _, ids in groups for s in ids}).values_list("span_id", "start_ns"))
    return core.duplicate_span_ids(("duplicate_side_effect", [(starts.get(s, 0), s) for s in ids]) for _, ids in groups)


def _recoveries(project_id: int, sli: core.Sli, first: int, last: int) -> dict[int, core.MinuteCounts]:
    # Narrow the read with the selector's exact names; globs and attributes are checked in Python.
    where = Q()
    for field_name, column in (("service", "service_name"), ("name", "name"), ("agent", "agent")):
        names = sli.match.get(field_name)
        if names and not any(set(n) & set("*?[") for n in names):
            where &= Q(**{f"{column}__in": names})
    spans = _spans(project_id, first, last, attributes=sli.needs_attributes, where=where)
    return core.recoveries(sli, spans, horizon_ns=settings.SLI_RECOVERY_HORIZON_MINUTES * NS)


def _row(sli_id: int, width: int, start: int, c) -> SliRollup:
    return SliRollup(sli_id=sli_id, width=width, start=start, good=c.good, total=c.total, value_sum=c.value_sum,
                     hist={str(k): v for k, v in c.hist.items()}, examples=c.examples)


def _replace(sli_ids, width: int, first: int, last: int, rows: list[SliRollup]) -> int:
    """Make the rows of these SLIs, of this width, from `first` to `last` (inclusive) exactly `rows`."""
    keep = {(r.sli_id, r.start) for r in rows}
    stale = [pk for pk, sli_id, start in SliRollup.objects.filter(
        sli_id__in=list(sli_ids), width=width, start__gte=first, start__lte=last).values_list("pk", "sli_id", "start")
        if (sli_id, start) not in keep]
    if stale:
        SliRollup.objects.filter(pk__in=stale).delete()
    SliRollup.objects.bulk_create(rows, update_conflicts=True, unique_fields=["sli", "width", "start"],
                                  update_fields=["good", "total", "value_sum", "hist", "examples"], batch_size=2000)
    return len(rows)


def _replace_minutes(slis: dict, first: int, last: int, counts: dict) -> int:
    return _replace(slis, 1, first, last, [_row(pk, 1, m, c) for (pk, m), c in counts.items() if first <= m <= last])


def _replace_hours(slis: dict, first: int, last: int) -> int:
    """The hour rows over these minutes, summed again from their minute rows."""
    low, high = first // 60 * 60, last // 60 * 60 + 59
    hours: dict[tuple, core.MinuteCounts] = {}
    for sli_id, start, good, total, value_sum, hist, examples in SliRollup.objects.filter(
            sli_id__in=list(slis), width=1, start__gte=low, start__lte=high).order_by("start").values_list(
            "sli_id", "start", "good", "total", "value_sum", "hist", "examples"):
        c = hours.setdefault((sli_id, start // 60 * 60), core.MinuteCounts())
        c.good += good
        c.total += total
        c.value_sum += value_sum
        core.hist_merge(c.hist, hist)
        c.examples.extend(examples[: core.MAX_EXAMPLES - len(c.examples)])
    return _replace(slis, 60, low, high, [_row(pk, 60, h, c) for (pk, h), c in hours.items()])


# --- backfill of a new SLI ---------------------------------------------------------------------------------

BACKFILL_CHUNK_MINUTES = 60


def backfill_start_minute(sli: Sli, *, now: datetime | None = None) -> int:
    """The oldest minute a new SLI needs counted: its longest SLO or rule window back, within retention."""
    now_minute = int((now or timezone.now()).timestamp()) // 60
    longest = max([s.window_seconds for s in sli.slos.all()] + [r.window_seconds for r in sli.rules.all()] + [3600])
    retention = Project.objects.filter(pk=sli.project_id).values_list("retention_days", flat=True).first() or 0
    return now_minute - min(longest // 60, retention * 1440)


def sli_backfill(*, sli_id: int, seconds: float = 50.0) -> bool:
    """Count a new SLI over the stored past, newest hour first (evaluation needs the recent windows
    soonest), until done or `seconds` are up. Returns True when it is done."""
    sli = Sli.objects.filter(pk=sli_id).first()
    if sli is None:
        return True
    deadline = time.monotonic() + seconds
    oldest = backfill_start_minute(sli)
    upper = sli.backfilled_from if sli.backfilled_from is not None else int(timezone.now().timestamp()) // 60 + 1
    while upper > oldest:
        if time.monotonic() > deadline:
            return False
        lower = max(oldest, upper - BACKFILL_CHUNK_MINUTES)
        sli_rollups_recompute(project_id=sli.project_id, minutes=range(lower, upper), sli_ids=[sli.pk])
        Sli.objects.filter(pk=sli.pk).update(backfilled_from=lower)
        upper = lower
    return True


# --- leases and expiry --------------------------------------------------------------------------------------


def lease_claim(name: str, *, seconds: float, holder: str, now: datetime | None = None) -> bool:
    """Take the named lease if it is free or its holder's time ran out (a guarded update)."""
    now = now or timezone.now()
    Lease.objects.get_or_create(name=name)
    return bool(Lease.objects.filter(Q(until__isnull=True) | Q(until__lte=now), name=name).update(
        holder=holder, until=now + timedelta(seconds=seconds)))


def lease_release(name: str, *, holder: str) -> None:
    Lease.objects.filter(name=name, holder=holder).update(until=None)


ROLLUP_KEEP_DAYS = 91  # the longest SLO window is 90 days


def rollups_expire(*, now: datetime | None = None, batch: int = 20_000) -> int:
    """Delete rollup rows older than any window can reach, a batch at a time. Returns rows deleted."""
    oldest = int((now or timezone.now()).timestamp()) // 60 - ROLLUP_KEEP_DAYS * 1440
    old = list(SliRollup.objects.filter(start__lt=oldest).values_list("pk", flat=True)[:batch])
    return SliRollup.objects.filter(pk__in=old).delete()[0] if old else 0
