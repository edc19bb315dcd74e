"""An aiohttp shop.

``gunicorn -k aiohttp.GunicornWebWorker tests.support.servers.aiohttp_app:app``.
"""

from __future__ import annotations

from aiohttp import web

from cmpay_async.integrations.aiohttp import notify_handler, return_handler

from .common import PROCESSOR, REDIRECT

app = web.Application()
app.router.add_post("/cmpay/notify", notify_handler(PROCESSOR))
app.router.add_route("*", "/cmpay/return", return_handler(PROCESSOR, **REDIRECT))
