"""check_traces: analyse recorded OTLP files offline and fail a CI build on findings.

Exit 0: no findings; 1: findings (or policy violations); 2: an input cannot be read.
"""

from __future__ import annotations

import json
import os
import sys

from django.core.management.base import BaseCommand, CommandError
from tqdm import tqdm

from traces.analysis import analyse
from traces.otlp import OTLP_SUFFIXES, OtlpDecodeError, read_otlp_file, spans_from_request

PROGRESS_BYTES = 8 * 1024 * 1024  # show a progress bar from this much input on


def otlp_files(paths: list[str]) -> list[str]:
    files = []
    for path in paths:
        if os.path.isdir(path):
            for root, dirs, names in os.walk(path):
                dirs.sort()
                files.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(OTLP_SUFFIXES))
        elif os.path.exists(path):
            files.append(path)
        else:
            raise CommandError(f"{path}: no such file or directory", returncode=2)
    return files


def load_spans(files: list[str], progress: bool):
    spans, rejected = [], 0
    with tqdm(total=sum(os.path.getsize(f) for f in files), unit="B", unit_scale=True, file=sys.stderr,
              disable=not progress, desc="reading") as bar:
        for path in files:
            try:
                requests = read_otlp_file(path)
            except (OtlpDecodeError, OSError) as exc:
                raise CommandError(f"{path}: {exc}", returncode=2) from None
            for request in requests:
                batch = spans_from_request(request)
                spans.extend(batch.spans)
                rejected += batch.rejected
            bar.update(os.path.getsize(path))
    return spans, rejected


class Command(BaseCommand):
    help = "Analyse OTLP files (.binpb/.pb, .json, .jsonl; directories recursively) and print concurrency findings."
    requires_system_checks = []

    def add_arguments(self, parser):
        parser.add_argument("paths", nargs="+", metavar="PATH")
        parser.add_argument("--format", choices=["text", "json"], default="text")
        parser.add_argument("--skew-tolerance-ms", type=float, default=50.0,
                            help="clock skew tolerated across process clocks before causality_violation (default 50)")
        parser.add_argument("--policy", action="append", default=[], metavar="FILE",
                            help="also evaluate this policy file (YAML or JSON); repeatable")
        parser.add_argument("--no-progress", action="store_true")

    def handle(self, *args, paths, format, skew_tolerance_ms, policy, no_progress, **options):
        policies = [self._policy(path) for path in policy]
        files = otlp_files(paths)
        if not files:
            raise CommandError("no OTLP files (.binpb, .pb, .json, .jsonl) found in the given paths", returncode=2)
        big = sum(os.path.getsize(f) for f in files) >= PROGRESS_BYTES
        spans, rejected = load_spans(files, progress=big and not no_progress)
        if rejected:
            self.stderr.write(f"warning: {rejected} invalid span(s) skipped")
        rows = [f.as_json() for f in analyse(spans, skew_tolerance_ms=skew_tolerance_ms)]
        for compiled in policies:
            from policies.core import evaluate

            for v in evaluate(compiled, spans):
                rows.append({"kind": "policy_violation", "key": "", "trace_ids": [v.trace_id], "span_ids": [v.span_id],
                             "agents": [v.agent], "detail": v.reason, "rule": v.rule_id, "rule_kind": v.rule_kind,
                             "policy": v.policy})
        for row in rows:
            self.stdout.write(json.dumps(row, sort_keys=False) if format == "json" else self._text(row))
        if format == "text":
            self.stderr.write(f"{len(spans)} spans in {len(files)} file(s): {len(rows)} finding(s)")
        if rows:
            sys.stdout.flush()
            sys.exit(1)

    def _policy(self, path):
        from policies.core import PolicyError, parse_policy

        try:
            with open(path, encoding="utf-8") as handle:
                return parse_policy(handle.read())
        except OSError as exc:
            raise CommandError(f"{path}: {exc.strerror}", returncode=2) from None
        except UnicodeDecodeError:
            raise CommandError(f"{path}: not UTF-8 text", returncode=2) from None
        except PolicyError as exc:
            problems = "; ".join(
                f"line {p.line}, column {p.column}: {p.message}" if p.line else p.message for p in exc.errors
            )
            raise CommandError(f"{path}: {problems}", returncode=2) from None

    @staticmethod
    def _text(row) -> str:
        where = f" {row['key']}" if row["key"] else ""
        rule = f" [{row['policy']}/{row['rule']}]" if row.get("rule") else ""
        return f"{row['kind']}{where}{rule}: {row['detail']} (agents {', '.join(row['agents'])}; spans {', '.join(row['span_ids'])})"
