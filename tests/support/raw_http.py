"""Reading one HTTP/1.1 request off a socket, for the tests' hand-made loopback servers."""

from __future__ import annotations

import socket


def read_request(conn: socket.socket) -> tuple[bytes, bytes]:
    """The request's head (request line and headers) and its body of Content-Length bytes."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += conn.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < length:
        body += conn.recv(65536)
    return head, body
