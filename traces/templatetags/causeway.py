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


@register.filter
def seconds_text(seconds):
    """A wait as people say it: "4 s", "2 min 5 s", "3 h 20 min"."""
    seconds = round(seconds or 0)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min" + (f" {seconds % 60} s" if seconds % 60 else "")
    return f"{seconds // 3600} h" + (f" {seconds % 3600 // 60} min" if seconds % 3600 // 60 else "")
