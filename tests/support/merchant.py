"""A scripted merchant for sandbox tests: records what it receives, answers as told."""

from __future__ import annotations

from typing import Any

from cmpay_async import CmpayError, Md5Signer, verify_notification
from cmpay_async._asgi import Receive, Scope, Send, read_request, respond
from cmpay_async.testing import PUBLIC_TEST_KEY


class ScriptedMerchant:
    """ASGI app: answers the n-th notification with ``script[n]`` (the last one repeats)."""

    def __init__(self, *script: bytes) -> None:
        self.script = list(script) or [b"SUCCESS"]
        self.received: list[bytes] = []
        self.verified: list[Any] = []
        self.rejected = 0
        self.page_notes: list[Any] = []
        self.verifier = Md5Signer(PUBLIC_TEST_KEY)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Record the post, verify it, answer from the script."""
        if scope["type"] != "http":
            return
        request = await read_request(scope, receive)
        if request.path == "/return":  # PageNotify from the buyer's browser
            self.page_notes.append(verify_notification(request.body, verifier=self.verifier))
            await respond(send, 200, b"thank you")
            return
        self.received.append(request.body)
        try:
            self.verified.append(verify_notification(request.body, verifier=self.verifier))
        except CmpayError:
            self.rejected += 1
            await respond(send, 400, b"invalid")
            return
        index = min(len(self.verified) - 1, len(self.script) - 1)
        await respond(send, 200, self.script[index])
