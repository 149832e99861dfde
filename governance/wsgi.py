import os

from django.core.exceptions import ImproperlyConfigured

from governance.env import SettingError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")

from django.conf import settings

try:
    settings.SECRET_KEY
except ImproperlyConfigured:
    raise SettingError("SECRET_KEY must be set when DEBUG is false") from None

from django.core.wsgi import get_wsgi_application

django_application = get_wsgi_application()

# Imported once the settings are checked and the apps loaded, above.
from governance.rollouts.ofrep import ofrep_wsgi


def application(environ, start_response):
    # OFREP is asked by every agent, often: it skips Django's middleware and URL resolving (no
    # session, CSRF or messages work), and answers from a one-second in-process cache.
    if environ.get("PATH_INFO", "").startswith("/ofrep/"):
        return ofrep_wsgi(environ, start_response)
    return django_application(environ, start_response)
