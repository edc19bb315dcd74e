"""The client's own cost: construction time, and CPU time per create_payment.

Round trips against the sandbox are bound by the sandbox (about 2 ms per call on a 2-core
machine shared with the client), and their ratio to raw httpx swung from 0.66 to 1.27
between runs. Here the server is ``benchmarks/canned.py`` in another process, answering the
same signed bytes at almost no cost, and the figure is ``time.process_time()`` of the client
process per call: the client's CPU, next to raw httpx posting a prebuilt body to the same
server, rounds alternating between the two so that noise weighs on both.

Only public API is used, so the same file measures an older version of the package:
``python -m benchmarks.client_cost`` in an environment where that version is installed.
"""

from __future__ import annotations

import argparse
import contextlib
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
import httpx

from cmpay_async import CmpayClient, Md5Signer, Order, build_payment_request
from cmpay_async.testing import PUBLIC_TEST_KEY, PUBLIC_TEST_MERCHANT, Sandbox

ENDPOINT_PATH = "/ips/cmpayService"
REQUEST_ID = "20261126093000benchmark0000001"
ORDER = Order(
    amount=1250,
    order_id="BENCH-CPU-1",
    product_name="咖啡 Coffee",
    callback_url="https://shop.example/cmpay/return",
    notify_url="https://shop.example/cmpay/notify",
    bank_abbr="ICBC",
)


def _no_op(event: object) -> None:
    pass


def _client(endpoint: str, mode: str = "plain") -> CmpayClient:
    """``plain``; ``hooks``: both request hooks set (no-ops); ``tracing``: spans recorded by
    the OpenTelemetry SDK and dropped (no exporter), the cost of tracing itself."""
    extra: dict[str, Any] = {}
    if mode == "hooks":
        extra = {"on_request_start": _no_op, "on_request_end": _no_op}
    elif mode == "tracing":
        from opentelemetry.sdk.trace import TracerProvider

        extra = {"tracer_provider": TracerProvider()}
    return CmpayClient(
        merchant_id=PUBLIC_TEST_MERCHANT,
        signer=Md5Signer(PUBLIC_TEST_KEY),
        endpoint=endpoint,
        **extra,
    )


def _prepared() -> Any:
    import datetime as dt

    return build_payment_request(
        ORDER,
        merchant_id=PUBLIC_TEST_MERCHANT,
        request_id=REQUEST_ID,
        ip_address="203.0.113.7",
        signer=Md5Signer(PUBLIC_TEST_KEY),
        today=dt.date(2026, 11, 26),
    )


async def _canned_answer() -> bytes:
    """The sandbox's real signed answer to one order with REQUEST_ID."""
    prepared = _prepared()
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=Sandbox())) as http:
        response = await http.post(
            f"http://sandbox.test{ENDPOINT_PATH}",
            content=prepared.body,
            headers={"content-type": prepared.content_type},
        )
    assert b"returnCode=000000" in response.content, response.content[:200]
    return response.content


@contextlib.contextmanager
def canned_gateway() -> Iterator[str]:
    """``benchmarks/canned.py`` in its own process; yields the endpoint URL."""
    answer = anyio.run(_canned_answer)
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "answer"
        path.write_bytes(answer)
        process = subprocess.Popen(
            [sys.executable, "-m", "benchmarks.canned", str(path)],
            stdout=subprocess.PIPE,
            text=True,
        )
        try:
            assert process.stdout is not None
            port = int(process.stdout.readline())
            yield f"http://127.0.0.1:{port}{ENDPOINT_PATH}"
        finally:
            process.terminate()
            process.wait(timeout=20)
            if process.stdout is not None:
                process.stdout.close()


def construction_us(number: int, rounds: int) -> float:
    """Median microseconds to build a CmpayClient (the first use in a loop builds its pool)."""
    samples = []
    for _ in range(rounds):
        start = time.perf_counter()
        for _ in range(number):
            _client("https://gateway.example/ips/cmpayService")
        samples.append((time.perf_counter() - start) / number * 1e6)
    return statistics.median(samples)


async def _cpu_per_call(endpoint: str, calls: int, rounds: int) -> tuple[float, float, float]:
    prepared = _prepared()
    headers = {"content-type": prepared.content_type}
    url = httpx.URL(endpoint)
    async with (
        _client(endpoint) as client,
        httpx.AsyncClient() as raw,
        httpx.AsyncHTTPTransport() as transport,
    ):
        # The floor under both: the same bytes handed straight to httpx's transport, as the
        # client does with its own pool (no cookies, auth, hooks or redirects to handle).
        floor_headers = [*raw.headers.raw, (b"content-type", prepared.content_type.encode())]
        timeout = httpx.Timeout(5.0).as_dict()

        async def ours() -> None:
            for _ in range(calls):
                await client.create_payment(ORDER, ip_address="203.0.113.7", request_id=REQUEST_ID)

        async def bare() -> None:
            for _ in range(calls):
                response = await raw.post(endpoint, content=prepared.body, headers=headers)
                assert response.status_code == 200

        async def floor() -> None:
            for _ in range(calls):
                request = httpx.Request(
                    "POST",
                    url,
                    content=prepared.body,
                    headers=floor_headers,
                    extensions={"timeout": timeout},
                )
                response = await transport.handle_async_request(request)
                await response.aread()
                await response.aclose()
                assert response.status_code == 200

        series = {"ours": ours, "raw": bare, "floor": floor}
        for fn in series.values():  # warm-up: connections, caches, memos
            await fn()
        samples: dict[str, list[float]] = {name: [] for name in series}
        for _ in range(rounds):
            for name, fn in series.items():
                start = time.process_time()
                await fn()
                samples[name].append((time.process_time() - start) / calls * 1e6)
    ours_us, raw_us, floor_us = (statistics.median(samples[name]) for name in series)
    return ours_us, raw_us, floor_us


