"""SLOs, alert rules, alerts, silences and channels through the API: roles, audit, errors, OpenSLO."""

from __future__ import annotations

import pytest
import yaml
from django.core import mail
from django.utils import timezone

from governance.models import AuditRecord, Role
from governance.slo.models import Alert, AlertRule, Channel, Silence, Sli, Slo
from tests.conftest import api_as, make_user

BILLING = {
    "name": "billing-idempotent",
    "display_name": "Billing: idempotent actions",
    "objective": 0.999,
    "window": "28d",
    "labels": {"team": "payments"},
    "sli": {"kind": "idempotency", "match": {"agent": "billing-agent"}},
    "tiers": {"page-slow": {"enabled": False}, "ticket": {"for_seconds": 3600}},
}


@pytest.fixture(autouse=True)
def _at_a_fixed_instant(clock):
    """Silences start and end around the stopped clock."""


@pytest.fixture
def olga(acme):
    """An operator of acme."""
    return make_user("olga", acme, Role.OPERATOR)


def created(client, path, body, project="acme"):
    response = client.post(f"/api/v1/{path}?project={project}", body, format="json")
    assert response.status_code == 201, response.json()
    return response.json()


def test_an_approver_defines_an_slo_with_burn_rate_tiers_and_it_is_audited(alice, acme):
    client = api_as(alice)
    slo = created(client, "slos/", BILLING)
    assert slo["window"] == "28d" and slo["window_seconds"] == 28 * 86400 and slo["objective"] == 0.999
    assert slo["sli"]["kind"] == "idempotency" and slo["sli"]["match"] == {"agent": ["billing-agent"]}
    assert slo["tiers"] == {"page-fast": {"enabled": True, "factor": 14.4, "for_seconds": 0},
                            "page-slow": {"enabled": False, "factor": 6.0, "for_seconds": 0},
                            "ticket": {"enabled": True, "factor": 1.0, "for_seconds": 3600}}
    assert slo["url"] == f"/p/acme/slos/{slo['id']}/"
    listed = client.get("/api/v1/slos/?project=acme").json()
    assert listed["count"] == 1 and listed["results"][0]["name"] == "billing-idempotent"
    assert client.get(f"/api/v1/slos/{slo['id']}/").json()["display_name"] == "Billing: idempotent actions"

    changed = client.put(f"/api/v1/slos/{slo['id']}/", {**BILLING, "objective": 0.995, "window": "7d"}, format="json")
    assert changed.status_code == 200 and changed.json()["objective"] == 0.995 and changed.json()["window"] == "7d"
    assert client.delete(f"/api/v1/slos/{slo['id']}/").status_code == 204
    assert not Slo.objects.exists()
    assert list(AuditRecord.objects.filter(object_type="slo").order_by("id").values_list("action", flat=True)) == [
        "slo.create", "slo.update", "slo.delete"]


def test_slos_with_one_sli_share_it(alice, acme):
    client = api_as(alice)
    created(client, "slos/", BILLING)
    created(client, "slos/", {**BILLING, "name": "billing-idempotent-week", "window": "7d",
                              "sli": {"kind": "idempotency", "match": {"agent": ["billing-agent"]}}})
    assert Sli.objects.count() == 1


def test_viewers_read_operators_respond_and_only_approvers_define(alice, bob, olga, acme):
    slo = created(api_as(alice), "slos/", BILLING)
    assert api_as(bob).get("/api/v1/slos/?project=acme").json()["count"] == 1
    for person in (bob, olga):
        for path, body in [("slos/", {**BILLING, "name": "x"}),
                           ("channels/", {"kind": "webhook", "url": "http://127.0.0.1:9/hook"}),
                           ("alert-rules/", {"name": "r", "sli": {"kind": "success"}, "metric": "bad_ratio",
                                             "op": ">", "threshold": 0.1, "window": "5m"})]:
            response = api_as(person).post(f"/api/v1/{path}?project=acme", body, format="json")
            assert response.status_code == 403, (person, path)
            assert response.json()["error"]["code"] == "permission_denied"
        assert api_as(person).delete(f"/api/v1/slos/{slo['id']}/").status_code == 403
    silence = {"matchers": ["slo=billing-idempotent"], "duration": "1h", "comment": "deploy"}
    assert api_as(bob).post("/api/v1/silences/?project=acme", silence, format="json").status_code == 403
    assert api_as(olga).post("/api/v1/silences/?project=acme", silence, format="json").status_code == 201


