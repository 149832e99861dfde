"""Policy pages, included from governance/urls.py (the API routes are in policies/api.py)."""

from django.urls import path

from policies import views

urlpatterns = [
    path("p/<slug:slug>/policies/", views.policy_list, name="policy-list"),
    path("p/<slug:slug>/policies/new/", views.policy_edit, name="policy-new"),
    path("p/<slug:slug>/policies/<id:policy_id>/", views.policy_detail, name="policy-detail"),
    path("p/<slug:slug>/policies/<id:policy_id>/edit/", views.policy_edit, name="policy-edit"),
    path("p/<slug:slug>/policies/<id:policy_id>/versions/<version:number>/", views.version_detail, name="policy-version"),
    path("p/<slug:slug>/policies/<id:policy_id>/diff/", views.version_diff_page, name="policy-diff"),
    path("p/<slug:slug>/policies/<id:policy_id>/dry-run/", views.dry_run_page, name="policy-dry-run"),
    path("p/<slug:slug>/policies/<id:policy_id>/versions/<version:number>/activate/", views.activate, name="policy-activate"),
    path("p/<slug:slug>/policies/<id:policy_id>/rollback/", views.rollback, name="policy-rollback"),
    path("p/<slug:slug>/policies/<id:policy_id>/mode/", views.mode, name="policy-mode"),
    path("p/<slug:slug>/violations/", views.violation_list, name="violation-list"),
]
