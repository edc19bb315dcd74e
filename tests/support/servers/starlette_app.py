"""A Starlette shop, and a FastAPI one.

``uvicorn --workers 2 tests.support.servers.starlette_app:app``.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.applications import Starlette

from cmpay_async.integrations.starlette import notify_endpoint, notify_router, return_endpoint

from .common import PROCESSOR, REDIRECT

app = Starlette()
app.add_route("/cmpay/notify", notify_endpoint(PROCESSOR), methods=["POST"])
app.add_route("/cmpay/return", return_endpoint(PROCESSOR, **REDIRECT), methods=["GET", "POST"])

fastapi_app = FastAPI()
fastapi_app.include_router(notify_router(PROCESSOR, return_path="/cmpay/return", **REDIRECT))
