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

application = get_wsgi_application()