def test_other_projects_slos_do_not_exist_for_you(alice, charlie):
    slo = created(api_as(alice), "slos/", BILLING)
    assert api_as(charlie).get(f"/api/v1/slos/{slo['id']}/").status_code == 404
    assert api_as(charlie).get("/api/v1/slos/?project=acme").status_code == 404


@pytest.mark.parametrize(("change", "field", "message"), [
    ({"objective": 1.5}, None, "objective must be a share between 0 and 1"),
    ({"window": "1M"}, "window", "months"),
    ({"window": "10m"}, None, "from 1h to 90d"),
    ({"name": "Billing SLO"}, None, "lowercase letters"),
    ({"sli": {"kind": "speed"}}, "sli", "not a valid choice"),
    ({"sli": {"kind": "findings"}}, None, "a findings SLI is a count"),
    ({"sli": {"kind": "latency", "match": {"name": "charge"}}}, None, "needs threshold_ms"),
    ({"sli": {"kind": "success", "match": {"colour": "red"}}}, "sli", "match.colour: not a selector field"),
    ({"tiers": {"page-medium": {"enabled": True}}}, "tiers", "unknown tier"),
    ({"labels": {"severity": "low"}}, None, "severity is set by Causeway"),
])
def test_a_bad_slo_is_a_400_saying_what_is_wrong(alice, acme, change, field, message):
    response = api_as(alice).post("/api/v1/slos/?project=acme", {**BILLING, **change}, format="json")
    assert response.status_code == 400
    error = response.json()["error"]
    assert message in error["message"]
    if field:
        assert field in error["fields"]
    assert not Slo.objects.exists()


def test_a_taken_name_is_a_409(alice, acme):
    created(api_as(alice), "slos/", BILLING)
    response = api_as(alice).post("/api/v1/slos/?project=acme", BILLING, format="json")
    assert response.status_code == 409 and response.json()["error"]["code"] == "conflict"


def openslo_post(client, text, project="acme", content_type="application/yaml"):
    return client.generic("POST", f"/api/v1/slos/openslo/?project={project}", text.encode(), content_type=content_type)


def test_openslo_yaml_round_trips_through_the_api(alice, acme, charlie, globex):
    client = api_as(alice)
    first = created(client, "slos/", BILLING)
    created(client, "slos/", {**BILLING, "name": "checkout-latency", "objective": 0.99, "window": "7d", "labels": {},
                              "sli": {"kind": "latency", "match": {"name": "checkout"}, "threshold_ms": 300},
                              "tiers": {}})
    exported = client.get("/api/v1/slos/openslo/?project=acme")
    assert exported.status_code == 200 and exported["Content-Type"].startswith("application/yaml")
    text = exported.content.decode()
    kinds = [d["kind"] for d in yaml.safe_load_all(text)]
    assert kinds.count("SLO") == 2 and kinds.count("SLI") == 2 and "AlertPolicy" in kinds and "AlertCondition" in kinds

    # Into another project, as a team keeping its SLOs in git would.
    imported = openslo_post(api_as(charlie), text, project="globex")
    assert imported.status_code == 200, imported.json()
    assert len(imported.json()["ids"]) == 2 and len(imported.json()["created"]) == 2
    assert api_as(charlie).get("/api/v1/slos/openslo/?project=globex").content.decode() == text

    # Again into its own project: nothing changes; an edited objective updates that SLO alone.
    again = openslo_post(client, text).json()
    assert again["unchanged"] == again["ids"] and again["created"] == again["updated"] == []
    edited = openslo_post(client, text.replace("target: 0.999", "target: 0.9995")).json()
    assert edited["updated"] == [first["id"]]
    assert Slo.objects.get(pk=first["id"]).objective == 0.9995
    assert AuditRecord.objects.filter(action="slo.update", detail__via="openslo").count() == 1


