"""The command line: sign/verify reproduce the vectors, keys never come from arguments."""

from __future__ import annotations

import os
import re
import subprocess
import sys
import venv
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from cmpay_async._cli import main
from tests.support.helpers import (
    MD5_VECTORS,
    NOTIFY_BODY,
    TEST_KEY,
    chinese_direct_pay_fields,
    load_vectors,
    reference_hmac,
)

VECTORS = MD5_VECTORS["vectors"]
ROOT = Path(__file__).parents[2]
DIRECT_PAY_ORDER = load_vectors("field_orders.json")["orders"]["DirectPayConfirm"]


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Run the CLI in-process; return its exit code and output."""
    code = main(list(argv))
    return code, capsys.readouterr().out


def _message_args(vector: dict[str, Any]) -> list[str]:
    if "body" in vector:
        return [vector["message"], "--body", vector["body"]]
    args = [vector["message"]]
    for name, value in vector["fields"].items():
        args += ["--field", f"{name}={value}"]
    return args


@pytest.mark.parametrize("vector", VECTORS, ids=[v["name"] for v in VECTORS])
def test_sign_reproduces_the_vectors(
    vector: dict[str, Any], capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """`cmpay sign` prints the exact source and hmac of each PROTOCOL.md vector."""
    monkeypatch.setenv("CMPAY_SIGN_KEY", TEST_KEY)

    code, out = run(capsys, "sign", *_message_args(vector))

    assert 0 == code
    assert f"source: {vector['source']}" in out
    assert f"hmac:   {vector['hmac']}" in out
    assert TEST_KEY not in out


def test_sign_prints_the_inner_digest_and_field_order(capsys: pytest.CaptureFixture[str]) -> None:
    """The debugger shows each field in signing order and the inner HMAC."""
    code, out = run(capsys, "sign", "PageNotify", "--body", NOTIFY_BODY, "--public-test-key")

    assert 0 == code
    assert "inner:  380219e2a4319a577f6403d32a3bb922" in out
    assert out.index("merchantId") < out.index("payNo") < out.index("fee ")


def test_verify_names_the_matching_order_and_decoding(capsys: pytest.CaptureFixture[str]) -> None:
    """`cmpay verify` says which field order and decoding made the hmac match."""
    code, out = run(capsys, "verify", "--body", NOTIFY_BODY, "--public-test-key")

    assert 0 == code
    assert "MATCH: field order of PageNotify, form-decoded UTF-8" in out


def test_verify_reports_no_match(capsys: pytest.CaptureFixture[str]) -> None:
    """An altered body matches nothing, and the debugger says so with the source it built."""
    altered = NOTIFY_BODY.replace("amount=100", "amount=101")

    code, out = run(capsys, "verify", "PageNotify", "--body", altered, "--public-test-key")

    assert 1 == code
    assert "NO MATCH" in out
    assert "source in PageNotify order: 888009941120001" in out


def test_key_from_file_and_env(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys come from a file or a named environment variable."""
    key_file = tmp_path / "key"
    key_file.write_text(TEST_KEY + "\n")
    monkeypatch.setenv("MY_KEY", TEST_KEY)

    assert 0 == run(capsys, "verify", "--body", NOTIFY_BODY, "--key-file", str(key_file))[0]
    assert 0 == run(capsys, "verify", "--body", NOTIFY_BODY, "--key-env", "MY_KEY")[0]


