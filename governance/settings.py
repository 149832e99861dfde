"""Causeway settings, read from the environment with strict parsers.

Embedded defaults: SQLite under ./data, and a Celery broker on a SQLite file of its own,
so a checkout runs with no other service. Production sets DATABASE_URL
(PostgreSQL) and CELERY_BROKER_URL (Redis or RabbitMQ).
"""

from datetime import timedelta
from pathlib import Path

import dj_database_url

from governance.converters import MAX_ID, MAX_VERSION
from governance.env import SettingError, env_bool, env_float, env_int, env_list, env_str
from governance.logs import logging_config
from governance.multiproc import multiproc_dir

BASE_DIR = Path(__file__).resolve().parent.parent
DATA_DIR = Path(env_str("CAUSEWAY_DATA_DIR", str(BASE_DIR / "data")))
DATA_DIR.mkdir(parents=True, exist_ok=True)

# Causeway's own metrics (governance/metrics.py): each process writes its samples here and /metrics
# sums them. prometheus_client reads the variable when it is imported, so it is set before any app
# code runs; the supervisor and gunicorn clear the files of dead processes at start.
PROMETHEUS_MULTIPROC_DIR = multiproc_dir()
# /metrics answers only `Authorization: Bearer <METRICS_TOKEN>`; without a token set it answers nobody.
METRICS_TOKEN = env_str("METRICS_TOKEN")

DEBUG = env_bool("DEBUG", False)
# Required when DEBUG is false: the web process refuses to start without it
# (governance/wsgi.py); offline commands such as check_traces need none.
SECRET_KEY = env_str("SECRET_KEY") or ("insecure-debug-only-key" if DEBUG else "")
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]"])
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# HTTPS: people and agents reach Causeway over HTTPS only, directly or through a TLS proxy.
# On by default in production (DEBUG false), so `manage.py check --deploy` passes as
# configured; a local run on plain HTTP (scripts/run.sh) sets HTTPS=false.
HTTPS = env_bool("HTTPS", not DEBUG)
SECURE_SSL_REDIRECT = env_bool("SECURE_SSL_REDIRECT", HTTPS)
# Load balancers probe health over plain HTTP on the private side.
SECURE_REDIRECT_EXEMPT = [r"^healthz$"]
SESSION_COOKIE_SECURE = CSRF_COOKIE_SECURE = HTTPS
SECURE_HSTS_SECONDS = env_int("SECURE_HSTS_SECONDS", 365 * 24 * 3600 if HTTPS else 0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("SECURE_HSTS_INCLUDE_SUBDOMAINS", True)
# Preloading binds the whole registrable domain in browsers for months, and anyone may submit
# a domain whose header says "preload": only the domain's owner should opt in. Django's
# reminder to preload (W021) is silenced while they have not.
SECURE_HSTS_PRELOAD = env_bool("SECURE_HSTS_PRELOAD", False)
SILENCED_SYSTEM_CHECKS = [] if SECURE_HSTS_PRELOAD else ["security.W021"]
# Behind a TLS proxy: the header it sets to "https", e.g. X-Forwarded-Proto. Only set it when
# the proxy always overwrites that header, or clients could claim HTTPS.
_proxy_ssl_header = env_str("SECURE_PROXY_SSL_HEADER")
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_" + _proxy_ssl_header.upper().replace("-", "_"), "https") if _proxy_ssl_header else None
)

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "knox",
    "axes",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "governance",
    "traces",
    "policies",
    "governance.slo",
    "governance.pipeline",
    "governance.rollouts",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "governance.logs.RequestIdMiddleware",
    "governance.errors.RequestGuardMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a lockout into the page that says so.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "governance.urls"
