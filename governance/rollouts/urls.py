"""Rollout pages, included from governance/urls.py (the API routes are in governance/rollouts/api.py)."""

from django.urls import path

from governance.rollouts import views

urlpatterns = [
    path("p/<slug:slug>/rollouts/", views.rollout_list, name="rollout-list"),
    path("p/<slug:slug>/rollouts/new/", views.rollout_new, name="rollout-new"),
    path("p/<slug:slug>/rollouts/<id:rollout_id>/", views.rollout_detail, name="rollout-detail"),
    path("p/<slug:slug>/rollouts/<id:rollout_id>/<str:action>/", views.rollout_action, name="rollout-action"),
]
