"""What one simulation run does: plain data, picklable across spawn."""

from __future__ import annotations

from dataclasses import dataclass, field

from .telemetry import ExportConfig

# Each flag injects one bug; the finding (spec v1) it must produce is noted.
BUGS = {
    "no-cas": "writes skip compare-and-set (lost_update)",
    "no-lock": "the ledger is written without taking its lock (write_race)",
    "idempotency-bypass": "the dedup table is ignored, actions execute again (duplicate_side_effect)",
    "stale-cache": "reports read a cache that is never invalidated (stale_read)",
    "double-grant": "the lock service grants a held token a second time (lock_overlap)",
    "clock-skew": "agent-0's process clock runs ahead (causality_violation)",
    "dropped-parent": "one agent step's root span is never exported (orphan_span)",
}
# What a canary with --regression does worse; --regression alone means all of them, so that a
# canary analysis sees it on every metric it compares.
REGRESSIONS = {
    "latency": "tool calls take 20-40 ms longer",
    "errors": "half the tool calls fail (ERROR spans)",
    "conflicts": "every account update first writes on a stale version (compare-and-set conflicts)",
    "duplicates": "the idempotency check is skipped (duplicated side effects)",
}
ALL_REGRESSIONS = "all"

LEDGER_LOCK = "ledger"
LEDGER_KEY = "ledger/total"


def account_key(n: int) -> str:
    return f"account/{n}"


def agent_name(index: int) -> str:
    return f"agent-{index}"


@dataclass(frozen=True)
class SimulationConfig:
    agents: int = 4
    processes: int = 0  # 0: one process per agent
    threads: int = 2
    iterations: int = 20
    keys: int = 4
    seed: int = 1
    bugs: tuple[str, ...] = ()
    canary_version: str = ""
    canary_share: float = 0.3
    regression: str = ""  # "" | one of REGRESSIONS | "all"
    flag_key: str = ""  # set: each agent's version is what OFREP answers for this flag (flags.py)
    ofrep_url: str = ""
    versions: tuple[str, ...] = ()  # the version of each agent, by index, once the flag was evaluated
    think_ms: float = 2.0
    skew_ms: int = 2000
    service_name: str = "causeway-sim-agent"
    service_version: str = "1.0.0"
    run_id: str = ""
    namespace: str = ""  # set: every key, lock and idempotency key of this run is its own
    db_path: str = ""
    export: ExportConfig = field(default_factory=lambda: ExportConfig(mode="file"))

    def __post_init__(self):
        for name in ("agents", "threads", "iterations", "keys"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be at least 1")
        unknown = sorted(set(self.bugs) - set(BUGS))
        if unknown:
            raise ValueError(f"unknown bug(s): {', '.join(unknown)}; choose from {', '.join(BUGS)}")
        if self.regression and self.regression not in (*REGRESSIONS, ALL_REGRESSIONS):
            raise ValueError(f"regression must be one of {', '.join(REGRESSIONS)} or {ALL_REGRESSIONS}")
        if self.regression and not self.canary_version:
            raise ValueError("--regression needs --canary-version")
        if not 0.0 <= self.canary_share <= 1.0:
            raise ValueError("canary share must be between 0 and 1")

    @property
    def process_count(self) -> int:
        return min(self.processes or self.agents, self.agents)

    def scoped(self, name: str) -> str:
        """`name` in this run's namespace: "ledger/total" -> "ledger/<ns>/total", "ledger" -> "ledger/<ns>".

        The namespace goes after the first segment so rules written for "ledger/*" still apply.
        """
        if not self.namespace:
            return name
        head, sep, rest = name.partition("/")
        return f"{head}/{self.namespace}/{rest}" if sep else f"{head}/{self.namespace}"

    def has(self, bug: str) -> bool:
        return bug in self.bugs

    def agents_of_process(self, process_index: int) -> list[int]:
        return [i for i in range(self.agents) if i % self.process_count == process_index]

    def regresses(self, kind: str) -> bool:
        return self.regression in (kind, ALL_REGRESSIONS)

    @property
    def canary_indices(self) -> tuple[int, ...]:
        """The agents on the canary: those the flag gave the canary version, or without a flag the
        last round(share * agents) agents (at least one)."""
        if self.versions:
            return tuple(i for i, version in enumerate(self.versions) if version == self.canary_version)
        if not self.canary_version or self.canary_share <= 0:
            return ()
        n = min(self.agents, max(1, round(self.canary_share * self.agents)))
        return tuple(range(self.agents - n, self.agents))

    def version_of(self, index: int) -> str:
        if self.versions:
            return self.versions[index]
        return self.canary_version if index in self.canary_indices else self.service_version
