"""Versioned governance policies, their activation history and the violations they record.

Exactly one version of a policy is active at a time because "active" is not a
flag on versions but one column, `Policy.active_version`, changed only under a
row lock on the policy (see services.policy_version_activate).
"""

from django.conf import settings
from django.db import models

from governance.models import Project


class Policy(models.Model):
    class Mode(models.TextChoices):
        ENFORCE = "enforce"  # violations are marked enforced: alert rules on enforced violations raise alerts
        MONITOR = "monitor"  # violations are recorded only

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    name = models.CharField(max_length=200)
    description = models.TextField(blank=True)
    mode = models.CharField(max_length=16, choices=Mode.choices, default=Mode.ENFORCE)
    active_version = models.ForeignKey(
        "PolicyVersion", null=True, blank=True, on_delete=models.PROTECT, related_name="+",
        help_text="the one version evaluated; changed under a row lock on this policy",
    )
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["name"]
        constraints = [models.UniqueConstraint(fields=["project", "name"], name="policy_name_unique")]

    def __str__(self):
        return self.name


class VersionImmutable(Exception):
    pass


class PolicyVersion(models.Model):
    """One saved text of a policy. Never changed after it is saved: a change is a new version."""

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="versions")
    number = models.PositiveIntegerField()
    source = models.TextField()
    document = models.JSONField(help_text="canonical document (policies.core.policy_document)")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    comment = models.CharField(max_length=500, blank=True)
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["policy", "-number"]
        constraints = [models.UniqueConstraint(fields=["policy", "number"], name="policy_version_number_unique")]

    def __str__(self):
        return f"{self.policy_id} v{self.number}"

    def save(self, *args, **kwargs):
        if not self._state.adding:
            raise VersionImmutable("a saved policy version cannot change; save a new version")
        super().save(*args, **kwargs)


class PolicyActivation(models.Model):
    """History of which version became active, and which it replaced (rollback follows it back)."""

    class Action(models.TextChoices):
        ACTIVATE = "activate"
        ROLLBACK = "rollback"

    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="activations")
    version = models.ForeignKey(PolicyVersion, on_delete=models.CASCADE, related_name="+")
    previous = models.ForeignKey(PolicyVersion, null=True, blank=True, on_delete=models.CASCADE, related_name="+",
                                 help_text="the version a rollback from this one returns to")
    action = models.CharField(max_length=16, choices=Action.choices)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        ordering = ["-id"]


class Violation(models.Model):
    """A span that broke a rule of an active policy version, stored once."""

    project = models.ForeignKey(Project, on_delete=models.CASCADE, related_name="+")
    policy = models.ForeignKey(Policy, on_delete=models.CASCADE, related_name="violations")
    version = models.ForeignKey(PolicyVersion, on_delete=models.CASCADE, related_name="violations")
    rule_id = models.CharField(max_length=200)
    rule_kind = models.CharField(max_length=64)
    trace_id = models.CharField(max_length=32)
    span_id = models.CharField(max_length=16)
    agent = models.CharField(max_length=256, blank=True)
    service = models.CharField(max_length=256, blank=True)
    reason = models.TextField()
    start_ns = models.BigIntegerField(help_text="start of the violating span")
    enforced = models.BooleanField(default=False, help_text="the policy was in enforce mode when this was recorded")
    created_at = models.DateTimeField(auto_now_add=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["version", "rule_id", "trace_id", "span_id"], name="violation_once"),
        ]
        indexes = [
            models.Index(fields=["project", "-start_ns"], name="violation_project_start"),
            models.Index(fields=["project", "policy", "rule_id", "-start_ns"], name="violation_rule"),
            models.Index(fields=["project", "agent", "-start_ns"], name="violation_agent"),
            models.Index(fields=["project", "trace_id"], name="violation_trace"),
        ]