async def _modes_cpu(endpoint: str, calls: int, rounds: int) -> dict[str, float]:
    clients = {mode: _client(endpoint, mode) for mode in ("plain", "hooks", "tracing")}
    samples: dict[str, list[float]] = {mode: [] for mode in clients}
    for client in clients.values():  # warm-up: connections, caches, memos
        await client.create_payment(ORDER, ip_address="203.0.113.7", request_id=REQUEST_ID)
    for _ in range(rounds):  # modes alternate within each round, so noise weighs on all
        for mode, client in clients.items():
            start = time.process_time()
            for _ in range(calls):
                await client.create_payment(ORDER, ip_address="203.0.113.7", request_id=REQUEST_ID)
            samples[mode].append((time.process_time() - start) / calls * 1e6)
    for client in clients.values():
        await client.aclose()
    return {mode: statistics.median(values) for mode, values in samples.items()}


def observability_cpu(endpoint: str, calls: int, rounds: int) -> dict[str, float]:
    """Median CPU microseconds per create_payment: plain, hooks set, tracing on."""
    return anyio.run(_modes_cpu, endpoint, calls, rounds)


def cpu_per_call(
    endpoint: str, calls: int, rounds: int, backend: str
) -> tuple[float, float, float]:
    """Median CPU microseconds per call: create_payment, raw httpx's ``client.post``, and
    the same bytes handed straight to httpx's transport (the floor under both)."""
    return anyio.run(_cpu_per_call, endpoint, calls, rounds, backend=backend)


async def _calls_only(endpoint: str, calls: int, raw: bool, mode: str = "plain") -> None:
    prepared = _prepared()
    headers = {"content-type": prepared.content_type}
    async with _client(endpoint, mode) as client, httpx.AsyncClient() as http:
        for _ in range(calls):
            if raw:
                await http.post(endpoint, content=prepared.body, headers=headers)
            else:
                await client.create_payment(ORDER, ip_address="203.0.113.7", request_id=REQUEST_ID)


def _instructions(
    endpoint: str, calls: int, raw: bool, mode: str = "plain", backend: str = "asyncio"
) -> int:
    """Instructions callgrind counts for a whole process making ``calls`` calls."""
    command = ["valgrind", "--tool=callgrind", "--callgrind-out-file=/dev/null"]
    command += [sys.executable, "-m", "benchmarks.client_cost", "--endpoint", endpoint]
    command += ["--calls", str(calls), "--backend", backend] + (["--raw"] if raw else [])
    command += ["--mode", mode] if mode != "plain" else []
    done = subprocess.run(command, capture_output=True, text=True, check=True)
    line = next(x for x in done.stderr.splitlines() if "Collected :" in x)
    return int(line.split(":")[-1])


def instructions_per_call(
    endpoint: str,
    few: int = 100,
    many: int = 600,
    modes: tuple[str, ...] = (),
    backend: str = "asyncio",
) -> dict[str, float]:
    """Instructions per call (callgrind: repeatable, unlike time), from two process sizes.

    ``modes`` adds ``create_payment, hooks`` and ``create_payment, tracing`` rows.
    """
    out = {}
    runs = [("create_payment", False, "plain"), ("raw httpx", True, "plain")]
    runs += [(f"create_payment, {mode}", False, mode) for mode in modes]
    for name, raw, mode in runs:
        small = _instructions(endpoint, few, raw, mode, backend)
        large = _instructions(endpoint, many, raw, mode, backend)
        out[name] = (large - small) / (many - few)
    return out


def main(argv: list[str] | None = None) -> int:
    """Print both figures for the installed version of the package."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.client_cost")
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument(
        "--instructions", action="store_true", help="count instructions per call (valgrind)"
    )
    parser.add_argument("--endpoint", help=argparse.SUPPRESS)  # a child of --instructions
    parser.add_argument("--raw", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument(
        "--mode",
        choices=("plain", "hooks", "tracing"),
        default="plain",
        help=argparse.SUPPRESS,
    )
    parser.add_argument(
        "--backend",
        choices=("asyncio", "trio"),
        default="asyncio",
        help="with --instructions: the event loop the calls run on",
    )
    parser.add_argument(
        "--observability",
        action="store_true",
        help="with --instructions: also hooks set and tracing on (this version only)",
    )
    args = parser.parse_args(argv)
    if args.endpoint:
        anyio.run(_calls_only, args.endpoint, args.calls, args.raw, args.mode, backend=args.backend)
        return 0
    if args.instructions:
        modes = ("hooks", "tracing") if args.observability else ()
        with canned_gateway() as endpoint:
            counts = instructions_per_call(endpoint, modes=modes, backend=args.backend)
        ours, raw = counts["create_payment"], counts["raw httpx"]
        print(
            f"{args.backend}: instructions per call: create_payment {ours:,.0f}, "
            f"raw httpx {raw:,.0f}"
        )
        print(f"ratio {ours / raw:.3f}; the client's own share {ours - raw:,.0f}")
        for mode in modes:
            cost = counts[f"create_payment, {mode}"]
            print(f"create_payment, {mode}: {cost:,.0f} ({cost / ours:.3f} of plain)")
        return 0
    print(f"CmpayClient(...) construction: {construction_us(200, 5):.1f} us")
    with canned_gateway() as endpoint:
        for backend in ("asyncio", "trio"):
            ours, raw, floor = cpu_per_call(endpoint, args.calls, args.rounds, backend)
            print(
                f"{backend}: create_payment {ours:.1f} us CPU/call, raw httpx {raw:.1f} us, "
                f"ratio {ours / raw:.2f}; raw transport {floor:.1f} us, ratio {ours / floor:.2f}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
