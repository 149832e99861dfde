"""SLO and alert pages, included from governance/urls.py (the API routes are in governance/slo/api.py)."""

from django.urls import path

from governance.slo import views

urlpatterns = [
    path("p/<slug:slug>/slos/", views.slo_list, name="slo-list"),
    path("p/<slug:slug>/slos/new/", views.slo_edit, name="slo-new"),
    path("p/<slug:slug>/slos/preview/", views.sli_preview_view, name="sli-preview"),
    path("p/<slug:slug>/slos/<int:slo_id>/", views.slo_detail, name="slo-detail"),
    path("p/<slug:slug>/slos/<int:slo_id>/edit/", views.slo_edit, name="slo-edit"),
    path("p/<slug:slug>/slos/<int:slo_id>/delete/", views.slo_delete_view, name="slo-delete"),
    path("p/<slug:slug>/alert-rules/", views.rule_list, name="alert-rule-list"),
    path("p/<slug:slug>/alerts/", views.alert_list, name="alert-list"),
    path("p/<slug:slug>/alerts/<int:alert_id>/acknowledge/", views.alert_acknowledge_view, name="alert-acknowledge"),
    path("p/<slug:slug>/silences/", views.silence_list, name="silence-list"),
    path("p/<slug:slug>/channels/", views.channel_list, name="channel-list"),
]
