from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.contrib.auth.decorators import login_required
from django.urls import include, path, re_path, register_converter
from drf_spectacular.views import SpectacularSwaggerView

from governance import docs as gdocs
from governance import ops_views
from governance import views as gviews
from governance.api import views as gapi
from governance.converters import IdConverter, VersionConverter
from governance.overview import views as oviews
from governance.pipeline import views as pviews
from governance.rollouts.ofrep import ofrep_view
from traces import api as tapi
from traces import views as tviews
from traces.views_otlp import otlp_traces

# Before any urlconf that uses them is loaded (policies/api.py, policies/urls.py).
register_converter(IdConverter, "id")
register_converter(VersionConverter, "version")

api = [
    path("projects/", gapi.ProjectListApi.as_view()),
    path("projects/<slug:slug>/ingest-keys/", gapi.IngestKeyListApi.as_view()),
    path("projects/<slug:slug>/ingest-keys/<id:key_id>/revoke/", gapi.IngestKeyRevokeApi.as_view()),
    path("projects/<slug:slug>/members/", gapi.MemberListApi.as_view()),
    path("projects/<slug:slug>/members/<str:username>/", gapi.MemberDetailApi.as_view()),
    path("projects/<slug:slug>/audit/", gapi.AuditListApi.as_view()),
    path("traces/", tapi.TraceListApi.as_view()),
    path("traces/<str:trace_id>/", tapi.TraceDetailApi.as_view()),
    path("traces/<str:trace_id>/timeline/", tapi.TraceTimelineApi.as_view()),
    path("findings/", tapi.FindingListApi.as_view()),
    path("findings/<id:finding_id>/acknowledge/", tapi.FindingAcknowledgeApi.as_view()),
    path("state/history/", tapi.KeyHistoryApi.as_view()),
    path("", include("policies.api")),
    path("", include("governance.slo.api")),
    path("", include("governance.rollouts.api")),
]

urlpatterns = [
    path("v1/traces", otlp_traces),
    path("v1/traces/", otlp_traces),  # some exporters are configured with a trailing slash
    # Under gunicorn governance/wsgi.py answers /ofrep/ before Django; this serves the same answers
    # to the development server and the test client.
    re_path(r"^ofrep/", ofrep_view),
    path("api/v1/", include(api)),
    path("api/schema/", gapi.SchemaApi.as_view(), name="schema"),
    # A person opens the docs in a browser: without a session they are sent to log in.
    path("api/docs/", login_required(SpectacularSwaggerView.as_view(url_name="schema")), name="swagger-ui"),
    path("docs/<slug:name>/", gdocs.docs_page, name="docs-page"),
    path("login/", auth_views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("admin/", admin.site.urls),
    path("metrics", ops_views.metrics_view, name="metrics"),
    path("healthz", ops_views.healthz, name="healthz"),
    path("", gviews.home, name="home"),
    path("p/<slug:slug>/", oviews.overview, name="overview"),
    path("projects/new/", gviews.project_new, name="project-new"),
    path("p/<slug:slug>/traces/", tviews.trace_list, name="trace-list"),
    path("p/<slug:slug>/traces/<str:trace_id>/", tviews.trace_detail, name="trace-detail"),
    path("p/<slug:slug>/keys/", gviews.ingest_keys, name="ingest-keys"),
    path("p/<slug:slug>/keys/new/", gviews.ingest_key_new, name="ingest-key-new"),
    path("p/<slug:slug>/keys/<id:key_id>/revoke/", gviews.ingest_key_revoke_view, name="ingest-key-revoke"),
    path("p/<slug:slug>/members/", gviews.members, name="members"),
    path("p/<slug:slug>/audit/", gviews.audit_log, name="audit"),
    path("p/<slug:slug>/pipeline/", pviews.pipeline_status, name="pipeline-status"),
    path("p/<slug:slug>/pipeline/dead-letters/<int:batch_id>/retry/", pviews.dead_letter_retry_view,
         name="dead-letter-retry"),
    path("assets/plotly.min.js", tviews.plotly_js, name="plotly-js"),
    path("p/<slug:slug>/traces/<str:trace_id>/graph/", tviews.trace_graph, name="trace-graph"),
    path("p/<slug:slug>/state/<path:key>/", tviews.key_history, name="key-history"),
    path("p/<slug:slug>/findings/", tviews.finding_list, name="finding-list"),
    path("p/<slug:slug>/findings/<id:finding_id>/", tviews.finding_detail, name="finding-detail"),
    path("p/<slug:slug>/findings/<id:finding_id>/acknowledge/", tviews.finding_acknowledge_view,
         name="finding-acknowledge"),
    path("", include("policies.urls")),
    path("", include("governance.slo.urls")),
    path("", include("governance.rollouts.urls")),
]

# Errors no view answered: JSON under /api/, a plain page elsewhere, 503 in a database outage.
handler400 = "governance.errors.bad_request"
handler403 = "governance.errors.permission_denied"
handler404 = "governance.errors.page_not_found"
handler500 = "governance.errors.server_error"
