"""What an endpoint URL may be, and how one is shown: the rules of plain HTTP and loopback.

Pure: no I/O. A signed order and the buyer's ``userToken`` must never cross a network in clear
text, so plain ``http://`` is accepted only to a loopback host (the local sandbox) unless the
caller opts in by name; and a URL is never shown with the password it may hold.
"""

from __future__ import annotations

import ipaddress
from urllib.parse import urlsplit, urlunsplit

__all__ = ["is_loopback", "safe_url"]


def is_loopback(host: str) -> bool:
    """True for ``localhost``, 127.0.0.0/8 and ::1: an address that never leaves the machine."""
    host = host.strip("[]").lower().rstrip(".")
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def safe_url(url: str) -> str:
    """``url`` with the password of its userinfo (or a lone user name) shown as ``***``."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "<unparsable URL>"
    if "@" not in parts.netloc:
        return url
    userinfo, _, hostport = parts.netloc.rpartition("@")
    user, sep, _ = userinfo.partition(":")
    # A lone user name may be a token (``https://TOKEN@host``): it is hidden as well.
    netloc = f"{user}:***@{hostport}" if sep else f"***@{hostport}"
    return urlunsplit(parts._replace(netloc=netloc))
