"""A Django shop on its own database: DjangoStore, and a handler that uses the ORM.

``gunicorn tests.support.servers.django_orm_app:application`` (WSGI) or ``uvicorn
tests.support.servers.django_orm_app:asgi_application`` (ASGI); ``migrate()`` first.
"""

from __future__ import annotations

import os

import django
from django.conf import settings

settings.configure(
    ROOT_URLCONF=__name__,
    ALLOWED_HOSTS=["*"],
    SECRET_KEY="test-only",
    MIDDLEWARE=["django.middleware.csrf.CsrfViewMiddleware"],
    INSTALLED_APPS=["cmpay_async.integrations.django"],
    DATABASES={
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": os.environ["CMPAY_DJANGO_DB"],
            "OPTIONS": {"timeout": 30, "transaction_mode": "IMMEDIATE"},
        }
    },
    USE_TZ=True,
)
django.setup()

from django.core.asgi import get_asgi_application  # noqa: E402 - after settings
from django.core.management import call_command  # noqa: E402
from django.core.wsgi import get_wsgi_application  # noqa: E402
from django.db import transaction  # noqa: E402
from django.urls import path  # noqa: E402

from cmpay_async import Md5Signer, NotificationProcessor, PaymentEvent  # noqa: E402
from cmpay_async.integrations.django import notify_view, return_view  # noqa: E402
from cmpay_async.integrations.django.models import CmpayEvent  # noqa: E402
from cmpay_async.integrations.django.store import DjangoStore  # noqa: E402
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT  # noqa: E402
from tests.support.inbox_handler import record  # noqa: E402

from .common import REDIRECT  # noqa: E402


def handle(event: PaymentEvent) -> None:
    """Use the ORM (Django refuses it where an event loop runs), then count the run."""
    with transaction.atomic():
        assert CmpayEvent.objects.filter(key=event.key, state="in_progress").exists()
    record(event)


PROCESSOR = NotificationProcessor(
    verifier=Md5Signer(PUBLIC_TEST_KEY),
    merchant_id=PUBLIC_TEST_MERCHANT,
    store=DjangoStore(),
    handler=handle,
)
urlpatterns = [
    path("cmpay/notify", notify_view(PROCESSOR)),
    path("cmpay/return", return_view(PROCESSOR, **REDIRECT)),
]
application = get_wsgi_application()
asgi_application = get_asgi_application()


def migrate() -> None:
    """Create the tables (once, before the server starts)."""
    call_command("migrate", verbosity=0)
    call_command("makemigrations", "cmpay", check=True, dry_run=True, verbosity=0)