WSGI_APPLICATION = "governance.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "governance.context.projects",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL", f"sqlite:///{DATA_DIR / 'causeway.sqlite3'}"),
        conn_max_age=env_int("DB_CONN_MAX_AGE", 60),
        # A kept connection is checked before each request reuses it: after a database
        # restart the next request reconnects instead of failing on a dead socket.
        conn_health_checks=True,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # An unreachable database fails a request in seconds (503, see governance/errors.py)
    # instead of holding a worker until gunicorn kills it.
    DATABASES["default"].setdefault("OPTIONS", {}).setdefault("connect_timeout", env_int("DB_CONNECT_TIMEOUT", 5))
    # No JIT: PostgreSQL compiles a plan whose estimated cost is high, as plans over the span table's day
    # partitions are, and spent 7 s compiling a trace search that ran in 0.15 s (10 million spans).
    DATABASES["default"]["OPTIONS"].setdefault("options", "-c jit=off")
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets readers run beside the one writer; IMMEDIATE takes the write
    # lock at BEGIN so a transaction never fails upgrading a read lock.
    DATABASES["default"]["CONN_MAX_AGE"] = 0
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 20,
    }
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test_causeway.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATICFILES_DIRS = [BASE_DIR / "static"]
STATIC_ROOT = Path(env_str("STATIC_ROOT", str(DATA_DIR / "staticfiles")))
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG

# Login throttling (django-axes), on /login/ and /admin/login/ alike: after
# LOGIN_FAILURE_LIMIT wrong passwords for one account, or from one address, logins for it
# are refused for LOGIN_LOCKOUT_MINUTES, even with the right password; a success clears the
# account's count. Addresses are REMOTE_ADDR, as in the audit log.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 10)
AXES_COOLOFF_TIME = timedelta(minutes=env_float("LOGIN_LOCKOUT_MINUTES", 15))
AXES_LOCKOUT_PARAMETERS = ["username", "ip_address"]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_CALLABLE = "governance.views.login_locked_out"
AXES_VERBOSE = False

LOGIN_URL = "login"
LOGIN_REDIRECT_URL = "home"
LOGOUT_REDIRECT_URL = "login"

REST_FRAMEWORK = {
    # Token first: DRF answers an anonymous call 401 with the first class's WWW-Authenticate.
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "governance.api.auth.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.IsAuthenticated"],
    # JSON in, JSON out, errors too (no browsable HTML API: /api/docs/ is the UI).
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    # No OPTIONS answers describing views (DRF's metadata): 405, as for any undocumented method.
    "DEFAULT_METADATA_CLASS": None,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "EXCEPTION_HANDLER": "governance.api.errors.exception_handler",
    "DEFAULT_PAGINATION_CLASS": "governance.api.pagination.ApiPagination",
}
REST_KNOX = {
    "TOKEN_PREFIX": "cwt_",  # recognisable by secret scanners, as ingest keys are by cwk_
    "TOKEN_TTL": None,  # a token lives until revoked, unless made with an expiry
    "AUTH_HEADER_PREFIX": "Token",
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Causeway API",
    "DESCRIPTION": "Causal timelines, concurrency findings and governance for AI agents.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its UI are for people who use the API: token or login (see governance/urls.py).
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "PATH_CONVERTER_OVERRIDES": {
        "id": {"type": "integer", "minimum": 0, "maximum": MAX_ID},
        "version": {"type": "integer", "minimum": 0, "maximum": MAX_VERSION},
    },
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "governance.api.schema.add_error_responses",
    ],
    "ENUM_NAME_OVERRIDES": {"AlertStateEnum": "governance.slo.models.Alert.State",
                            "TraceStateEnum": "traces.models.Trace.State"},
}

# Celery. The embedded default is a broker on a SQLite file of its own (governance/broker.py:
# kombu's SQLAlchemy transport, whose claims are atomic); Redis or RabbitMQ in production.
EMBEDDED_BROKER_PATH = DATA_DIR / "broker.sqlite3"
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL", f"sqlite:///{EMBEDDED_BROKER_PATH}")
BROKER_IS_EMBEDDED = CELERY_BROKER_URL.startswith("sqlite:")
if BROKER_IS_EMBEDDED:
    CELERY_BROKER_TRANSPORT = "governance.broker:Transport"
    # The transport has no fanout exchanges: no remote control, events or gossip.
    CELERY_WORKER_ENABLE_REMOTE_CONTROL = False
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# Every worker also consumes a queue of its own, so a project's analysis goes on running where its
# window is held in memory (governance.pipeline.models.StageHolder).
CELERY_WORKER_DIRECT = True
CELERY_TASK_TIME_LIMIT = 300
CELERY_BEAT_SCHEDULE_FILENAME = str(DATA_DIR / "celerybeat-schedule")
CELERY_TASK_ALWAYS_EAGER = False

