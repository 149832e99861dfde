"""Notification channels: one small Transport class per kind, registered in TRANSPORTS.

A transport sends one Alertmanager webhook payload (version 4) and raises TransportError when
it could not, saying whether trying again could help (`permanent=False`: a timeout, a 5xx, a
refused connection) or not (`permanent=True`: a 4xx, a bad address). Transports are called
outside database transactions. Webhooks go through one HTTP client, `http_post_json`, which
retries transient failures a few times with backoff before it gives up for this attempt; the
notification is then tried again later (governance.slo.evaluation.notification_send).
"""

from __future__ import annotations

import ipaddress
import smtplib
import socket
import time
from urllib.parse import urlsplit

import requests
from django.conf import settings
from django.core.mail import EmailMessage
from django.utils import timezone

QUICK_RETRIES = (0.5, 1.5)  # seconds between the attempts of one send
USER_AGENT = "Causeway-Alertmanager-Webhook/1"


class TransportError(Exception):
    def __init__(self, message: str, *, permanent: bool = False):
        super().__init__(message)
        self.permanent = permanent


def _private(address: str) -> bool:
    ip = ipaddress.ip_address(address.split("%", 1)[0])
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped:
        ip = ip.ipv4_mapped
    return not ip.is_global or ip.is_multicast


def webhook_url_problem(url: str, *, resolve: bool) -> str:
    """Why Causeway will not POST to `url`, or "": only http(s), and unless WEBHOOK_ALLOW_PRIVATE no
    private, loopback, link-local or otherwise non-public address, given as such or (with `resolve`)
    what the host name resolves to now."""
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return "url must be an http or https URL, e.g. https://alerts.example/hook"
    if settings.WEBHOOK_ALLOW_PRIVATE:
        return ""
    host = parts.hostname
    try:
        addresses = [host] if _is_address(host) else []
        if not addresses and resolve:
            addresses = [info[4][0] for info in socket.getaddrinfo(host, parts.port or 443, type=socket.SOCK_STREAM)]
    except (socket.gaierror, UnicodeError):
        return ""  # not resolvable now: sending fails (transiently) until it is
    if host.rstrip(".").lower() == "localhost" or host.lower().endswith(".localhost") \
            or any(_private(a) for a in addresses):
        return (f"{host} is a private, loopback or link-local address: this server does not send webhooks into "
                "its own network (WEBHOOK_ALLOW_PRIVATE=true allows it)")
    return ""


def _is_address(host: str) -> bool:
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        return False
    return True


def http_post_json(url: str, body: dict, *, timeout: float | None = None) -> None:
    """POST JSON; retries connection errors, timeouts, 408, 429 and 5xx with backoff. Redirects are not
    followed (a webhook that moved is a configuration to fix, not a transient failure), and a URL
    whose host is (or now resolves to) a private address is refused unless WEBHOOK_ALLOW_PRIVATE."""
    timeout = timeout or settings.NOTIFY_TIMEOUT_SECONDS
    problem = webhook_url_problem(url, resolve=True)
    if problem:
        raise TransportError(problem, permanent=True)
    error = None
    for pause in (*QUICK_RETRIES, None):
        try:
            response = requests.post(url, json=body, timeout=timeout, allow_redirects=False,
                                     headers={"User-Agent": USER_AGENT})
        except requests.RequestException as exc:
            error = TransportError(f"could not reach {url}: {type(exc).__name__}", permanent=False)
        else:
            status = response.status_code
            if 200 <= status < 300:
                return
            snippet = response.text[:200].strip()
            message = f"{url} answered {status}" + (f": {snippet}" if snippet else "")
            if 300 <= status < 400:
                raise TransportError(f"{url} redirects to {response.headers.get('Location', '?')}: "
                                     "give the channel the final URL", permanent=True)
            if status not in (408, 429) and status < 500:
                raise TransportError(message, permanent=True)
            error = TransportError(message, permanent=False)
        if pause is not None:
            time.sleep(pause)
    raise error


class Transport:
    def __init__(self, channel):
        self.channel = channel

    def notify(self, payload: dict) -> None:
        raise NotImplementedError


class WebhookTransport(Transport):
    """The Alertmanager webhook payload as is, so existing receivers work unchanged."""

    def notify(self, payload: dict) -> None:
        http_post_json(self.channel.url, payload)


class EmailTransport(Transport):
    """A plain-text e-mail through Django's e-mail backend (SMTP when EMAIL_HOST is set)."""

    def notify(self, payload: dict) -> None:
        message = EmailMessage(subject=email_subject(payload), body=email_body(payload),
                               from_email=settings.DEFAULT_FROM_EMAIL, to=list(self.channel.to))
        try:
            message.send(fail_silently=False)
        except (smtplib.SMTPRecipientsRefused, smtplib.SMTPSenderRefused, smtplib.SMTPAuthenticationError,
                smtplib.SMTPNotSupportedError) as exc:
            raise TransportError(f"the mail server refused: {exc}", permanent=True) from None
        except smtplib.SMTPResponseException as exc:
            raise TransportError(f"the mail server answered {exc.smtp_code}: {exc.smtp_error!r}",
                                 permanent=500 <= exc.smtp_code < 600) from None
        except (smtplib.SMTPException, OSError) as exc:
            raise TransportError(f"could not send mail: {exc}", permanent=False) from None


TRANSPORTS: dict[str, type[Transport]] = {"webhook": WebhookTransport, "email": EmailTransport}


def transport_for(channel) -> Transport:
    return TRANSPORTS[channel.kind](channel)


def email_subject(payload: dict) -> str:
    firing = sum(1 for a in payload["alerts"] if a["status"] == "firing")
    group = " ".join(f"{k}={v}" for k, v in payload["groupLabels"].items()) or "alerts"
    status = f"FIRING:{firing}" if payload["status"] == "firing" else "RESOLVED"
    return f"[{status}] {group}"


def email_body(payload: dict) -> str:
    lines = []
    for alert in payload["alerts"]:
        annotations = alert.get("annotations", {})
        lines.append(f"{alert['status'].upper()}: {annotations.get('summary') or alert['labels'].get('alertname', '')}")
        if annotations.get("description"):
            lines.append(f"  {annotations['description']}")
        lines.append("  labels: " + ", ".join(f"{k}={v}" for k, v in sorted(alert["labels"].items())))
        lines.append(f"  since {alert['startsAt']}" + (f", resolved {alert['endsAt']}" if alert["status"] == "resolved" else ""))
        lines.append(f"  {alert['generatorURL']}")
        for key in ("traces", "findings", "violations", "slo"):
            if annotations.get(key):
                lines.append(f"  {key}: {annotations[key]}")
        lines.append("")
    lines.append(f"Causeway: {payload['externalURL']}")
    return "\n".join(lines)


def test_payload(channel) -> dict:
    """A payload with one firing test alert, shaped like every other notification."""
    from governance.slo.evaluation import webhook_payload

    now = timezone.now()
    alert = {"status": "firing", "labels": {"alertname": "CausewayTest", "project": channel.project.slug,
                                             "severity": "info"},
             "annotations": {"summary": f"Test notification to {channel.name}",
                             "description": "Sent from Causeway's channels page; nothing is wrong."},
             "startsAt": now, "endsAt": None, "generatorURL": f"{settings.EXTERNAL_URL}/p/{channel.project.slug}/channels/",
             "fingerprint": "0000000000000000"}
    return webhook_payload(channel=channel, group_labels={"alertname": "CausewayTest"}, alerts=[alert])
