import json
from datetime import UTC, datetime

from django import template

register = template.Library()


@register.filter
def ns_datetime(ns):
    if not ns:
        return ""
    return datetime.fromtimestamp(ns / 1e9, tz=UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


@register.filter
def ns_ms(ns):
    if ns is None:
        return ""
    ms = ns / 1e6
    return f"{ms / 1000:.2f} s" if ms >= 1000 else f"{ms:.2f} ms"


@register.filter
def pretty_json(value):
    return json.dumps(value, indent=2, sort_keys=True, default=str)
