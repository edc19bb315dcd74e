"""The cmpay_event table."""

from __future__ import annotations

from django.db import migrations, models


class Migration(migrations.Migration):  # type: ignore[misc]  # Django is untyped
    """Create CmpayEvent."""

    initial = True
    dependencies: list[tuple[str, str]] = []  # noqa: RUF012 - Django's migration format
    operations = [  # noqa: RUF012 - Django's migration format
        migrations.CreateModel(
            name="CmpayEvent",
            fields=[
                ("key", models.CharField(max_length=191, primary_key=True, serialize=False)),
                ("state", models.CharField(max_length=16)),
                ("token", models.CharField(max_length=64)),
                ("expires", models.FloatField()),
            ],
            options={"db_table": "cmpay_event", "verbose_name": "CMPay event"},
        ),
    ]