def test_bad_openslo_is_a_400_naming_the_document(alice, acme):
    text = """apiVersion: openslo/v1
kind: SLO
metadata: {name: broken}
spec:
  indicatorRef: nowhere
  timeWindow: [{duration: 28d, isRolling: true}]
  budgetingMethod: Occurrences
  objectives: [{target: 0.99}]
"""
    response = openslo_post(api_as(alice), text)
    assert response.status_code == 400
    assert response.json()["error"]["message"] == (
        "document 1 (SLO broken): indicatorRef 'nowhere': no SLI document of that name in this upload")
    assert openslo_post(api_as(alice), "{}", content_type="application/json").status_code == 415
    assert not Slo.objects.exists()


def test_alert_rules_watch_a_metric_of_any_sli(alice, acme):
    rule = created(api_as(alice), "alert-rules/", {
        "name": "orders-lost-updates", "sli": {"kind": "findings", "match": {"finding_kind": "lost_update",
                                                                           "key": "orders/*"}},
        "metric": "count", "op": ">", "threshold": 0, "window": "5m", "for": "1m"})
    assert (rule["window"], rule["window_seconds"], rule["for_seconds"]) == ("5m", 300, 60)
    bad = api_as(alice).post("/api/v1/alert-rules/?project=acme", {
        "name": "conflicts", "sli": {"kind": "findings"}, "metric": "bad_ratio", "op": ">", "threshold": 0.2,
        "window": "10m"}, format="json")
    assert bad.status_code == 400 and "offers the metrics count, rate_per_minute" in bad.json()["error"]["message"]
    assert api_as(alice).get("/api/v1/alert-rules/?project=acme").json()["count"] == 1
    assert api_as(alice).delete(f"/api/v1/alert-rules/{rule['id']}/").status_code == 204
    assert not AlertRule.objects.exists()


def a_firing_alert(project, **fields) -> Alert:
    now = timezone.now()
    return Alert.objects.create(project=project, fingerprint="0123456789abcdef", state=Alert.State.FIRING,
                                labels={"alertname": "orders-lost-updates", "project": project.slug},
                                fired_at=now, active_since=now, changed_at=now, episode=1, version=1,
                                evidence=[["a" * 32, "b" * 16]], **fields)


def test_an_operator_acknowledges_a_firing_alert_once_with_a_comment(acme, bob, olga):
    alert = a_firing_alert(acme)
    assert api_as(bob).post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json").status_code == 403
    response = api_as(olga).post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {"comment": "looking"}, format="json")
    assert response.status_code == 200
    body = response.json()
    assert body["acknowledged"] and body["acknowledged_by"] == "olga" and body["acknowledge_comment"] == "looking"
    assert body["evidence"] == [{"trace_id": "a" * 32, "span_id": "b" * 16,
                                 "url": f"/p/acme/traces/{'a' * 32}/?span={'b' * 16}"}]
    api_as(olga).post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {"comment": "again"}, format="json")
    assert AuditRecord.objects.filter(action="alert.acknowledge").count() == 1
    Alert.objects.filter(pk=alert.pk).update(state=Alert.State.RESOLVED)
    resolved = api_as(olga).post(f"/api/v1/alerts/{alert.pk}/acknowledge/", {}, format="json")
    assert resolved.status_code == 409 and "only pending or firing" in resolved.json()["error"]["message"]


def test_alerts_are_listed_by_state_with_the_silence_that_mutes_them(acme, bob, olga):
    alert = a_firing_alert(acme)
    silence = created(api_as(olga), "silences/", {"matchers": ['alertname=~"orders-.*"'], "duration": "2h",
                                                  "comment": "migrating orders"})
    listed = api_as(bob).get("/api/v1/alerts/?project=acme&state=firing").json()
    assert listed["count"] == 1 and listed["results"][0]["silenced_by"] == silence["id"]
    assert api_as(bob).get("/api/v1/alerts/?project=acme&state=resolved").json()["count"] == 0
    assert api_as(bob).get("/api/v1/alerts/?project=acme&state=burning").status_code == 400
    assert alert.pk == listed["results"][0]["id"]