# Ingest
OTLP_MAX_BODY_BYTES = env_int("OTLP_MAX_BODY_BYTES", 64 * 1024 * 1024)
TRACE_QUIET_SECONDS = env_float("TRACE_QUIET_SECONDS", 5.0)
# How far in event time around newly quiet spans the live analysis looks. 0 (the default) means the
# project's whole analysis window, so live findings equal check_traces' whatever the arrival order.
# A horizon (e.g. 10) makes a run's cost grow with it times the span rate, not with the window, at
# a price in meaning: accesses further apart are paired by check_traces only (docs/concurrency.md).
ANALYSIS_HORIZON_SECONDS = env_float("ANALYSIS_HORIZON_SECONDS", 0.0)
# A pipeline stage's claim on its traces; a running worker renews it every third of it, so the
# work of a worker that died is taken up by another within this time.
PIPELINE_LEASE_SECONDS = env_float("PIPELINE_LEASE_SECONDS", 30.0)
RETENTION_BATCH = env_int("RETENTION_BATCH", 5000)

# OFREP (governance/rollouts/ofrep.py): how long a web process trusts its copy of an ingest key and
# of a flag's rollout (a rollback or a revoked key reaches agents within this), evaluations a second
# allowed per ingest key in each web process (0: no limit), and the largest request body.
OFREP_CACHE_SECONDS = env_float("OFREP_CACHE_SECONDS", 1.0)
OFREP_RATE_LIMIT_PER_SECOND = env_int("OFREP_RATE_LIMIT_PER_SECOND", 0)
OFREP_MAX_BODY_BYTES = env_int("OFREP_MAX_BODY_BYTES", 64 * 1024)

# SLOs and alerts (governance/slo). The evaluation tick's interval (SLI rollups are a pipeline stage,
# run on quiet traces after their analysis and policy evaluation).
ALERT_EVAL_INTERVAL_SECONDS = env_float("ALERT_EVAL_INTERVAL_SECONDS", 30.0)
# A recovery is measured from failures at most this far before the success.
SLI_RECOVERY_HORIZON_MINUTES = env_int("SLI_RECOVERY_HORIZON_MINUTES", 360)
# Where people reach this Causeway: the links in notifications (generatorURL, externalURL).
EXTERNAL_URL = env_str("EXTERNAL_URL", "http://127.0.0.1:8000").rstrip("/")
NOTIFY_TIMEOUT_SECONDS = env_float("NOTIFY_TIMEOUT_SECONDS", 10.0)
# Webhooks to private, loopback and link-local addresses (127.0.0.1, 10.x, 192.168.x, 169.254.x, ::1,
# ...): allowed where Causeway runs on one machine for its own people (DEBUG, the embedded broker:
# the receiver is often on the same host); refused otherwise, so a person who may define channels
# cannot make the server call into its own network (cloud metadata, admin ports).
WEBHOOK_ALLOW_PRIVATE = env_bool("WEBHOOK_ALLOW_PRIVATE", DEBUG or BROKER_IS_EMBEDDED)
NOTIFY_MAX_ATTEMPTS = env_int("NOTIFY_MAX_ATTEMPTS", 8)
# Rollouts (governance/rollouts): how often beat drives every active rollout through its steps.
ROLLOUT_TICK_SECONDS = env_float("ROLLOUT_TICK_SECONDS", 30.0)
# E-mail: SMTP when EMAIL_HOST is set; otherwise messages are written to the worker's log.
EMAIL_HOST = env_str("EMAIL_HOST")
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER")
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD")
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL", "causeway@localhost")
EMAIL_BACKEND = ("django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST
                 else "django.core.mail.backends.console.EmailBackend")

# LOG_FORMAT=json: one JSON object per line, with the request's and the task's id (governance/logs.py).
LOG_FORMAT = env_str("LOG_FORMAT", "text")
if LOG_FORMAT not in ("text", "json"):
    raise SettingError(f"LOG_FORMAT must be text or json, not {LOG_FORMAT!r}")
LOGGING = logging_config(log_format=LOG_FORMAT, level=env_str("LOG_LEVEL", "WARNING"))
# Celery would otherwise replace the root logger's handlers with its own, dropping the JSON format.
CELERY_WORKER_HIJACK_ROOT_LOGGER = LOG_FORMAT != "json"
