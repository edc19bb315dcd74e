"""A gateway stand-in that answers every request with the same signed bytes, at almost no cost.

Run in a process of its own (``python -m benchmarks.canned ANSWER_FILE``; it prints its port),
so that the client process's CPU time (``time.process_time``) is the client's alone: the
sandbox's own work (validating, signing, a few ms per call on a shared 2-core machine) no
longer sits in the figure.
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path


class _Canned(asyncio.Protocol):
    """HTTP/1.1 keep-alive: read a request (headers and Content-Length body), answer it."""

    def __init__(self, response: bytes) -> None:
        self.response = response
        self.buffer = b""
        self.transport: asyncio.Transport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        while True:
            head_end = self.buffer.find(b"\r\n\r\n")
            if head_end < 0:
                return
            length = 0
            for line in self.buffer[:head_end].split(b"\r\n"):
                if line[:15].lower() == b"content-length:":
                    length = int(line[15:])
            end = head_end + 4 + length
            if len(self.buffer) < end:
                return
            self.buffer = self.buffer[end:]
            assert self.transport is not None
            self.transport.write(self.response)


async def _serve(answer: bytes) -> None:
    response = (
        b"HTTP/1.1 200 OK\r\nContent-Type: text/plain; charset=UTF-8\r\n"
        + f"Content-Length: {len(answer)}\r\n\r\n".encode()
        + answer
    )
    loop = asyncio.get_running_loop()
    server = await loop.create_server(lambda: _Canned(response), "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    print(port, flush=True)
    async with server:
        await server.serve_forever()


def main() -> None:
    """Serve the answer in the file named by the first argument until killed."""
    asyncio.run(_serve(Path(sys.argv[1]).read_bytes()))


if __name__ == "__main__":
    main()
