"""Reads for SLOs and alerts: window sums from the rollups, series for the charts, lists for people."""

from __future__ import annotations

from datetime import UTC, datetime

from django.conf import settings
from django.db.models import Case, F, FloatField, IntegerField, Q, Sum, Value, When
from django.db.models.functions import Coalesce
from django.utils import timezone

from governance.selectors import projects_for_user
from governance.slo.core import sli as core
from governance.slo.core.alerts import Matcher, silenced
from governance.slo.models import Alert, AlertRule, Channel, Silence, SliRollup, Slo
from traces.models import Span


def minute_of(moment: datetime) -> int:
    return int(moment.timestamp()) // 60


def _split(first: int, last: int) -> tuple[tuple[int, int] | None, list[tuple[int, int]]]:
    """Minutes first..last (inclusive) as whole hours [h0, h1) (hour rows start at h * 60) and the
    minute ranges left at either end."""
    h0, h1 = -(-first // 60), (last + 1) // 60
    if h0 >= h1:
        return None, [(first, last)]
    edges = [(first, h0 * 60 - 1), (h1 * 60, last)]
    return (h0, h1), [(a, b) for a, b in edges if a <= b]


def _sums(rows, conditions: dict) -> dict[int, dict]:
    aggregates = {}
    for w, condition in conditions.items():
        for field, output in (("good", IntegerField()), ("total", IntegerField()), ("value_sum", FloatField())):
            aggregates[f"{field}_{w}"] = Coalesce(Sum(Case(When(condition, then=F(field)), default=Value(0),
                                                           output_field=output)), Value(0), output_field=output)
    return {row["sli_id"]: row for row in rows.values("sli_id").annotate(**aggregates)}


def window_sums(needs: dict[int, set[int]], *, now_minute: int) -> dict[int, dict[int, core.WindowSums]]:
    """{sli id: {window minutes: sums}} over windows ending with `now_minute`, from hour rows for the
    whole hours and minute rows for the ends: two queries per set of windows, however long they are."""
    out: dict[int, dict[int, core.WindowSums]] = {sli_id: {} for sli_id in needs}
    by_windows: dict[frozenset, list[int]] = {}
    for sli_id, windows in needs.items():
        by_windows.setdefault(frozenset(windows), []).append(sli_id)
    for windows, sli_ids in by_windows.items():
        hour_conditions, minute_conditions = {}, {}
        hour_low, minute_ranges = None, set()
        for w in windows:
            hours, edges = _split(now_minute - w + 1, now_minute)
            if hours is not None:
                hour_conditions[w] = Q(start__gte=hours[0] * 60, start__lt=hours[1] * 60)
                hour_low = hours[0] if hour_low is None else min(hour_low, hours[0])
            minute_conditions[w] = Q()
            for a, b in edges:
                minute_conditions[w] |= Q(start__gte=a, start__lte=b)
                minute_ranges.add((a, b))
        found = []
        if hour_conditions:
            found.append(_sums(SliRollup.objects.filter(sli_id__in=sli_ids, width=60, start__gte=hour_low * 60,
                                                        start__lte=now_minute), hour_conditions))
        if minute_ranges:
            span = Q()
            for a, b in minute_ranges:
                span |= Q(start__gte=a, start__lte=b)
            found.append(_sums(SliRollup.objects.filter(span, sli_id__in=sli_ids, width=1),
                               {w: c for w, c in minute_conditions.items() if c}))
        for sli_id in sli_ids:
            for w in windows:
                sums = out[sli_id].setdefault(w, core.WindowSums())
                for rows in found:
                    row = rows.get(sli_id)
                    if row is not None and f"good_{w}" in row:
                        sums.add(row[f"good_{w}"], row[f"total_{w}"], row[f"value_sum_{w}"])
    return out


def window_hist(sli_id: int, *, minutes: int, now_minute: int) -> dict:
    """The merged value histogram of one SLI over a window (for quantile rules)."""
    hours, edges = _split(now_minute - minutes + 1, now_minute)
    where = Q()
    for a, b in edges:
        where |= Q(width=1, start__gte=a, start__lte=b)
    if hours is not None:
        where |= Q(width=60, start__gte=hours[0] * 60, start__lt=hours[1] * 60)
    hist: dict[int, int] = {}
    for row in SliRollup.objects.filter(where, sli_id=sli_id).values_list("hist", flat=True):
        core.hist_merge(hist, row)
    return hist


def window_examples(sli_id: int, *, minutes: int, now_minute: int, limit: int = 5) -> list[list[str]]:
    """A few bad events of the window, newest first: what an alert links to."""
    first = now_minute - min(minutes, 24 * 60) + 1
    examples: list[list[str]] = []
    for row in (SliRollup.objects.filter(sli_id=sli_id, width=1, start__gte=first, start__lte=now_minute)
                .exclude(examples=[]).order_by("-start").values_list("examples", flat=True)[:limit]):
        for example in row:
            if example not in examples:
                examples.append(example)
    return examples[:limit]


def sli_series(sli_id: int, *, first: int, last: int, bucket_minutes: int) -> list[dict]:
    """[{start (minute), good, total, value_sum, hist}] per bucket from `first` to `last` minutes, for charts.
    Buckets of an hour or more read hour rows."""
    width = 60 if bucket_minutes >= 60 and bucket_minutes % 60 == 0 else 1
    low = first // width * width
    buckets: dict[int, core.WindowSums] = {}
    for start, good, total, value_sum, hist in SliRollup.objects.filter(
            sli_id=sli_id, width=width, start__gte=low, start__lte=last).values_list(
            "start", "good", "total", "value_sum", "hist"):
        at = start - (start - first) % bucket_minutes
        buckets.setdefault(at, core.WindowSums()).add(good, total, value_sum, hist)
    return [{"start": at, "good": s.good, "total": s.total, "value_sum": s.value_sum, "hist": s.hist}
            for at, s in sorted(buckets.items())]


# --- lists ---------------------------------------------------------------------------------------------


def slos_for_project(*, project):
    return Slo.objects.filter(project=project).select_related("sli").order_by("name")


def slo_for_user(*, user, slo_id: int) -> Slo | None:
    return Slo.objects.filter(pk=slo_id, project__in=projects_for_user(user=user)).select_related("sli", "project").first()


def rules_for_project(*, project):
    return AlertRule.objects.filter(project=project).select_related("sli").order_by("name")


def rule_for_user(*, user, rule_id: int) -> AlertRule | None:
    return AlertRule.objects.filter(pk=rule_id, project__in=projects_for_user(user=user)).select_related(
        "sli", "project").first()


def alerts_for_project(*, project, state: str = "", fingerprint: str = ""):
    alerts = Alert.objects.filter(project=project).select_related("acknowledged_by", "slo", "rule")
    if state:
        alerts = alerts.filter(state=state)
    else:
        alerts = alerts.exclude(state=Alert.State.INACTIVE)
    if fingerprint:
        alerts = alerts.filter(fingerprint=fingerprint)
    return alerts.order_by("-changed_at", "-id")


def alert_for_user(*, user, alert_id: int) -> Alert | None:
    return Alert.objects.filter(pk=alert_id, project__in=projects_for_user(user=user)).select_related("project").first()


def silences_for_project(*, project, include_expired: bool = True):
    silences = Silence.objects.filter(project=project).select_related("created_by")
    if not include_expired:
        silences = silences.filter(ends_at__gt=timezone.now())
    return silences.order_by("-ends_at", "-id")


def silence_for_user(*, user, silence_id: int) -> Silence | None:
    return Silence.objects.filter(pk=silence_id, project__in=projects_for_user(user=user)).select_related("project").first()


def active_silences(*, project_id: int, now: datetime) -> list[tuple[Silence, list[Matcher]]]:
    return [(s, [Matcher(**m) for m in s.matchers])
            for s in Silence.objects.filter(project_id=project_id, starts_at__lte=now, ends_at__gt=now)]


def silence_of(labels: dict, silences: list[tuple[Silence, list[Matcher]]]) -> Silence | None:
    return next((s for s, matchers in silences if silenced(matchers, labels)), None)


def channels_for_project(*, project):
    return Channel.objects.filter(project=project).order_by("name", "id")


def channel_for_user(*, user, channel_id: int) -> Channel | None:
    return Channel.objects.filter(pk=channel_id, project__in=projects_for_user(user=user)).select_related("project").first()


# --- the live preview of an SLI that is not saved yet ---------------------------------------------------------

PREVIEW_MAX_SPANS = 200_000


def sli_preview(*, project, spec: dict, hours: int = 72, now: datetime | None = None) -> dict:
    """The SLI per hour over the last `hours`, counted from the stored events themselves (it has no
    rollups yet), newest first up to PREVIEW_MAX_SPANS spans."""
    from governance.slo import rollups

    sli = core.Sli.parse(spec)
    now = now or timezone.now()
    last = minute_of(now)
    first = last - hours * 60 + 1
    counts: dict[int, core.MinuteCounts] = {}
    truncated, scanned = False, 0
    if sli.kind.source == "spans":
        fields = rollups.SPAN_FIELDS + (("attributes", "resource_attributes") if sli.needs_attributes else ())
        rows = list(Span.objects.filter(project=project, start_ns__gte=first * core.NS_PER_MINUTE)
                    .order_by("-start_ns").values_list(*fields)[:PREVIEW_MAX_SPANS + 1])
        truncated = len(rows) > PREVIEW_MAX_SPANS
        spans = [core.SliSpan(*row) for row in rows[:PREVIEW_MAX_SPANS]]
        scanned = len(spans)
        if spans:
            first = max(first, minute_of_ns(spans[-1].start_ns)) if truncated else first
        if sli.kind.name == "recovery":
            counts = core.recoveries(sli, spans, horizon_ns=settings.SLI_RECOVERY_HORIZON_MINUTES * core.NS_PER_MINUTE)
        else:
            duplicates = rollups.duplicate_spans(project.pk, {s.idempotency_key for s in spans if s.idempotency_key}) \
                if sli.kind.name == "idempotency" else set()
            counts = {m: c for (_, m), c in core.rollup({0: sli}, spans=spans, duplicates=duplicates).items()}
    else:
        counts = {m: c for (_, m), c in rollups.count_minutes(project.pk, {0: sli}, first, last).items()}
    buckets: dict[int, core.WindowSums] = {}
    for minute, c in counts.items():
        if first <= minute <= last:
            buckets.setdefault(minute - (minute - first) % 60, core.WindowSums()).add(c.good, c.total, c.value_sum, c.hist)
    series = []
    for start in range(first, last + 1, 60):
        s = buckets.get(start, core.WindowSums())
        series.append({"start": datetime.fromtimestamp(start * 60, tz=UTC), "good": s.good, "total": s.total,
                       "ratio": core.metric_value("good_ratio", s, 60),
                       "p95": core.metric_value("p95", s, 60) if sli.kind.values else None})
    return {"sli": sli.document(), "description": sli.describe(), "buckets": series, "truncated": truncated,
            "spans_scanned": scanned, "since": datetime.fromtimestamp(first * 60, tz=UTC)}


def minute_of_ns(ns: int) -> int:
    return ns // core.NS_PER_MINUTE
