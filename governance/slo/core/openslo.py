"""SLOs as OpenSLO v1 YAML (https://github.com/OpenSLO/OpenSLO), so they can live in git.

Kinds read and written: SLO, SLI, AlertPolicy, AlertCondition. DataSource, Service and
AlertNotificationTarget documents are accepted and skipped (they name things Causeway keeps
elsewhere: its own spans, its services, its channels).

How Causeway's SLOs map:

- The SLI is a `ratioMetric` whose `good` (or `bad`) and `total` sources are both of type
  `Causeway`, with the same spec: `sli` (the SLI kind), `match` (the selector) and, for
  latency and recovery, `threshold_ms`; `events` says which count the source is.
- The window is one rolling `timeWindow` in minutes, hours, days or weeks;
  `budgetingMethod` is `Occurrences`; one objective with `target` or `targetPercent`.
- Each burn-rate tier is an AlertPolicy with one `burnrate` AlertCondition: its
  `lookbackWindow` is the tier's long window for this SLO window (the short window is
  always a twelfth of it, as in the SRE Workbook), `threshold` its burn-rate factor,
  `alertAfter` its `for`, `severity` page or ticket. Tiers no policy names are off.

Plain Python, no Django import.
"""

from __future__ import annotations

import re

import yaml

from .burn import TIERS, check_objective, check_window, default_tiers, tier_windows
from .durations import format_duration, parse_duration
from .sli import Sli, SliError

API_VERSION = "openslo/v1"
SOURCE_TYPE = "Causeway"
SKIPPED_KINDS = ("DataSource", "Service", "AlertNotificationTarget")
NAME = re.compile(r"^[a-z0-9]([-a-z0-9._]{0,98}[a-z0-9])?$")


class OpenSloError(ValueError):
    pass


def check_name(name, *, what: str = "name") -> str:
    if not isinstance(name, str) or not NAME.match(name):
        raise ValueError(f"{what} {name!r}: use lowercase letters, digits, '-', '.' and '_', starting and ending "
                         "with a letter or digit, at most 100 characters")
    return name


def _where(doc: dict, index: int) -> str:
    name = (doc.get("metadata") or {}).get("name") if isinstance(doc, dict) else None
    kind = doc.get("kind") if isinstance(doc, dict) else None
    return f"document {index + 1}" + (f" ({kind} {name})" if kind and name else "")


def _get(obj, path: str, where: str, *, required=True, types=None):
    value = obj
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None and required:
        raise OpenSloError(f"{where}: {path} is missing")
    if value is not None and types is not None and not isinstance(value, types):
        raise OpenSloError(f"{where}: {path} has the wrong type")
    return value


def _labels(metadata: dict, where: str) -> dict[str, str]:
    labels = metadata.get("labels") or {}
    if not isinstance(labels, dict):
        raise OpenSloError(f"{where}: metadata.labels must be a map")
    out = {}
    for key, value in labels.items():
        if isinstance(value, list):
            value = ",".join(str(v) for v in value)
        out[str(key)] = str(value)
    return out


def _sli(doc: dict, where: str) -> dict:
    spec = doc.get("spec") or {}
    if "thresholdMetric" in spec:
        raise OpenSloError(f"{where}: thresholdMetric is not supported: describe the SLI as a ratioMetric of "
                           "Causeway good (or bad) and total events")
    ratio = _get(spec, "ratioMetric", where, types=dict)
    if "raw" in ratio:
        raise OpenSloError(f"{where}: ratioMetric.raw is not supported: give good (or bad) and total")
    numerator = "good" if "good" in ratio else "bad" if "bad" in ratio else None
    if numerator is None or "total" not in ratio:
        raise OpenSloError(f"{where}: ratioMetric needs good (or bad) and total")
    specs = {}
    for part in (numerator, "total"):
        source = _get(ratio, f"{part}.metricSource", where, types=dict)
        if source.get("type") != SOURCE_TYPE:
            raise OpenSloError(f"{where}: ratioMetric.{part}.metricSource.type must be {SOURCE_TYPE} "
                               f"(Causeway computes its SLIs from its own spans)")
        source_spec = dict(_get(source, "spec", where, types=dict))
        events = source_spec.pop("events", part)
        if events != part:
            raise OpenSloError(f"{where}: ratioMetric.{part} counts events: {part}, not {events!r}")
        specs[part] = source_spec
    if specs[numerator] != specs["total"]:
        raise OpenSloError(f"{where}: ratioMetric.{numerator} and total must describe the same Causeway SLI "
                           "(the same sli, match and threshold_ms)")
    definition = {"kind": specs["total"].get("sli"), "match": specs["total"].get("match") or {}}
    if "threshold_ms" in specs["total"]:
        definition["threshold_ms"] = specs["total"]["threshold_ms"]
    extra = set(specs["total"]) - {"sli", "match", "threshold_ms"}
    if extra:
        raise OpenSloError(f"{where}: unknown Causeway source field {min(extra)!r} (sli, match, threshold_ms, events)")
    try:
        sli = Sli.parse(definition)
        sli.check_slo()
    except SliError as exc:
        raise OpenSloError(f"{where}: {exc}") from None
    return sli.document()


