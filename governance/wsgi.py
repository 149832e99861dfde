import os

from django.core.wsgi import get_wsgi_application

from governance.env import SettingError

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "governance.settings")
application = get_wsgi_application()

from django.conf import settings  # noqa: E402

if not settings.SECRET_KEY:
    raise SettingError("SECRET_KEY must be set when DEBUG is false")