def test_missing_key_is_a_clear_error(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a key the CLI exits 2 and says where a key may come from."""
    monkeypatch.delenv("CMPAY_SIGN_KEY", raising=False)

    assert 2 == main(["sign", "PageNotify", "--body", NOTIFY_BODY])
    assert "CMPAY_SIGN_KEY" in capsys.readouterr().err


def test_a_key_argument_does_not_exist(capsys: pytest.CaptureFixture[str]) -> None:
    """There is no way to pass the key itself on the command line."""
    with pytest.raises(SystemExit) as info:
        main(["sign", "PageNotify", "--body", NOTIFY_BODY, "--key", TEST_KEY])

    assert 2 == info.value.code


COMMANDS = [[], ["demo"], ["sandbox"], ["sign"], ["verify"], ["reconcile"]]


def _help(capsys: pytest.CaptureFixture[str], command: list[str]) -> str:
    with pytest.raises(SystemExit) as info:
        main([*command, "--help"])
    assert 0 == info.value.code
    return capsys.readouterr().out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """`--help` works on the program and on every command."""
    assert "usage:" in _help(capsys, command)


@pytest.mark.parametrize("command", COMMANDS)
def test_every_option_is_explained(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    """In every command's help, each option has a line of text after its name."""
    out = _help(capsys, command)
    options = out.split("options:", 1)[1]
    # An option's entry: its names (and metavar) at two spaces, then its help on the same
    # line or the next; an entry directly followed by another one has no help.
    entries = re.findall(r"^  (-\S.*?)(?:\n|$)((?:^ {6,}\S.*(?:\n|$))*)", options, re.M)
    assert entries
    bare = [names for names, more in entries if not re.search(r"\s{2,}\S", names) and not more]
    assert [] == bare


@pytest.mark.parametrize(
    ("command", "option", "shown"),
    [
        (["demo"], "--backend", "(default: asyncio)"),
        (["demo"], "--minute-seconds", "(default: 0.01)"),
        (["reconcile"], "--concurrency", "(default: 8)"),
        (["reconcile"], "--per-second", "(default: 20.0)"),
        (["reconcile"], "--key-env", "(default: CMPAY_SIGN_KEY)"),
        (["reconcile"], "--endpoint", "(default: the production gateway"),
        (["reconcile"], "--merchant-id", "(default: $CMPAY_MERCHANT_ID"),
        (["sign"], "--key-env", "(default: CMPAY_SIGN_KEY)"),
    ],
)
def test_help_shows_the_defaults(
    command: list[str], option: str, shown: str, capsys: pytest.CaptureFixture[str]
) -> None:
    """An option's help says what happens when it is left out."""
    out = " ".join(_help(capsys, command).split())
    entry = out.split(f" {option} ", 1)[1].split(" --", 1)[0]
    assert shown in entry


def _readme_command(keyword: str) -> str:
    for line in (ROOT / "README.md").read_text("utf-8").splitlines():
        if line.startswith("python -m pip install") and keyword in line:
            return line
    raise AssertionError(f"README has no one-line command with {keyword!r}")


@pytest.mark.integration  # a fresh venv and a pip install: once, not per Python
def test_readme_demo_command_in_a_fresh_venv(tmp_path: Path) -> None:
    """The README's demo line, run in a new virtual environment, exits 0 with the timeline."""
    command = _readme_command("demo")
    clone = tmp_path / "clone"
    subprocess.run(
        ["git", "clone", "--quiet", "--depth", "1", f"file://{ROOT}", str(clone)],
        check=True,
    )
    env_dir = tmp_path / "venv"
    venv.create(env_dir, with_pip=True)
    bin_dir = env_dir / ("Scripts" if os.name == "nt" else "bin")
    environment = {**os.environ, "PATH": f"{bin_dir}{os.pathsep}{os.environ['PATH']}"}
    environment.pop("PYTHONPATH", None)
    environment["VIRTUAL_ENV"] = str(env_dir)

    result = subprocess.run(
        ["bash", "-c", command],
        cwd=clone,
        env=environment,
        capture_output=True,
        text=True,
        timeout=600,
    )

    assert 0 == result.returncode, result.stdout[-3000:] + result.stderr[-3000:]
    assert "OK: every step verified" in result.stdout
    assert "OfflineNotify #1 verified" in result.stdout
    assert "answered FAIL on purpose" in result.stdout


def test_module_runs_as_a_script() -> None:
    """`python -m cmpay_async --help` works in a subprocess (the package's __main__)."""
    result = subprocess.run(
        [sys.executable, "-m", "cmpay_async", "--help"], capture_output=True, text=True, timeout=60
    )

    assert 0 == result.returncode
    assert "demo" in result.stdout


def test_rsa_sign_and_verify_from_key_files(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """RSA keys come from files too; verify names the match for an RSA notification."""
    from cryptography.hazmat.primitives import serialization

    from cmpay_async import RsaSigner
    from cmpay_async.testing import sign_notification
    from tests.support.helpers import rsa_key

    key = rsa_key()
    private = tmp_path / "merchant.pem"
    private.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    public = tmp_path / "gateway.der.hex"
    public.write_text(
        key.public_key()
        .public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
        .hex()
    )
    body = sign_notification(kind="PageNotify", signer=RsaSigner(key)).decode()

    code, out = run(capsys, "verify", "--body", body, "--rsa-public-key-file", str(public))
    assert 0 == code
    assert "MATCH: field order of PageNotify" in out

    code, out = run(
        capsys, "sign", "PageNotify", "--body", body, "--rsa-private-key-file", str(private)
    )
    assert 0 == code
    assert "signType RSA" in out
    assert "inner:" not in out


def _chinese_request(sign_encoding: str) -> tuple[str, str]:
    """A DirectPayConfirm body with Chinese fields, its hmac over the source in this encoding.

    Returns (body, source). The body itself is UTF-8 form data, as a PHP shop whose page is
    UTF-8 but whose signing code converts to GBK first (the classic IPS0008) would send.
    """
    fields = chinese_direct_pay_fields()
    # The document's DirectPayConfirm order (section 7.1, kept as data), the fields present here.
    order = [name for name in DIRECT_PAY_ORDER if name in fields]
    source = "".join(fields[name] for name in order)
    fields["hmac"] = reference_hmac(source.encode(sign_encoding))
    return urlencode(fields), source


def test_verify_finds_a_source_hashed_as_gbk(capsys: pytest.CaptureFixture[str]) -> None:
    """The PHP-style bug: hmac over GBK bytes. verify names it instead of NO MATCH."""
    body, source = _chinese_request("gbk")

    code, out = run(capsys, "verify", "--body", body, "--public-test-key")

    assert 0 == code
    assert "MATCH: field order of DirectPayConfirm, form-decoded UTF-8, source as gbk" in out
    assert f"  source: {source}" in out
    assert "hashed the GBK bytes" in out
    assert 1 == out.count("MATCH:")


def test_verify_finds_the_utf8_source_first(capsys: pytest.CaptureFixture[str]) -> None:
    """The same body signed the right way matches as UTF-8 and says nothing about GBK."""
    body, _ = _chinese_request("utf-8")

    code, out = run(capsys, "verify", "DirectPayConfirm", "--body", body, "--public-test-key")

    assert 0 == code
    assert "source as utf-8" in out
    assert "GBK" not in out


def test_verify_prints_one_best_match_and_the_rest_with_all(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An ASCII body fits several field orders: one MATCH line, all of them with --all."""
    code, out = run(capsys, "verify", "--body", NOTIFY_BODY, "--public-test-key")
    assert 0 == code
    assert 1 == out.count("MATCH:")
    assert "MATCH: field order of PageNotify" in out  # its own type comes first
    assert "other readings match too; --all lists them" in out

    code, every = run(capsys, "verify", "--body", NOTIFY_BODY, "--public-test-key", "--all")
    assert 0 == code
    assert every.count("MATCH:") > 1


def test_no_match_shows_what_the_key_gives(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With another key: NO MATCH, the signKey named first, and the hmac each reading gives."""
    other_key = "another-merchant-key-0123456789"
    monkeypatch.setenv("CMPAY_SIGN_KEY", other_key)
    body, source = _chinese_request("utf-8")

    code, out = run(capsys, "verify", "DirectPayConfirm", "--body", body)

    assert 1 == code
    assert "NO MATCH" in out
    assert "another signKey (check it first" in out
    assert f"{reference_hmac(source.encode('utf-8'), other_key)}  form-decoded UTF-8" in out
    assert f"{reference_hmac(source.encode('gbk'), other_key)}  form-decoded UTF-8" in out
    assert other_key not in out


def test_sign_compares_with_the_hmac_in_the_body(capsys: pytest.CaptureFixture[str]) -> None:
    """`cmpay sign` on a signed body says whether its hmac is the one it computes."""
    body, _ = _chinese_request("utf-8")
    code, out = run(capsys, "sign", "DirectPayConfirm", "--body", body, "--public-test-key")
    assert 0 == code
    assert "the body's hmac: MATCHES" in out

    gbk_body, _ = _chinese_request("gbk")
    code, out = run(capsys, "sign", "DirectPayConfirm", "--body", gbk_body, "--public-test-key")
    assert 0 == code
    assert "DIFFERS" in out


def test_demo_verifies_every_step(capsys: pytest.CaptureFixture[str]) -> None:
    """`cmpay demo` in-process (the fresh-venv run is an integration test): all steps pass."""
    code, out = run(capsys, "demo")

    assert 0 == code, out
    assert "OK: every step verified" in out
    assert "PageNotify verified in the buyer's browser post" in out


def test_version_comes_from_the_one_place(capsys: pytest.CaptureFixture[str]) -> None:
    """`cmpay --version` prints what cmpay_async/_version.py says (the build reads it too)."""
    written = re.search(r'__version__ = "([^"]+)"', (ROOT / "cmpay_async/_version.py").read_text())
    assert written is not None

    with pytest.raises(SystemExit) as done:
        main(["--version"])

    assert 0 == done.value.code
    assert f"cmpay-async {written.group(1)}" == capsys.readouterr().out.strip()