def _condition(doc: dict, where: str) -> dict:
    condition = _get(doc, "spec.condition", where, types=dict)
    if condition.get("kind", "burnrate") != "burnrate":
        raise OpenSloError(f"{where}: only burnrate conditions are supported")
    threshold = condition.get("threshold")
    if isinstance(threshold, bool) or not isinstance(threshold, (int, float)):
        raise OpenSloError(f"{where}: spec.condition.threshold must be a number (the burn rate)")
    try:
        lookback = parse_duration(_get(condition, "lookbackWindow", where), what="lookbackWindow")
        after = parse_duration(condition.get("alertAfter", "0m"), what="alertAfter")
    except ValueError as exc:
        raise OpenSloError(f"{where}: {exc}") from None
    return {"severity": _get(doc, "spec.severity", where, types=str), "threshold": float(threshold),
            "lookback_seconds": lookback, "for_seconds": after}


def _inline_or_ref(item, ref_key: str, kind: str, named: dict, where: str) -> tuple[dict, str]:
    if isinstance(item, dict) and ref_key in item:
        ref = item[ref_key]
        if ref not in named:
            raise OpenSloError(f"{where}: {ref_key} {ref!r}: no {kind} document of that name in this upload")
        return named[ref], f"{kind} {ref}"
    if isinstance(item, dict) and "spec" in item:
        name = (item.get("metadata") or {}).get("name", "")
        return item, f"{where}, inline {kind} {name}".rstrip()
    raise OpenSloError(f"{where}: each entry names a {kind} with {ref_key} or defines one inline")


def parse_openslo(text: str) -> tuple[list[dict], list[str]]:
    """The SLOs of an OpenSLO v1 upload (one or more YAML documents), and the documents skipped.

    Each SLO: {name, display_name, description, service, labels, objective, window_seconds,
    sli: {kind, match, threshold_ms?}, tiers}. Raises OpenSloError saying which document is wrong."""
    try:
        docs = [d for d in yaml.safe_load_all(text) if d is not None]
    except yaml.YAMLError as exc:
        raise OpenSloError(f"not YAML: {exc}") from None
    if not docs:
        raise OpenSloError("no documents: send one or more OpenSLO v1 YAML documents")
    named: dict[str, dict[str, dict]] = {"SLI": {}, "AlertPolicy": {}, "AlertCondition": {}}
    slos, skipped = [], []
    for index, doc in enumerate(docs):
        where = _where(doc, index)
        if not isinstance(doc, dict):
            raise OpenSloError(f"{where}: an OpenSLO document is a map with apiVersion, kind, metadata and spec")
        if doc.get("apiVersion") != API_VERSION:
            raise OpenSloError(f"{where}: apiVersion must be {API_VERSION}")
        kind = doc.get("kind")
        name = _get(doc, "metadata.name", where, types=str)
        if kind in SKIPPED_KINDS:
            skipped.append(f"{kind}/{name}")
        elif kind in named:
            if name in named[kind]:
                raise OpenSloError(f"{where}: a second {kind} named {name}")
            named[kind][name] = doc
        elif kind == "SLO":
            slos.append((index, doc))
        else:
            raise OpenSloError(f"{where}: kind must be SLO, SLI, AlertPolicy or AlertCondition "
                               f"({', '.join(SKIPPED_KINDS)} are skipped)")
    if not slos:
        raise OpenSloError("no SLO document in this upload")
    seen = set()
    out = []
    for index, doc in slos:
        where = _where(doc, index)
        slo = _slo(doc, where, named)
        if slo["name"] in seen:
            raise OpenSloError(f"{where}: a second SLO named {slo['name']}")
        seen.add(slo["name"])
        out.append(slo)
    return out, skipped


