"""The ``cmpay`` command line: sandbox, demo, and the signature debugger (sign, verify).

Keys never come from a command-line argument (shell history, ``ps``): only from a file or an
environment variable, or the vendor's public test key when asked for explicitly.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import socket
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeAlias

from ._codec import decode_payload
from ._exceptions import CmpayError, ConfigurationError
from ._schema import REGISTRY
from ._settings import PRODUCTION_ENDPOINT
from ._signing import Md5Signer, RsaSigner, RsaVerifier, Signer, Verifier, inner_digest, source_of
from ._sigsearch import Candidate, Unsearchable, schema_named, search
from ._testkeys import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT
from ._version import __version__

__all__ = ["main"]

_DEFAULT_ENV = "CMPAY_SIGN_KEY"
#: Where ``cmpay sandbox`` listens by default, named in the refusal of a test key in production.
_SANDBOX_ENDPOINT = "http://127.0.0.1:8800/ips/cmpayService"


class _HelpFormatter(argparse.HelpFormatter):
    """Appends ``(default: X)`` to each option's help that has a default worth showing."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        shown = action.default not in (None, False, [], argparse.SUPPRESS)
        if shown and action.option_strings and "default" not in text:
            text += " (default: %(default)s)"
        return text


class _Parser(argparse.ArgumentParser):
    """A parser whose help shows its options' defaults."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)


def _add_key_options(parser: argparse.ArgumentParser, *, rsa: str) -> None:
    keys = parser.add_argument_group("key (never given on the command line)")
    keys.add_argument("--key-file", type=Path, help="file holding the MD5 signKey")
    _add_md5_key_options(keys)
    keys.add_argument(f"--rsa-{rsa}-key-file", type=Path, help=f"RSA {rsa} key file (PEM/DER/hex)")


def _add_md5_key_options(keys: argparse._ArgumentGroup) -> None:
    keys.add_argument(
        "--key-env",
        default=_DEFAULT_ENV,
        metavar="NAME",
        help="environment variable holding the MD5 signKey",
    )
    keys.add_argument(
        "--public-test-key",
        action="store_true",
        help="use the vendor's public test signKey (test merchant 888009941120001)",
    )


def _add_body_options(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group(required=True)
    source.add_argument("--body", help="the message as k=v&k=v text (use - to read stdin)")
    source.add_argument("--body-file", type=Path, help="file holding the message body")
    source.add_argument(
        "--field", action="append", metavar="NAME=VALUE", help="one field; repeat for each"
    )


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="cmpay", description="cmpay-async: CMPay sandbox, demo and signature debugger."
    )
    parser.add_argument("--version", action="version", version=f"cmpay-async {__version__}")
    commands = parser.add_subparsers(
        dest="command", required=True, metavar="COMMAND", parser_class=_Parser
    )
    _add_demo(commands)
    _add_sandbox(commands)
    _add_signature_commands(commands)
    _add_reconcile(commands)
    return parser


#: What ``add_subparsers`` returns: the parser's subcommands.
_Commands: TypeAlias = "argparse._SubParsersAction[_Parser]"


def _add_demo(commands: _Commands) -> None:
    demo = commands.add_parser(
        "demo", help="run the whole payment flow on loopback and print a timeline"
    )
    demo.add_argument(
        "--minute-seconds",
        type=float,
        default=0.01,
        help="real seconds per gateway minute for the retry schedule",
    )
    demo.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="the event loop to run the client and the shop on (trio needs `pip install trio`)",
    )


def _add_sandbox(commands: _Commands) -> None:
    sandbox = commands.add_parser("sandbox", help="serve the sandbox gateway over HTTP")
    sandbox.add_argument("--host", default="127.0.0.1", help="address to listen on")
    sandbox.add_argument("--port", type=int, default=8800, help="port (default 8800, 0 = free)")
    sandbox.add_argument(
        "--fault",
        action="append",
        default=[],
        metavar="NAME[=VALUE]",
        help="arm a fault at start, e.g. fail_next=IPS0008, delay_next=2, drop_next; "
        "later ones by POST /_sandbox/faults",
    )
    sandbox.add_argument(
        "--base-url",
        help="the address buyers reach the cashier at, for pay links (default http://HOST:PORT)",
    )
    sandbox.add_argument(
        "--minute-seconds",
        type=float,
        default=1.0,
        help="real seconds per gateway minute for the retry schedule (default 1)",
    )


def _add_signature_commands(commands: _Commands) -> None:
    names = ", ".join(REGISTRY)
    sign = commands.add_parser(
        "sign",
        help="print the signature source, inner and final hmac of a message",
        description=f"Messages: {names}.",
    )
    sign.add_argument("message", help="message name, e.g. DirectPayConfirm or PageNotify")
    _add_body_options(sign)
    _add_key_options(sign, rsa="private")

    verify = commands.add_parser(
        "verify",
        help="find which field order and decoding make a message's hmac match",
        description=f"Messages: {names}. Without a message, every one is tried.",
    )
    verify.add_argument("message", nargs="?", help="message name (default: try them all)")
    verify.add_argument(
        "--all", action="store_true", help="list every matching reading, not only the best"
    )
    _add_body_options(verify)
    _add_key_options(verify, rsa="public")


def _add_reconcile(commands: _Commands) -> None:
    reconcile = commands.add_parser(
        "reconcile",
        help="ask the gateway about pending orders and print one line per order",
        description=(
            "Reads ORDER_ID [CREATED_AT] lines (CREATED_AT in ISO 8601; without it the order "
            "is asked about now) and prints ORDER_ID, then its state, amount and payNo, or "
            "'not-due' (too young, see the schedule) or 'unanswered' (the query failed). "
            "Exit status: 0 when every due order was answered, 1 when any stayed unanswered, "
            "2 on an error."
        ),
    )
    reconcile.add_argument("--file", type=Path, help="the orders (default: standard input)")
    reconcile.add_argument(
        "--endpoint",
        help=f"the gateway URL (default: the production gateway, {PRODUCTION_ENDPOINT}; "
        f"required with --public-test-key: the sandbox's is {_SANDBOX_ENDPOINT})",
    )
    reconcile.add_argument(
        "--allow-insecure-http",
        action="store_true",
        help="accept a plain http:// endpoint beyond loopback (unencrypted; not recommended)",
    )
    reconcile.add_argument(
        "--merchant-id",
        default=os.environ.get("CMPAY_MERCHANT_ID", ""),
        help="the merchant id (default: $CMPAY_MERCHANT_ID; with --public-test-key, the test "
        "merchant's)",
    )
    reconcile.add_argument(
        "--concurrency", type=int, default=8, help="queries in flight at most at once"
    )
    reconcile.add_argument(
        "--per-second", type=float, default=20.0, help="queries started per second at most"
    )
    keys = reconcile.add_argument_group("key (never given on the command line)")
    keys.add_argument("--key-file", type=Path, help="file holding the MD5 signKey")
    _add_md5_key_options(keys)


def _cmd_reconcile(args: argparse.Namespace) -> int:
    import anyio

    from ._client import CmpayClient
    from ._models import CHINA_TZ
    from ._reconcile import PendingOrder, due

    lines = (args.file.read_text("utf-8") if args.file else sys.stdin.read()).splitlines()
    now = dt.datetime.now(CHINA_TZ)
    pending = []
    for number, line in enumerate(lines, start=1):
        parts = line.split()
        if not parts or parts[0].startswith("#"):
            continue
        try:
            created = dt.datetime.fromisoformat(parts[1]) if len(parts) > 1 else None
        except ValueError:
            raise ConfigurationError(f"line {number}: {parts[1][:40]!r} is not ISO 8601") from None
        if created is not None and created.tzinfo is None:
            created = created.replace(tzinfo=CHINA_TZ)
        # Without a creation time the order is asked about now: as if 2 minutes old.
        pending.append(
            PendingOrder(order_id=parts[0], created_at=created or now - dt.timedelta(minutes=2))
        )
    client = CmpayClient(
        merchant_id=_reconcile_merchant(args),
        signer=Md5Signer(_md5_key(args)),
        endpoint=args.endpoint or PRODUCTION_ENDPOINT,
        allow_insecure_http=args.allow_insecure_http,
    )

    async def run() -> dict[str, str]:
        answers: dict[str, str] = {}
        async with client:
            async for result in client.reconcile(
                pending, now=now, concurrency=args.concurrency, per_second=args.per_second
            ):
                answers[result.order_id] = "\t".join(
                    [result.state.value, str(result.amount or ""), result.pay_no]
                )
        return answers

    answers = anyio.run(run)
    unanswered = 0
    for order in pending:
        if not due(order, now):
            print(f"{order.order_id}\tnot-due")
        elif order.order_id in answers:
            print(f"{order.order_id}\t{answers[order.order_id]}")
        else:
            unanswered += 1
            print(f"{order.order_id}\tunanswered")
    if unanswered:
        # A cron job or a shell `&&` must see that some orders are still in doubt.
        print(f"cmpay: {unanswered} order(s) unanswered; run again later", file=sys.stderr)
        return 1
    return 0


def _reconcile_merchant(args: argparse.Namespace) -> str:
    """The merchant id to reconcile as; ``ConfigurationError`` when there is none to use."""
    if args.public_test_key and args.endpoint is None:
        # The production gateway knows no order signed with the public test key: every query
        # would fail, and reported as "unanswered" it would read like a network problem.
        raise ConfigurationError(
            "--public-test-key needs --endpoint: the production gateway does not accept the "
            f"public test key (the sandbox's endpoint is {_SANDBOX_ENDPOINT})"
        )
    merchant_id: str = args.merchant_id or (PUBLIC_TEST_MERCHANT if args.public_test_key else "")
    if not merchant_id:
        raise ConfigurationError(
            "merchant id is empty: pass --merchant-id or set $CMPAY_MERCHANT_ID"
        )
    return merchant_id


def _md5_key(args: argparse.Namespace) -> str:
    if args.public_test_key:
        return PUBLIC_TEST_KEY
    if args.key_file is not None:
        # The file's final line ending is the file's, not the key's; any other whitespace is
        # refused by Md5Signer, as it is for the library.
        text: str = args.key_file.read_text("utf-8")
        return text[:-2] if text.endswith("\r\n") else text.removesuffix("\n")
    value = os.environ.get(args.key_env, "")
    if not value:
        raise ConfigurationError(
            f"no key: set ${args.key_env} (or name another variable with --key-env), "
            "or pass --key-file, or --public-test-key"
        )
    return value


def _signer(args: argparse.Namespace) -> Signer:
    path = getattr(args, "rsa_private_key_file", None)
    return RsaSigner(path.read_bytes()) if path else Md5Signer(_md5_key(args))


def _verifier(args: argparse.Namespace) -> Verifier:
    path = getattr(args, "rsa_public_key_file", None)
    return RsaVerifier(path.read_bytes()) if path else Md5Signer(_md5_key(args))


def _body(args: argparse.Namespace) -> bytes:
    if args.field:
        pairs = [item.partition("=") for item in args.field]
        bad = [name for name, sep, _ in pairs if not sep]
        if bad:
            raise ConfigurationError(f"--field {bad[0]!r} is not NAME=VALUE")
        # Fields given one by one are taken literally: joined raw, not percent-decoded.
        return "&".join(f"{n}={v}" for n, _, v in pairs).encode("utf-8")
    if args.body_file is not None:
        return bytes(args.body_file.read_bytes().strip())
    if args.body == "-":
        return sys.stdin.buffer.read().strip()
    return str(args.body).strip().encode("utf-8")


def _cmd_sign(args: argparse.Namespace) -> int:
    schema = schema_named(args.message)
    raw = _body(args)
    fields = decode_payload(raw, form=not args.field)
    signer = _signer(args)
    print(f"message: {schema.name} (signType {signer.sign_type.value})")
    print("fields in signing order:")
    for name in schema.signed_names:
        print(f"  {name:<13} = {fields.get(name, '')}")
    unused = sorted(set(fields) - set(schema.by_wire))
    if unused:
        print(f"not part of {schema.name}, ignored: {', '.join(unused)}")
    source = source_of(schema, fields)
    print(f"source: {source}")
    if isinstance(signer, Md5Signer):
        print(f"inner:  {inner_digest(source)}")
    hmac = signer.sign(source)
    print(f"hmac:   {hmac}")
    present = fields.get(schema.signature_field.wire, "")
    if present:
        if isinstance(signer, Md5Signer) and present.lower() == hmac:
            print("the body's hmac: MATCHES")
        elif isinstance(signer, Md5Signer):
            print(f"the body's hmac: {present} DIFFERS from the one above:")
            print("  another key, another field order, or a value changed; try `cmpay verify`")
        else:
            print("the body's hmac: not compared (an RSA signature is checked with the public")
            print("  key: use `cmpay verify --rsa-public-key-file ...`)")
    return 0


def _cmd_verify(args: argparse.Namespace) -> int:
    raw = _body(args)
    verifier = _verifier(args)
    try:
        found = search(raw, verifier, args.message)
    except Unsearchable as exc:
        print(exc)
        return 1
    if not found.matched:
        return _no_match(args, verifier, found.candidates, found.signature)
    best, rest = found.matched[0], found.matched[1:]
    print(f"MATCH: field order of {best.schema.name}, {best.how}, source as {best.encoding}")
    print(f"  source: {best.source}")
    if best.encoding != "utf-8":
        print(f"  the sender hashed the {best.encoding.upper()} bytes of the source; CMPay signs")
        print("  its UTF-8 bytes whatever characterSet says: fix the sender (the gateway answers")
        print("  such a request IPS0008)")
    if rest and not args.all:
        print(f"({len(rest)} other readings match too; --all lists them)")
    for other in rest if args.all else ():
        print(f"MATCH: field order of {other.schema.name}, {other.how}, as {other.encoding}")
        print(f"  source: {other.source}")
    return 0


def _no_match(
    args: argparse.Namespace,
    verifier: Verifier,
    candidates: Sequence[Candidate],
    signature: str,
) -> int:
    print(f"NO MATCH: hmac {signature} fits none of {len(candidates)} readings tried")
    print("(field orders x decodings x source encodings UTF-8, GBK, GB2312).")
    print("Usual causes: another signKey (check it first: the one for this merchantId, no")
    print("trailing newline), a field missing or extra, a value changed in transit, or the")
    print("source hashed in another encoding.")
    likely = candidates[0].schema if candidates else None
    if likely is None:
        return 1
    if isinstance(verifier, Md5Signer):
        print(f"What this key gives for {likely.name}:")
        shown = 0
        for candidate in candidates:
            if candidate.schema is not likely:
                continue
            hmac = verifier.sign_bytes(candidate.data)
            print(f"  {hmac}  {candidate.how}, source as {candidate.encoding}")
            shown += 1
            if shown >= 8 and not args.all:
                print("  (--all lists every reading)")
                break
    print(f"source in {likely.name} order: {candidates[0].source}")
    return 1


def _cmd_sandbox(args: argparse.Namespace) -> int:
    from ._sandbox import CONTROL_TOKEN_HEADER, Sandbox, SandboxClock
    from ._serve import _uvicorn, exposure_warning

    uvicorn = _uvicorn()
    warning = exposure_warning(args.host)
    if warning is not None:
        print(f"cmpay sandbox: WARNING: {warning}", file=sys.stderr, flush=True)
    if args.port == 0:  # choose the free port now, so that the endpoint printed is real
        with socket.socket() as probe:
            probe.bind((args.host, 0))
            args.port = probe.getsockname()[1]
    base = f"http://{args.host}:{args.port}"
    app = Sandbox(
        clock=SandboxClock(args.minute_seconds),
        base_url=args.base_url or base,
        on_attempt=_print_attempt,
    )
    try:
        armed = app.arm(dict(_fault_argument(item) for item in args.fault))
    except ValueError as exc:
        raise ConfigurationError(f"--fault: {exc}") from None
    print("cmpay-async sandbox gateway")
    print(f"  merchant id : {PUBLIC_TEST_MERCHANT}")
    print("  signKey     : the vendor's public test signKey, not a secret:")
    print("                cmpay_async.testing.PUBLIC_TEST_KEY, or --public-test-key in sign")
    print(f"  endpoint    : {base}/ips/cmpayService   (CmpayClient(endpoint=...))")
    print(f"  orders      : {base}/_sandbox/orders")
    print(f"  token       : {app.control_token}   ({CONTROL_TOKEN_HEADER}, for POST /_sandbox/*)")
    print(f'  faults      : POST {base}/_sandbox/faults  {{"fail_next": "IPS0008"}}')
    print(f"                as application/json with {CONTROL_TOKEN_HEADER}: {app.control_token}")
    if armed:
        print(f"  armed       : {', '.join(armed)}")
    print(f"  time        : one gateway minute = {args.minute_seconds:g} s")
    sys.stdout.flush()
    uvicorn.run(app, host=args.host, port=args.port, log_level="info", lifespan="on")
    return 0


def _fault_argument(item: str) -> tuple[str, object]:
    """``NAME`` (a flag), ``NAME=VALUE`` (JSON if it parses, else the text)."""
    name, sep, text = item.partition("=")
    if not sep:
        return name, True
    try:
        return name, json.loads(text)
    except ValueError:
        return name, text


def _print_attempt(order: Any, attempt: Any) -> None:
    """The CLI sandbox's line per notification attempt, as it is answered."""
    answer = f"HTTP {attempt.status} {attempt.answer!r}" if attempt.status else attempt.answer
    flags = "".join(
        f" ({name})" for name in ("duplicate", "forged") if getattr(attempt, name, False)
    )
    print(
        f"notify {attempt.kind} orderId={order.order_id} attempt {attempt.attempt}{flags} "
        f"at minute {attempt.minute:g}: {answer}",
        flush=True,
    )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``python -m cmpay_async`` and the ``cmpay`` script."""
    args = _parser().parse_args(argv)
    try:
        if args.command == "demo":
            from ._demo import run_demo

            return run_demo(seconds_per_minute=args.minute_seconds, backend=args.backend)
        if args.command == "sandbox":
            return _cmd_sandbox(args)
        if args.command == "sign":
            return _cmd_sign(args)
        if args.command == "reconcile":
            return _cmd_reconcile(args)
        return _cmd_verify(args)
    except (CmpayError, OSError) as exc:
        print(f"cmpay: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
