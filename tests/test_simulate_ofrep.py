"""`simulate --flag`: each simulated agent runs the version Causeway's OFREP endpoint gives it.

Against a real gunicorn on the test database; the agents write their spans to files here, decoded
with opentelemetry-proto, so the versions they stamped can be read back.
"""

import io
import os

import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.proto.trace.v1.trace_pb2 import Status

from governance.rollouts.core.assignment import bucket
from tests.conftest import make_key, make_project
from traces.simulator import SimulationError, run_from_options

FLAG = "sim-agents-version"


def make_rollout(project, *, state="progressing", weight=50):
    from governance.rollouts.models import Rollout

    return Rollout.objects.create(project=project, name="sim", service="causeway-sim-agent", flag_key=FLAG,
                                  baseline_version="1.0.0", canary_version="1.1.0", known_good_version="1.0.0",
                                  state=state, weight=weight)


def spans_by_agent(out) -> dict[str, list]:
    spans: dict[str, list] = {}
    for name in sorted(os.listdir(out)):
        request = ExportTraceServiceRequest.FromString((out / name).read_bytes())
        for resource_spans in request.resource_spans:
            resource = {kv.key: kv.value.string_value for kv in resource_spans.resource.attributes}
            for scope in resource_spans.scope_spans:
                spans.setdefault(resource.get("gen_ai.agent.id", "tool"), []).extend(
                    (resource["service.version"], span) for span in scope.spans)
    return spans


def options(**extra):
    return {"agents": 8, "processes": 2, "threads": 1, "iterations": 3, "run_id": "ofrep-test", "flag": FLAG,
            "canary_version": "1.1.0", "no_progress": True, **extra}


def test_each_agent_stamps_the_version_ofrep_gave_it(gunicorn_url, tmp_path):
    project = make_project("Acme")
    make_rollout(project, weight=50)
    out = tmp_path / "out"
    summary = run_from_options(options(endpoint=gunicorn_url, key=make_key(project), output=str(out)),
                               io.StringIO(), io.StringIO())
    expected = {f"agent-{i}": "1.1.0" if bucket(FLAG, f"ofrep-test/agent-{i}") <= 50 else "1.0.0" for i in range(8)}
    assert set(expected.values()) == {"1.0.0", "1.1.0"}  # this run id splits the 8 agents
    assert summary.versions == expected
    stamped = {agent: {version for version, _ in spans} for agent, spans in spans_by_agent(out).items()}
    assert stamped == {**{agent: {version} for agent, version in expected.items()}, "tool": {"1.0.0"}}
    assert summary.canary_agents == tuple(a for a, v in expected.items() if v == "1.1.0")


def test_with_a_regression_only_the_agents_on_the_canary_are_worse(gunicorn_url, tmp_path):
    project = make_project("Acme")
    make_rollout(project, weight=50)
    out = tmp_path / "out"
    run_from_options(options(endpoint=gunicorn_url, key=make_key(project), output=str(out), regression="all"),
                     io.StringIO(), io.StringIO())
    errors = {version for agent, spans in spans_by_agent(out).items() if agent != "tool" for version, span in spans
              if span.status.code == Status.STATUS_CODE_ERROR}
    assert errors == {"1.1.0"}  # the tool's own error spans answer the canary's bad calls


def test_after_a_rollback_every_agent_runs_the_known_good_version(gunicorn_url, tmp_path):
    project = make_project("Acme")
    make_rollout(project, state="rolled_back", weight=50)
    summary = run_from_options(options(endpoint=gunicorn_url, key=make_key(project), output=str(tmp_path / "out")),
                               io.StringIO(), io.StringIO())
    assert set(summary.versions.values()) == {"1.0.0"} and summary.canary_agents == ()


def test_a_flag_no_rollout_has_fails_the_run_saying_so(gunicorn_url, tmp_path):
    project = make_project("Acme")
    with pytest.raises(SimulationError, match="FLAG_NOT_FOUND"):
        run_from_options(options(endpoint=gunicorn_url, key=make_key(project), output=str(tmp_path / "out")),
                         io.StringIO(), io.StringIO())


def test_a_refused_key_fails_the_run_saying_so(gunicorn_url, tmp_path):
    make_rollout(make_project("Acme"))
    with pytest.raises(SimulationError, match="unauthorized"):
        run_from_options(options(endpoint=gunicorn_url, key="cwk_wrong", output=str(tmp_path / "out")),
                         io.StringIO(), io.StringIO())
