"""check_traces: offline analysis of OTLP files for CI pipelines, as a subprocess like CI runs it."""

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.otlp_builders import export_json, export_request
from traces.records import make_span

ROOT = Path(__file__).resolve().parent.parent
T0 = 1_700_000_000_000_000_000


def access(trace, span, agent, op, version, base=None, start=0, key="order/42"):
    attributes = {"state.key": key, "state.op": op, "state.version": version}
    if base is not None:
        attributes["state.base_version"] = base
    return make_span(trace_id=trace * 32, span_id=span * 16, name=f"{op} {key}", start_ns=T0 + start,
                     end_ns=T0 + start + 1_000, attributes=attributes,
                     resource_attributes={"service.name": "orders", "service.instance.id": f"proc-{agent}",
                                          "gen_ai.agent.id": agent})


LOST_UPDATE = [
    access("a", "1", "A", "read", 3), access("a", "2", "A", "write", 4, base=3, start=2_000),
    access("b", "3", "B", "read", 3), access("b", "4", "B", "write", 5, base=3, start=2_000),
]
WITH_CAS = LOST_UPDATE[:3] + [
    make_span(**{**dict(trace_id="b" * 32, span_id="4" * 16, name="write order/42", start_ns=T0 + 2_000, end_ns=T0 + 3_000),
                 "attributes": {"state.key": "order/42", "state.op": "write", "state.base_version": 3, "state.conflict": True},
                 "resource_attributes": LOST_UPDATE[3].resource_attributes})
]


def check_traces(*args, cwd=None):
    env = {k: v for k, v in os.environ.items() if k not in ("DEBUG", "SECRET_KEY", "DATABASE_URL")}
    env["CAUSEWAY_DATA_DIR"] = str(Path(cwd or "/tmp") / "cw-data")
    return subprocess.run([sys.executable, str(ROOT / "manage.py"), "check_traces", *map(str, args)],
                          capture_output=True, text=True, env=env, timeout=120)


def test_it_exits_1_and_prints_the_spec_example_as_one_lost_update_in_json(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(export_json(LOST_UPDATE)))
    result = check_traces("--format", "json", tmp_path / "run.json", cwd=tmp_path)
    assert result.returncode == 1, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert rows == [{
        "kind": "lost_update", "key": "order/42", "trace_ids": ["a" * 32, "b" * 32],
        "span_ids": ["2" * 16, "4" * 16], "agents": ["A", "B"], "detail": rows[0]["detail"],
    }]
    assert rows[0]["detail"]


