"""A Flask shop: ``gunicorn -k gthread --threads 4 tests.support.servers.flask_app:app``."""

from __future__ import annotations

from flask import Flask

from cmpay_async.integrations.flask import notify_view, return_view

from .common import PROCESSOR, REDIRECT

app = Flask(__name__)
app.add_url_rule("/cmpay/notify", view_func=notify_view(PROCESSOR), methods=["POST"])
app.add_url_rule(
    "/cmpay/return", view_func=return_view(PROCESSOR, **REDIRECT), methods=["GET", "POST"]
)
