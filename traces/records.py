"""Plain span records shared by ingest, analysis, policies and the CLI.

No Django import: the analysis cores and `check_traces` use these records
without a database.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

# OTLP enum values, as they travel on the wire.
KIND_UNSPECIFIED, KIND_INTERNAL, KIND_SERVER, KIND_CLIENT, KIND_PRODUCER, KIND_CONSUMER = range(6)
KIND_NAMES = ("unspecified", "internal", "server", "client", "producer", "consumer")
STATUS_UNSET, STATUS_OK, STATUS_ERROR = range(3)
STATUS_NAMES = ("unset", "ok", "error")


@dataclass(slots=True, frozen=True)
class Link:
    trace_id: str  # 32 lowercase hex
    span_id: str  # 16 lowercase hex
    attributes: dict = field(default_factory=dict)


@dataclass(slots=True)
class SpanRecord:
    """One span with the spec's derived identities already resolved.

    `agent`, `chain` and `clock` follow spec v1 "Who did it":
    - agent: gen_ai.agent.id (span, else resource), else gen_ai.agent.name
      (span, else resource), else "service.name/service.instance.id".
    - chain (program order): "instance#thread" when both are present, else the
      instance, else "agent:<agent>".
    - clock (one process clock): the instance, else "agent:<agent>".
    """

    trace_id: str
    span_id: str
    parent_span_id: str  # "" for a root span
    name: str
    kind: int
    start_ns: int
    end_ns: int
    status_code: int = STATUS_UNSET
    status_message: str = ""
    service_name: str = ""
    service_version: str = ""
    instance_id: str = ""
    agent: str = ""
    thread_id: str = ""
    chain: str = ""
    clock: str = ""
    # spec v1 concurrency attributes
    state_key: str = ""
    state_op: str = ""  # "read" | "write" | ""
    state_version: int | None = None
    state_base_version: int | None = None
    state_conflict: bool = False
    idempotency_key: str = ""
    idempotency_outcome: str = ""  # "executed" | "deduplicated" | ""
    lock_name: str = ""
    lock_fencing_token: int | None = None
    # kept whole
    attributes: dict = field(default_factory=dict)
    events: list = field(default_factory=list)  # [{"name", "time_ns", "attributes"}]
    links: tuple[Link, ...] = ()
    resource_attributes: dict = field(default_factory=dict)
    scope_name: str = ""
    scope_version: str = ""
    resource_schema_url: str = ""
    scope_schema_url: str = ""

    @property
    def duration_ns(self) -> int:
        return self.end_ns - self.start_ns

    @property
    def is_error(self) -> bool:
        return self.status_code == STATUS_ERROR

    @property
    def write_took_effect(self) -> bool:
        return self.state_op == "write" and not self.state_conflict and not self.is_error


def _first_str(*values) -> str:
    for value in values:
        if value not in (None, ""):
            return str(value)
    return ""


_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def as_int(value) -> int | None:
    """An int attribute as agents send it: int, or a numeric string from OTLP/JSON; None when it is not one, or is
    outside the signed 64 bits that OTLP's intValue and the typed columns hold."""
    if isinstance(value, bool):
        return None
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    elif isinstance(value, str):
        try:
            value = int(value.strip())
        except ValueError:
            return None
    if isinstance(value, int) and _INT64_MIN <= value <= _INT64_MAX:
        return value
    return None


def as_bool(value) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, str):
        return value.strip().lower() == "true"
    return False


def derive_identity(attributes: dict, resource: dict) -> tuple[str, str, str, str, str, str, str]:
    """(service, version, instance, agent, thread, chain, clock) for a span, per spec v1."""
    service = _first_str(resource.get("service.name"))
    version = _first_str(resource.get("service.version"))
    instance = _first_str(resource.get("service.instance.id"))
    agent = _first_str(
        attributes.get("gen_ai.agent.id"),
        resource.get("gen_ai.agent.id"),
        attributes.get("gen_ai.agent.name"),
        resource.get("gen_ai.agent.name"),
    )
    if not agent:
        agent = f"{service}/{instance}" if instance else service
    thread = _first_str(attributes.get("thread.id"))
    chain, clock = chain_and_clock(instance, thread, agent)
    return service, version, instance, agent, thread, chain, clock


def chain_and_clock(instance: str, thread: str, agent: str) -> tuple[str, str]:
    """The program-order chain and the process clock of a span, per spec v1."""
    if instance and thread:
        chain = f"{instance}#{thread}"
    elif instance:
        chain = instance
    else:
        chain = f"agent:{agent}"
    return chain, instance or f"agent:{agent}"


def concurrency_fields(attributes: dict) -> dict:
    """The spec's state/idempotency/lock attributes, typed, as SpanRecord keyword arguments."""
    op = attributes.get("state.op")
    outcome = attributes.get("idempotency.outcome")
    return {
        "state_key": _first_str(attributes.get("state.key")),
        "state_op": op if op in ("read", "write") else "",
        "state_version": as_int(attributes.get("state.version")),
        "state_base_version": as_int(attributes.get("state.base_version")),
        "state_conflict": as_bool(attributes.get("state.conflict")),
        "idempotency_key": _first_str(attributes.get("idempotency.key")),
        "idempotency_outcome": outcome if outcome in ("executed", "deduplicated") else "",
        "lock_name": _first_str(attributes.get("lock.name")),
        "lock_fencing_token": as_int(attributes.get("lock.fencing_token")),
    }


def make_span(
    *,
    trace_id: str,
    span_id: str,
    name: str,
    start_ns: int,
    end_ns: int,
    parent_span_id: str = "",
    kind: int = KIND_INTERNAL,
    status_code: int = STATUS_UNSET,
    status_message: str = "",
    attributes: dict | None = None,
    resource_attributes: dict | None = None,
    events: list | None = None,
    links: tuple[Link, ...] = (),
    scope_name: str = "",
    scope_version: str = "",
    resource_schema_url: str = "",
    scope_schema_url: str = "",
) -> SpanRecord:
    """Build a SpanRecord from raw attributes, deriving identity and concurrency fields."""
    attributes = attributes or {}
    resource_attributes = resource_attributes or {}
    service, version, instance, agent, thread, chain, clock = derive_identity(attributes, resource_attributes)
    return SpanRecord(
        trace_id=trace_id,
        span_id=span_id,
        parent_span_id=parent_span_id,
        name=name,
        kind=kind,
        start_ns=start_ns,
        end_ns=end_ns,
        status_code=status_code,
        status_message=status_message,
        service_name=service,
        service_version=version,
        instance_id=instance,
        agent=agent,
        thread_id=thread,
        chain=chain,
        clock=clock,
        attributes=attributes,
        events=events or [],
        links=tuple(links),
        resource_attributes=resource_attributes,
        scope_name=scope_name,
        scope_version=scope_version,
        resource_schema_url=resource_schema_url,
        scope_schema_url=scope_schema_url,
        **concurrency_fields(attributes),
    )


@contextmanager
def collector_paused() -> Iterator[None]:
    """Python's cyclic garbage collector off while a block builds tens of thousands of records and
    the indexes over them: they hold no cycles, and each collection would only rescan them (a third
    of a finding page's time went to it). Restored as it was, also when the block raises."""
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