def _slo(doc: dict, where: str, named: dict) -> dict:
    metadata, spec = doc.get("metadata") or {}, _get(doc, "spec", where, types=dict)
    try:
        name = check_name(metadata.get("name"), what="metadata.name")
    except ValueError as exc:
        raise OpenSloError(f"{where}: {exc}") from None
    if "indicator" in spec:
        indicator, indicator_where = spec["indicator"], f"{where}, inline SLI"
        if not isinstance(indicator, dict):
            raise OpenSloError(f"{indicator_where}: indicator must be a map with metadata and spec")
    elif "indicatorRef" in spec:
        ref = spec["indicatorRef"]
        if ref not in named["SLI"]:
            raise OpenSloError(f"{where}: indicatorRef {ref!r}: no SLI document of that name in this upload")
        indicator, indicator_where = named["SLI"][ref], f"SLI {ref}"
    else:
        raise OpenSloError(f"{where}: give the SLI inline (indicator) or by name (indicatorRef)")
    sli = _sli(indicator, indicator_where)

    windows = _get(spec, "timeWindow", where, types=list)
    if len(windows) != 1 or not isinstance(windows[0], dict):
        raise OpenSloError(f"{where}: timeWindow must hold exactly one window")
    if windows[0].get("isRolling") is not True or "calendar" in windows[0]:
        raise OpenSloError(f"{where}: only rolling windows are supported (isRolling: true)")
    try:
        window_seconds = check_window(parse_duration(_get(windows[0], "duration", where), what="timeWindow duration"))
    except ValueError as exc:
        raise OpenSloError(f"{where}: {exc}") from None
    method = spec.get("budgetingMethod", "Occurrences")
    if method != "Occurrences":
        raise OpenSloError(f"{where}: budgetingMethod must be Occurrences (good events over all events)")

    objectives = _get(spec, "objectives", where, types=list)
    if len(objectives) != 1 or not isinstance(objectives[0], dict):
        raise OpenSloError(f"{where}: give exactly one objective")
    objective = objectives[0]
    if ("target" in objective) == ("targetPercent" in objective):
        raise OpenSloError(f"{where}: the objective needs target or targetPercent (one of them)")
    target = objective.get("target", objective["targetPercent"] / 100 if isinstance(objective.get("targetPercent"), (int, float)) else None)
    try:
        target = check_objective(target)
    except ValueError as exc:
        raise OpenSloError(f"{where}: {exc}") from None

    tiers = {name_: dict(settings, enabled=False) for name_, settings in default_tiers().items()}
    long_of = {t.name: tier_windows(t, window_seconds)[0] for t in TIERS}
    for item in spec.get("alertPolicies") or []:
        policy, policy_where = _inline_or_ref(item, "alertPolicyRef", "AlertPolicy", named["AlertPolicy"], where)
        conditions = _get(policy, "spec.conditions", policy_where, types=list)
        if len(conditions) != 1:
            raise OpenSloError(f"{policy_where}: an AlertPolicy has exactly one condition")
        condition_doc, condition_where = _inline_or_ref(conditions[0], "conditionRef", "AlertCondition",
                                                        named["AlertCondition"], policy_where)
        condition = _condition(condition_doc, condition_where)
        # Short SLO windows can give two tiers the same long window: the severity tells them apart.
        candidates = sorted((t for t in TIERS if long_of[t.name] * 60 == condition["lookback_seconds"]),
                            key=lambda t: (t.severity != condition["severity"], tiers[t.name]["enabled"]))
        tier = candidates[0] if candidates else None
        if tier is None:
            choices = ", ".join(f"{format_duration(long_of[t.name] * 60)} ({t.name})" for t in TIERS)
            raise OpenSloError(f"{condition_where}: lookbackWindow {format_duration(condition['lookback_seconds'])} is "
                               f"not a burn-rate tier of a {format_duration(window_seconds)} SLO: use {choices}")
        if condition["severity"] != tier.severity:
            raise OpenSloError(f"{condition_where}: the {tier.name} tier has severity {tier.severity}, "
                               f"not {condition['severity']!r}")
        if not 0 < condition["threshold"] <= 1000:
            raise OpenSloError(f"{condition_where}: threshold must be a burn rate above 0 and at most 1000")
        if condition["for_seconds"] > 86400:
            raise OpenSloError(f"{condition_where}: alertAfter is at most 1d")
        tiers[tier.name] = {"enabled": True, "factor": condition["threshold"], "for_seconds": condition["for_seconds"]}

    labels = _labels(metadata, where)
    return {"name": name, "display_name": str(metadata.get("displayName") or ""),
            "description": str(spec.get("description") or ""), "service": str(spec.get("service") or ""),
            "labels": labels, "objective": target, "window_seconds": window_seconds, "sli": sli, "tiers": tiers}