def test_silences_are_created_listed_and_expired_by_operators(acme, olga):
    client = api_as(olga)
    silence = created(client, "silences/", {"matchers": ["severity=page", 'slo!="checkout"'], "duration": "30m",
                                            "comment": "deploy"})
    assert silence["matchers"] == ['severity="page"', 'slo!="checkout"'] and silence["status"] == "active"
    assert silence["created_by"] == "olga"
    for body, message in [({"matchers": ["team="], "duration": "1h", "comment": "x"}, "also match alerts without"),
                          ({"matchers": ["severity=page"], "duration": "1h", "comment": ""}, "comment"),
                          ({"matchers": ["severity=page"], "comment": "x"}, "give ends_at or duration"),
                          ({"matchers": ["severity page"], "duration": "1h", "comment": "x"}, "not a matcher")]:
        response = client.post("/api/v1/silences/?project=acme", body, format="json")
        assert response.status_code == 400 and message in response.json()["error"]["message"], body
    assert client.delete(f"/api/v1/silences/{silence['id']}/").status_code == 204
    assert client.get("/api/v1/silences/?project=acme").json()["results"][0]["status"] == "expired"
    assert Silence.objects.get().ends_at == timezone.now()
    assert [a.action for a in AuditRecord.objects.order_by("id")] == ["silence.create", "silence.expire"]


def test_a_webhook_channel_sends_a_test_notification_in_the_alertmanager_shape(alice, acme, olga, receiver):
    channel = created(api_as(alice), "channels/", {"kind": "webhook", "url": receiver.url, "name": "oncall"})
    assert channel["group_by"] == ["alertname"] and channel["repeat_interval"] == "4h"
    response = api_as(olga).post(f"/api/v1/channels/{channel['id']}/test/")
    assert response.status_code == 200 and response.json() == {"delivered": True, "error": ""}
    (payload,) = receiver.received
    assert payload["version"] == "4" and payload["receiver"] == "oncall" and payload["status"] == "firing"
    assert set(payload) == {"version", "groupKey", "truncatedAlerts", "status", "receiver", "groupLabels",
                            "commonLabels", "commonAnnotations", "externalURL", "alerts"}
    assert set(payload["alerts"][0]) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL",
                                         "fingerprint"}
    assert payload["alerts"][0]["labels"]["alertname"] == "CausewayTest"
    assert AuditRecord.objects.filter(action="channel.test", actor=olga).count() == 1


def test_a_refused_test_notification_says_what_the_receiver_said_and_is_kept_on_the_channel(alice, acme, receiver):
    channel = created(api_as(alice), "channels/", {"kind": "webhook", "url": receiver.url})
    receiver.answers = [404]
    response = api_as(alice).post(f"/api/v1/channels/{channel['id']}/test/")
    assert response.status_code == 200 and response.json()["delivered"] is False
    assert "answered 404: receiver says no" in response.json()["error"]
    assert "answered 404" in Channel.objects.get().last_error
    # A transient failure is retried at once by the client.
    receiver.answers = [503]
    assert api_as(alice).post(f"/api/v1/channels/{channel['id']}/test/").json() == {"delivered": True, "error": ""}


def test_an_email_channel_sends_through_djangos_email_backend(alice, acme):
    channel = created(api_as(alice), "channels/", {"kind": "email", "to": ["oncall@example.com"]})
    assert channel["name"] == "oncall@example.com"
    assert api_as(alice).post(f"/api/v1/channels/{channel['id']}/test/").status_code == 200
    (message,) = mail.outbox
    assert message.to == ["oncall@example.com"] and message.subject == "[FIRING:1] alertname=CausewayTest"
    assert "Test notification" in message.body
    for body, message_text in [({"kind": "email", "to": ["not an address"]}, "is not an e-mail address"),
                               ({"kind": "webhook", "url": "ftp://x"}, "http or https URL"),
                               ({"kind": "webhook"}, "http or https URL"),
                               ({"kind": "pager"}, "not a valid choice")]:
        response = api_as(alice).post("/api/v1/channels/?project=acme", body, format="json")
        assert response.status_code == 400 and message_text in response.json()["error"]["message"], body


