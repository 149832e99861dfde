"""The documents of docs/ served to signed-in people, so pages can link to the paragraph that
explains them (the finding page links to docs/concurrency.md). Rendered once per process."""

from __future__ import annotations

import re
from functools import lru_cache

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.views.decorators.http import require_GET
from django.http import Http404
from django.shortcuts import render
from django.utils.safestring import mark_safe
from markdown_it import MarkdownIt

DOCS = ("concurrency", "ingest", "policies", "slos")


def heading_anchor(title: str) -> str:
    """The anchor GitHub gives a heading, so links work on GitHub and here alike."""
    return re.sub(r"[^\w\- ]", "", title.strip().lower()).replace(" ", "-")


@lru_cache(maxsize=len(DOCS))
def _rendered(name: str) -> tuple[str, str]:
    text = (settings.BASE_DIR / "docs" / f"{name}.md").read_text()
    md = MarkdownIt("commonmark").enable("table")
    tokens = md.parse(text)
    title = name
    for i, token in enumerate(tokens):
        if token.type == "heading_open":
            inline = tokens[i + 1].content
            token.attrSet("id", heading_anchor(inline))
            if token.tag == "h1":
                title = inline
    return title, md.renderer.render(tokens, md.options, {})


@login_required
@require_GET
def docs_page(request, name):
    if name not in DOCS:
        raise Http404("no such document")
    title, body = _rendered(name)
    return render(request, "docs.html", {"title": title, "body": mark_safe(body)})
