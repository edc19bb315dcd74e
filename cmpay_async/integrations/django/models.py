"""The table of ``DjangoStore``: one row per payment event key."""

from __future__ import annotations

from django.db import models


class CmpayEvent(models.Model):  # type: ignore[misc]  # Django is untyped
    """A payment event's claim: in progress under a lease, or done."""

    key = models.CharField(max_length=191, primary_key=True)
    state = models.CharField(max_length=16)
    token = models.CharField(max_length=64)
    #: When the lease ends, in seconds since the epoch (every worker's wall clock).
    expires = models.FloatField()
    # Django adds this manager itself; written out so that type checkers see it too.
    objects = models.Manager()

    class Meta:
        """The table's name, stable whatever the app's label."""

        db_table = "cmpay_event"
        verbose_name = "CMPay event"
