"""The Django app that holds ``DjangoStore``'s table: add it to INSTALLED_APPS."""

from __future__ import annotations

from django.apps import AppConfig


class CmpayConfig(AppConfig):  # type: ignore[misc]  # Django is untyped
    """cmpay-async's notification store on the project's own database."""

    name = "cmpay_async.integrations.django"
    label = "cmpay"
    verbose_name = "CMPay notifications"
