"""A Django shop (WSGI): ``gunicorn tests.support.servers.django_app:application``."""

from __future__ import annotations

import django
from django.conf import settings

settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="test-only",
    MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
    INSTALLED_APPS=[],
    DATABASES={},
    USE_TZ=True,
)
django.setup()

from django.core.wsgi import get_wsgi_application  # noqa: E402 - after settings
from django.urls import path  # noqa: E402

from cmpay_async.integrations.django import notify_view, return_view  # noqa: E402

from .common import PROCESSOR, REDIRECT  # noqa: E402

urlpatterns = [
    path("cmpay/notify", notify_view(PROCESSOR)),
    path("cmpay/return", return_view(PROCESSOR, **REDIRECT)),
]
application = get_wsgi_application()