def test_the_slo_api_is_in_the_openapi_schema(alice, client):
    client.force_login(alice)
    text = client.get("/api/schema/").content.decode()
    for path in ("/api/v1/slos/", "/api/v1/slos/openslo/", "/api/v1/slos/{slo_id}/", "/api/v1/alert-rules/",
                 "/api/v1/alerts/", "/api/v1/alerts/{alert_id}/acknowledge/", "/api/v1/silences/",
                 "/api/v1/silences/{silence_id}/", "/api/v1/channels/", "/api/v1/channels/{channel_id}/test/",
                 "/api/v1/slis/preview/"):
        assert f"{path}:" in text, path


@pytest.mark.parametrize("url", ["ftp://alerts.example/hook", "file:///etc/passwd", "javascript:alert(1)",
                                 "gopher://alerts.example/", "alerts.example/hook"])
def test_a_webhook_url_that_is_not_http_or_https_is_a_400(alice, acme, url):
    response = api_as(alice).post("/api/v1/channels/?project=acme", {"kind": "webhook", "url": url}, format="json")
    assert response.status_code == 400
    assert response.json()["error"]["message"] == "url must be an http or https URL, e.g. https://alerts.example/hook"
    assert not Channel.objects.exists()


@pytest.mark.parametrize("url", ["http://127.0.0.1:9/hook", "http://localhost/hook", "http://[::1]/hook",
                                 "http://10.1.2.3/hook", "http://192.168.0.7:8080/hook", "http://169.254.169.254/latest",
                                 "http://[::ffff:127.0.0.1]/hook", "http://0.0.0.0/hook"])
def test_without_webhook_allow_private_a_webhook_into_the_servers_own_network_is_refused(alice, acme, url, settings):
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = api_as(alice).post("/api/v1/channels/?project=acme", {"kind": "webhook", "url": url}, format="json")
    assert response.status_code == 400
    assert "private, loopback or link-local address" in response.json()["error"]["message"]
    assert "WEBHOOK_ALLOW_PRIVATE" in response.json()["error"]["message"]
    public = {"kind": "webhook", "url": "https://203.0.113.9/hook"}  # documentation range, counted global
    assert api_as(alice).post("/api/v1/channels/?project=acme", public, format="json").status_code in (201, 400)


def test_a_channel_made_while_private_addresses_were_allowed_is_not_sent_to_once_they_are_not(
        alice, acme, receiver, settings):
    channel = created(api_as(alice), "channels/", {"kind": "webhook", "url": receiver.url})
    settings.WEBHOOK_ALLOW_PRIVATE = False
    response = api_as(alice).post(f"/api/v1/channels/{channel['id']}/test/")
    assert response.json()["delivered"] is False and "private, loopback" in response.json()["error"]
    assert receiver.received == [], "nothing was sent"


@pytest.mark.parametrize(("path", "body", "field"), [
    ("slos/", {**BILLING, "objectiv": 0.99}, "objectiv"),
    ("slos/", {**BILLING, "objective": "0.999"}, "objective"),
    ("slos/", {**BILLING, "sli": {"kind": "success", "mach": {}}}, "sli"),
    ("slos/", {**BILLING, "tiers": {"ticket": {"enabled": "yes"}}}, "tiers"),
    ("slos/", {**BILLING, "labels": {"team": 5}}, "labels"),
    ("slos/", {**BILLING, "window": 1.5}, "window"),
    ("alert-rules/", {"name": "r", "sli": {"kind": "success"}, "metric": "bad_ratio", "op": ">", "threshold": 0.5,
                      "window": "5m", "fo": "1m"}, "fo"),
    ("silences/", {"matchers": ['a="b"'], "comment": "c", "duration": "1h", "creator": "me"}, "creator"),
    ("channels/", {"kind": "email", "to": ["a@example.com"], "enabled": "true"}, "enabled"),
    ("channels/", {"kind": "email", "to": ["a@example.com", 7]}, "to"),
])
def test_bodies_take_only_their_fields_each_of_its_json_type(alice, acme, path, body, field):
    response = api_as(alice).post(f"/api/v1/{path}?project=acme", body, format="json")
    assert response.status_code == 400, response.json()
    assert field in response.json()["error"]["fields"]