def dump_openslo(slos: list[dict]) -> str:
    """OpenSLO v1 YAML for SLOs shaped as parse_openslo returns them: per SLO its SLI, one
    AlertCondition and AlertPolicy per tier that is on, and the SLO."""
    docs = []
    for slo in slos:
        name = slo["name"]
        source = {"sli": slo["sli"]["kind"], "match": slo["sli"].get("match") or {}}
        if slo["sli"].get("threshold_ms") is not None:
            source["threshold_ms"] = slo["sli"]["threshold_ms"]
        docs.append({"apiVersion": API_VERSION, "kind": "SLI", "metadata": {"name": f"{name}-sli"},
                     "spec": {"ratioMetric": {"counter": True,
                                              "good": {"metricSource": {"type": SOURCE_TYPE, "spec": {**source, "events": "good"}}},
                                              "total": {"metricSource": {"type": SOURCE_TYPE, "spec": {**source, "events": "total"}}}}}})
        policies = []
        for tier in TIERS:
            settings = slo["tiers"].get(tier.name) or {}
            if not settings.get("enabled"):
                continue
            long_minutes, short_minutes = tier_windows(tier, slo["window_seconds"])
            condition_name = f"{name}-{tier.name}"
            docs.append({"apiVersion": API_VERSION, "kind": "AlertCondition", "metadata": {"name": condition_name},
                         "spec": {"description": f"burn rate over {settings['factor']:g} on {format_duration(long_minutes * 60)} "
                                                 f"and {format_duration(short_minutes * 60)}",
                                  "severity": tier.severity,
                                  "condition": {"kind": "burnrate", "threshold": settings["factor"],
                                                "lookbackWindow": format_duration(long_minutes * 60),
                                                "alertAfter": format_duration(settings.get("for_seconds", 0))}}})
            docs.append({"apiVersion": API_VERSION, "kind": "AlertPolicy", "metadata": {"name": condition_name},
                         "spec": {"alertWhenBreaching": True, "alertWhenResolved": True, "alertWhenNoData": False,
                                  "conditions": [{"conditionRef": condition_name}]}})
            policies.append({"alertPolicyRef": condition_name})
        metadata = {"name": name}
        if slo.get("display_name"):
            metadata["displayName"] = slo["display_name"]
        if slo.get("labels"):
            metadata["labels"] = dict(slo["labels"])
        spec = {"indicatorRef": f"{name}-sli",
                "timeWindow": [{"duration": format_duration(slo["window_seconds"]), "isRolling": True}],
                "budgetingMethod": "Occurrences", "objectives": [{"target": slo["objective"]}]}
        if slo.get("description"):
            spec["description"] = slo["description"]
        if slo.get("service"):
            spec["service"] = slo["service"]
        if policies:
            spec["alertPolicies"] = policies
        docs.append({"apiVersion": API_VERSION, "kind": "SLO", "metadata": metadata, "spec": spec})
    return yaml.safe_dump_all(docs, sort_keys=False, default_flow_style=False)