def test_it_exits_0_when_compare_and_set_prevented_the_loss(tmp_path):
    (tmp_path / "run.binpb").write_bytes(export_request(WITH_CAS).SerializeToString())
    result = check_traces(tmp_path / "run.binpb", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert result.stdout == ""


def test_it_reads_directories_recursively_with_every_format(tmp_path):
    nested = tmp_path / "a" / "b"
    nested.mkdir(parents=True)
    (tmp_path / "a" / "one.binpb").write_bytes(export_request(LOST_UPDATE[:2]).SerializeToString())
    lines = [json.dumps(export_json([span])) for span in LOST_UPDATE[2:]]
    (nested / "two.jsonl").write_text("\n".join(lines) + "\n")
    (nested / "ignored.txt").write_text("not otlp")
    result = check_traces("--format", "json", tmp_path, cwd=tmp_path)
    assert result.returncode == 1
    assert [json.loads(line)["kind"] for line in result.stdout.splitlines()] == ["lost_update"]


def test_it_reads_gzip_compressed_files(tmp_path):
    (tmp_path / "run.json.gz").write_bytes(gzip.compress(json.dumps(export_json(LOST_UPDATE)).encode()))
    assert check_traces(tmp_path / "run.json.gz", cwd=tmp_path).returncode == 1


@pytest.mark.parametrize("name, content, message", [
    ("broken.json", b"{not json", "not valid JSON"),
    ("broken.binpb", b"\xff\xff\xff", "not a protobuf"),
    ("broken.jsonl", b'{"resourceSpans": []}\n[1, 2]\n', "line 2"),
])
def test_it_exits_2_naming_the_file_it_cannot_read(tmp_path, name, content, message):
    (tmp_path / name).write_bytes(content)
    result = check_traces(tmp_path / name, cwd=tmp_path)
    assert result.returncode == 2
    assert name in result.stderr and message in result.stderr


def test_it_exits_2_for_a_missing_path(tmp_path):
    result = check_traces(tmp_path / "nowhere.json", cwd=tmp_path)
    assert result.returncode == 2 and "no such file" in result.stderr


def test_it_prints_readable_text_by_default(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(export_json(LOST_UPDATE)))
    result = check_traces(tmp_path / "run.json", cwd=tmp_path)
    assert result.stdout.startswith("lost_update order/42:")
    assert "1 finding(s)" in result.stderr


def test_a_skewed_clock_is_flagged_only_beyond_the_tolerance(tmp_path):
    resource_a = {"service.name": "caller", "service.instance.id": "proc-a"}
    resource_b = {"service.name": "tool", "service.instance.id": "proc-b"}
    parent = make_span(trace_id="c" * 32, span_id="1" * 16, name="call tool", kind=3, start_ns=T0, end_ns=T0 + 10**9,
                       resource_attributes=resource_a)
    # The server's clock runs 200 ms behind: its span seems to start before its caller's.
    child = make_span(trace_id="c" * 32, span_id="2" * 16, parent_span_id="1" * 16, name="serve", kind=2,
                      start_ns=T0 - 200_000_000, end_ns=T0 + 500_000_000, resource_attributes=resource_b)
    (tmp_path / "skew.json").write_text(json.dumps(export_json([parent, child])))
    flagged = check_traces("--format", "json", tmp_path / "skew.json", cwd=tmp_path)
    assert flagged.returncode == 1
    assert [json.loads(line)["kind"] for line in flagged.stdout.splitlines()] == ["causality_violation"]
    tolerated = check_traces("--skew-tolerance-ms", "250", tmp_path / "skew.json", cwd=tmp_path)
    assert tolerated.returncode == 0


SINGLE_WRITER = """\
policy: orders-ownership
rules:
  - id: order-owner
    kind: single_writer
    key: "order/*"
    writer: A
"""


def test_it_evaluates_a_policy_file_alongside_the_findings(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(export_json(LOST_UPDATE)))
    (tmp_path / "policy.yaml").write_text(SINGLE_WRITER)
    result = check_traces("--format", "json", "--policy", tmp_path / "policy.yaml", tmp_path / "run.json", cwd=tmp_path)
    assert result.returncode == 1
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["kind"] for r in rows] == ["lost_update", "policy_violation"]
    violation = rows[1]
    assert violation["policy"] == "orders-ownership" and violation["rule"] == "order-owner"
    assert violation["span_ids"] == ["4" * 16] and violation["agents"] == ["B"]
    assert violation["trace_ids"] == ["b" * 32]


def test_a_clean_run_under_a_policy_exits_0(tmp_path):
    (tmp_path / "run.binpb").write_bytes(export_request(LOST_UPDATE[:2]).SerializeToString())
    (tmp_path / "policy.yaml").write_text(SINGLE_WRITER)
    assert check_traces("--policy", tmp_path / "policy.yaml", tmp_path / "run.binpb", cwd=tmp_path).returncode == 0


def test_a_malformed_policy_file_exits_2_with_its_line(tmp_path):
    (tmp_path / "run.json").write_text(json.dumps(export_json(LOST_UPDATE)))
    (tmp_path / "policy.yaml").write_text(SINGLE_WRITER.replace("single_writer", "single_writter"))
    result = check_traces("--policy", tmp_path / "policy.yaml", tmp_path / "run.json", cwd=tmp_path)
    assert result.returncode == 2
    assert "policy.yaml" in result.stderr and "line 4" in result.stderr
