"""Error budgets and multiwindow, multi-burn-rate alerts (Google SRE Workbook, "Alerting on SLOs").

An SLO promises that a share `objective` of events is good over a rolling window. Its error
budget is the share 1 - objective of bad events that window may hold. The burn rate over
any shorter window is how fast that window spends the budget:

    burn rate = (bad / total over the window) / (1 - objective)

A burn rate of 1 spends exactly the budget by the end of the SLO window; 14.4 over one
hour of a 30-day window spends 14.4 / 720 = 2 % of it. The Workbook's recommended alerts
for a 30-day window pair a long window with a short one (1/12 of it) and fire when the
burn rate is above the factor over both: the long window says the budget is really being
spent, the short one that it still is (so the alert resets minutes after the errors stop).

    tier        severity  long  short  factor  budget spent when it fires
    page-fast   page      1h    5m     14.4    2 %
    page-slow   page      6h    30m    6       5 %
    ticket      ticket    3d    6h     1       10 %

Other SLO windows scale both windows by window / 30 days, so each tier still fires at the
same share of the budget (28 days: 56m/5m, 5h36m/28m, 2d16h48m/5h36m). Windows are whole
minutes, as the rollups are, and at least one minute.

Plain Python, no Django import.
"""

from __future__ import annotations

from dataclasses import dataclass

BASE_WINDOW_SECONDS = 30 * 86400
MIN_WINDOW_SECONDS = 3600
MAX_WINDOW_SECONDS = 90 * 86400


@dataclass(frozen=True)
class Tier:
    name: str
    severity: str
    long_seconds: int  # for a 30-day SLO window
    short_seconds: int
    factor: float

    @property
    def budget_share(self) -> float:
        """The share of the budget spent when the alert fires (2 % for page-fast)."""
        return budget_spent_share(self.factor, self.long_seconds, BASE_WINDOW_SECONDS)


TIERS = (
    Tier("page-fast", "page", 3600, 300, 14.4),
    Tier("page-slow", "page", 6 * 3600, 1800, 6.0),
    Tier("ticket", "ticket", 3 * 86400, 6 * 3600, 1.0),
)
TIER_BY_NAME = {tier.name: tier for tier in TIERS}


def default_tiers() -> dict:
    """The tier settings an SLO starts with: all on, the Workbook's factors, no `for`."""
    return {t.name: {"enabled": True, "factor": t.factor, "for_seconds": 0} for t in TIERS}


def tiers_clean(raw) -> dict:
    """Tier settings as given (a subset may be given; the rest keep their defaults), checked."""
    tiers = default_tiers()
    if raw is None:
        return tiers
    if not isinstance(raw, dict):
        raise ValueError("tiers must be an object keyed by tier name (page-fast, page-slow, ticket)")
    for name, settings in raw.items():
        if name not in tiers:
            raise ValueError(f"unknown tier {name!r}: the tiers are {', '.join(TIER_BY_NAME)}")
        if isinstance(settings, bool):
            settings = {"enabled": settings}
        if not isinstance(settings, dict):
            raise ValueError(f"tier {name}: give {{enabled, factor, for_seconds}} or true/false")
        unknown = set(settings) - {"enabled", "factor", "for_seconds"}
        if unknown:
            raise ValueError(f"tier {name}: unknown setting {min(unknown)!r} (enabled, factor, for_seconds)")
        if "enabled" in settings:
            if not isinstance(settings["enabled"], bool):
                raise ValueError(f"tier {name}: enabled must be true or false")
            tiers[name]["enabled"] = settings["enabled"]
        if "factor" in settings:
            factor = settings["factor"]
            if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not 0 < factor <= 1000:
                raise ValueError(f"tier {name}: factor must be a burn rate above 0 and at most 1000")
            tiers[name]["factor"] = float(factor)
        if "for_seconds" in settings:
            for_seconds = settings["for_seconds"]
            if isinstance(for_seconds, bool) or not isinstance(for_seconds, int) or not 0 <= for_seconds <= 86400:
                raise ValueError(f"tier {name}: for_seconds must be whole seconds from 0 to 86400")
            tiers[name]["for_seconds"] = for_seconds
    return tiers


def check_objective(objective) -> float:
    if isinstance(objective, bool) or not isinstance(objective, (int, float)) or not 0 < objective < 1:
        raise ValueError("objective must be a share between 0 and 1 (exclusive), e.g. 0.999 for 99.9 %")
    return float(objective)


def check_window(seconds: int) -> int:
    if not MIN_WINDOW_SECONDS <= seconds <= MAX_WINDOW_SECONDS:
        raise ValueError("an SLO's rolling window is from 1h to 90d")
    if seconds % 60:
        raise ValueError("an SLO's window is whole minutes")
    return seconds


