"""What the overview shows, each figure one bounded query.

Every query is an aggregate over an index range: spans of the last hour by (project, start_ns),
findings of the last week, violations of the last day by (project, start_ns), SLOs' stored
statuses (computed by the evaluation tick, not here), firing alerts by (project, state). None
scans a project's whole history, so the page costs the same at 10 million spans as at 10 thousand.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from django.db.models import BigIntegerField, Count, ExpressionWrapper, F, Max, Q

from governance.slo.models import Alert, Slo
from policies.models import Violation
from traces.models import Finding, Span
from traces.selectors import ns_of

NS_PER_MINUTE = 60 * 10**9
NS_PER_DAY = 24 * 60 * NS_PER_MINUTE
ACTIVITY_MINUTES = 60
TREND_DAYS = 7
VIOLATION_HOURS = 24


@dataclass
class AgentSeen:
    name: str
    service: str
    versions: dict[str, int] = field(default_factory=dict)  # service.version -> spans in the last hour
    spans: int = 0
    last_minute: int = 0


@dataclass
class Activity:
    per_minute: dict[int, int]  # minute since 1970 -> spans that started in it
    agents: list[AgentSeen]
    first_minute: int
    last_minute: int


def span_activity(*, project, now: datetime) -> Activity:
    """Spans per minute and the agents (with their versions) of the last hour, from one range of the
    (project, start_ns) index. Minutes are by the spans' start times, which agents stamp as they send."""
    until = ns_of(now)
    since = until - ACTIVITY_MINUTES * NS_PER_MINUTE
    minute = ExpressionWrapper(F("start_ns") / NS_PER_MINUTE, output_field=BigIntegerField())
    rows = (Span.objects.filter(project=project, start_ns__gte=since, start_ns__lt=until)
            .annotate(minute=minute).values("minute", "agent", "service_name", "service_version")
            .annotate(n=Count("*")).order_by())
    per_minute: dict[int, int] = defaultdict(int)
    agents: dict[tuple[str, str], AgentSeen] = {}
    for row in rows:
        per_minute[row["minute"]] += row["n"]
        name = row["agent"] or row["service_name"] or "(unnamed)"
        seen = agents.setdefault((name, row["service_name"]), AgentSeen(name=name, service=row["service_name"]))
        version = row["service_version"] or "(none)"
        seen.versions[version] = seen.versions.get(version, 0) + row["n"]
        seen.spans += row["n"]
        seen.last_minute = max(seen.last_minute, row["minute"])
    return Activity(per_minute=dict(per_minute), agents=sorted(agents.values(), key=lambda a: (a.name, a.service)),
                    first_minute=since // NS_PER_MINUTE, last_minute=(until - 1) // NS_PER_MINUTE)


@dataclass
class FindingKindRow:
    kind: str
    open: int
    per_day: list[int]  # new findings on each of the last TREND_DAYS days, oldest first

    @property
    def last_day(self) -> int:
        return self.per_day[-1]

    @property
    def change(self) -> int:
        """New findings in the last day against the day before."""
        return self.per_day[-1] - self.per_day[-2]


def findings_by_kind(*, project, now: datetime) -> list[FindingKindRow]:
    """Open findings per kind, and how many of each kind were found in each of the last TREND_DAYS periods
    of 24 hours ending now (by the time of the earliest span involved)."""
    open_counts = dict(Finding.objects.filter(project=project, status=Finding.Status.OPEN)
                       .values_list("kind").annotate(n=Count("*")).order_by())
    until = ns_of(now)
    days_ago = ExpressionWrapper((until - F("first_ns")) / NS_PER_DAY, output_field=BigIntegerField())
    per_day: dict[str, list[int]] = defaultdict(lambda: [0] * TREND_DAYS)
    for kind, ago, n in (Finding.objects.filter(project=project, first_ns__gt=until - TREND_DAYS * NS_PER_DAY,
                                                first_ns__lte=until)
                         .exclude(status=Finding.Status.WITHDRAWN).annotate(ago=days_ago)
                         .values_list("kind", "ago").annotate(n=Count("*")).order_by()):
        if 0 <= ago < TREND_DAYS:
            per_day[kind][TREND_DAYS - 1 - ago] += n
    kinds = sorted(set(open_counts) | set(per_day), key=lambda k: (-open_counts.get(k, 0), k))
    return [FindingKindRow(kind=k, open=open_counts.get(k, 0), per_day=list(per_day[k])) for k in kinds]


def trend_days(*, now: datetime) -> list[datetime]:
    """The end of each 24-hour period of the trend, oldest first."""
    return [now - timedelta(days=TREND_DAYS - 1 - i) for i in range(TREND_DAYS)]


@dataclass
class SloRow:
    slo: Slo
    word: str  # ok, burning, exhausted, no data
    budget_pct: float | None
    burn_rate: float | None  # the highest long-window burn rate over the enabled alert tiers
    burn_tier: str


def slo_rows(*, project) -> list[SloRow]:
    """Each SLO with what its last evaluation found (the tick stores it on the SLO): budget left and burn,
    the ones that need a person first."""
    rows = []
    for slo in Slo.objects.filter(project=project).only("id", "name", "display_name", "status").order_by("name"):
        status = slo.status or {}
        tiers = [t for t in status.get("tiers", []) if t.get("enabled")]
        hottest = max(tiers, key=lambda t: t.get("long_rate") or 0.0, default=None)
        if not status or not status.get("total"):
            word = "no data"
        elif any(t.get("active") for t in tiers):
            word = "burning"
        else:
            word = "exhausted" if status.get("budget_remaining", 1) <= 0 else "ok"
        rows.append(SloRow(slo=slo, word=word,
                           budget_pct=None if not status else 100 * status.get("budget_remaining", 0),
                           burn_rate=hottest.get("long_rate") if hottest else None,
                           burn_tier=hottest.get("name", "") if hottest else ""))
    order = {"burning": 0, "exhausted": 1, "ok": 2, "no data": 3}
    return sorted(rows, key=lambda r: (order[r.word], r.slo.name))


def firing_alerts(*, project, limit: int = 10) -> tuple[int, list[Alert]]:
    qs = Alert.objects.filter(project=project, state=Alert.State.FIRING)
    return qs.count(), list(qs.select_related("slo", "rule").order_by("-fired_at", "-id")[:limit])


def violations_by_policy(*, project, now: datetime) -> list[dict]:
    """[{policy_id, name, count, enforced, last_ns}] over the last VIOLATION_HOURS, most first."""
    since = ns_of(now - timedelta(hours=VIOLATION_HOURS))
    return list(Violation.objects.filter(project=project, start_ns__gte=since)
                .values("policy_id", "policy__name")
                .annotate(count=Count("*"), enforced=Count("id", filter=Q(enforced=True)), last_ns=Max("start_ns"))
                .order_by("-count", "policy__name")[:20])