def scaled_minutes(seconds_at_30d: int, window_seconds: int) -> int:
    """A tier window for an SLO window of `window_seconds`, in whole minutes (at least one)."""
    return max(1, round(seconds_at_30d * window_seconds / BASE_WINDOW_SECONDS / 60))


def tier_windows(tier: Tier, window_seconds: int) -> tuple[int, int]:
    """(long, short) window of a tier, in minutes, for this SLO window."""
    return scaled_minutes(tier.long_seconds, window_seconds), scaled_minutes(tier.short_seconds, window_seconds)


def error_ratio(good: float, total: float) -> float | None:
    """Bad events over all events; None when there were none (no data is not an error)."""
    if total <= 0:
        return None
    return (total - good) / total


def burn_rate(good: float, total: float, objective: float) -> float:
    """How fast a window spends the error budget; 0 with no events."""
    ratio = error_ratio(good, total)
    return 0.0 if ratio is None else ratio / (1 - objective)


def budget_remaining(good: float, total: float, objective: float) -> float:
    """Share of the window's error budget not yet spent: 1 untouched, 0 spent, below 0 overspent.
    The budget is (1 - objective) of the events the window saw; with none, nothing is spent."""
    if total <= 0:
        return 1.0
    return 1 - (total - good) / ((1 - objective) * total)


def budget_spent_share(factor: float, alert_window_seconds: float, slo_window_seconds: float) -> float:
    """Share of the budget a burn rate spends over an alert window (Workbook: rate x window / period)."""
    return factor * alert_window_seconds / slo_window_seconds


def exhaustion_seconds(rate: float, slo_window_seconds: float) -> float:
    """How long a whole budget lasts at a burn rate (30 days at 1, 43.2 minutes at 1000)."""
    return float("inf") if rate <= 0 else slo_window_seconds / rate


def detection_seconds(objective: float, error_ratio_: float, alert_window_seconds: float, factor: float) -> float:
    """How long a constant error ratio takes to fire a burn-rate alert that starts from a clean window
    (Workbook: ((1 - SLO) / error ratio) x alerting window x burn rate)."""
    return (1 - objective) / error_ratio_ * alert_window_seconds * factor


@dataclass(frozen=True)
class TierStatus:
    name: str
    severity: str
    enabled: bool
    factor: float
    long_minutes: int
    short_minutes: int
    long_rate: float
    short_rate: float

    @property
    def active(self) -> bool:
        """Both windows burn faster than the factor (the Workbook's AND of the pair)."""
        return self.enabled and self.long_rate > self.factor and self.short_rate > self.factor

    def as_dict(self) -> dict:
        return {"name": self.name, "severity": self.severity, "enabled": self.enabled, "factor": self.factor,
                "long_minutes": self.long_minutes, "short_minutes": self.short_minutes,
                "long_rate": round(self.long_rate, 6), "short_rate": round(self.short_rate, 6),
                "active": self.active}


@dataclass(frozen=True)
class SloStatus:
    good: float
    total: float
    sli: float | None  # good / total over the SLO window
    budget_remaining: float
    tiers: tuple[TierStatus, ...]

    def as_dict(self) -> dict:
        return {"good": self.good, "total": self.total, "sli": self.sli,
                "budget_remaining": round(self.budget_remaining, 6), "tiers": [t.as_dict() for t in self.tiers]}


def windows_needed(window_seconds: int) -> set[int]:
    """Every window (minutes) an SLO's evaluation reads: the SLO window and each tier's pair."""
    minutes = {window_seconds // 60}
    for tier in TIERS:
        minutes.update(tier_windows(tier, window_seconds))
    return minutes


def slo_status(*, objective: float, window_seconds: int, tiers: dict, sums: dict[int, tuple[float, float]]) -> SloStatus:
    """The SLO's state from (good, total) summed over each window it needs (`sums[minutes]`)."""
    good, total = sums[window_seconds // 60]
    statuses = []
    for tier in TIERS:
        settings = tiers.get(tier.name, {})
        long_m, short_m = tier_windows(tier, window_seconds)
        statuses.append(TierStatus(
            name=tier.name, severity=tier.severity, enabled=settings.get("enabled", True),
            factor=settings.get("factor", tier.factor), long_minutes=long_m, short_minutes=short_m,
            long_rate=burn_rate(*sums[long_m], objective), short_rate=burn_rate(*sums[short_m], objective)))
    return SloStatus(good=good, total=total, sli=None if total <= 0 else good / total,
                     budget_remaining=budget_remaining(good, total, objective), tiers=tuple(statuses))
