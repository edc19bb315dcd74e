"""Development tasks: ``nox`` runs the tests (on every supported Python), the integration
tests, lint, mypy and the release build check; ``nox -s bench`` runs the benchmarks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
from pathlib import Path

import nox

nox.options.sessions = ["tests", "integration", "lint", "mypy", "docs", "build"]
nox.options.reuse_existing_virtualenvs = True
# uv builds the environments in seconds where it is installed; plain virtualenv otherwise.
nox.options.default_venv_backend = "uv|virtualenv"

PYPROJECT = nox.project.load_toml("pyproject.toml")

#: The versions the package supports (pyproject's classifiers); `tests` runs on each.
PYTHONS = ["3.10", "3.11", "3.12", "3.13"]


def _runs(command: str) -> bool:
    try:
        return subprocess.run([command, "-V"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.TimeoutExpired):
        return False


def _expose_pyenv_pythons() -> None:
    """Put each supported version that pyenv installed on PATH, ahead of pyenv's shims.

    nox looks for `python3.X` on PATH; a pyenv shim for a version that is installed but not
    selected answers "command not found", so the install's own bin directory goes first.
    """
    pyenv = shutil.which("pyenv")
    root = os.environ.get("PYENV_ROOT") or (
        subprocess.run([pyenv, "root"], capture_output=True, text=True).stdout.strip()
        if pyenv
        else str(Path.home() / ".pyenv")
    )
    if not Path(root, "versions").is_dir():
        return
    for version in PYTHONS:
        if _runs(f"python{version}"):
            continue
        installs = [p for p in Path(root, "versions").glob(f"{version}.*") if p.is_dir()]
        installs = [p for p in installs if re.fullmatch(rf"{re.escape(version)}\.\d+", p.name)]
        if installs:
            newest = max(installs, key=lambda p: int(p.name.rsplit(".", 1)[1]))
            os.environ["PATH"] = f"{newest / 'bin'}{os.pathsep}{os.environ['PATH']}"


_expose_pyenv_pythons()


@nox.session(python=PYTHONS)
def tests(session: nox.Session) -> None:
    """Run the test suite but the integration tests; every async test on asyncio and trio."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "tests"))
    session.run("pytest", "-m", "not integration and not docs", *session.posargs)


# On the newest supported Python, not on whichever runs nox: a fresh machine's default is often
# the newest, and 3.13 warns about leaks (unclosed sqlite3 connections) that older ones hide.
@nox.session(python=PYTHONS[-1])
def integration(session: nox.Session) -> None:
    """Tests with real worker processes, Redis, PostgreSQL and a fresh venv (slow; once)."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "tests"))
    session.run("pytest", "-m", "integration", *session.posargs)


@nox.session
def lint(session: nox.Session) -> None:
    """Ruff: lint and formatting."""
    session.install(*nox.project.dependency_groups(PYPROJECT, "lint"))
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session
def mypy(session: nox.Session) -> None:
    """mypy --strict over the package and a file that uses the public API as a user would, then
    pyright in standard mode over the same ([tool.pyright] in pyproject.toml)."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "typing"))
    session.run("mypy", "cmpay_async", "tests/typing_usage.py", "recipes")
    session.run("pyright")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark in one process; results go to benchmarks/results.json."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def soak(session: nox.Session) -> None:
    """The quick soak (root: network namespaces; about 3 minutes; not in CI's sessions).

    Three merchant nodes share a private PostgreSQL and Redis, faults are injected, and every
    paid order must be handled exactly once; report in soak-out/ (docs/scale.md). Arguments
    replace the default `--quick --out soak-out`: `nox -s soak -- --quick --store redis`,
    or `nox -s soak -- --out DIR` for the full run (100,000 payments, over an hour).
    """
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "bench"))
    args = session.posargs or ["--quick", "--out", "soak-out"]
    session.run("python", "-m", "benchmarks.soak", *args)


#: The Mermaid the docs site serves itself (no CDN): the npm registry's package, pinned by
#: version and by the SHA-512 of the file taken from it.
MERMAID_VERSION = "11.17.2"
MERMAID_SHA512 = (
    "bd51aa106f9fbd96409b0035d4b1b568b36e5d09eb6aa64f5642f5ef3bf5ff4a"
    "83b409a83e5ef485723aa19648e082f9ecb8237ab4ed7820a94ecd6928858b9b"
)
MERMAID_TARGET = Path("docs/assets/vendor/mermaid.min.js")


def _sha512(data: bytes) -> str:
    import hashlib

    return hashlib.sha512(data).hexdigest()


def _vendor_mermaid(session: nox.Session) -> None:
    """Put the pinned mermaid.min.js (and its license) into docs/assets/vendor/."""
    import json
    import tarfile
    import tempfile

    if MERMAID_TARGET.is_file() and _sha512(MERMAID_TARGET.read_bytes()) == MERMAID_SHA512:
        return
    npm = shutil.which("npm")
    if npm is None:
        session.error(
            "the docs need npm to take Mermaid from the npm registry (apt-get install npm)"
        )
    with tempfile.TemporaryDirectory() as tmp:
        # npm checks the tarball against the registry's integrity hash; the file's own hash is
        # checked below against the pin, so a re-published version cannot slip in.
        packed = subprocess.run(
            [npm, "pack", f"mermaid@{MERMAID_VERSION}", "--json", "--prefer-offline"],
            cwd=tmp,
            capture_output=True,
            text=True,
            check=False,
        )
        if packed.returncode != 0:
            session.error(f"npm pack mermaid@{MERMAID_VERSION} failed: {packed.stderr[-2000:]}")
        (info,) = json.loads(packed.stdout)
        with tarfile.open(Path(tmp, info["filename"])) as archive:
            script = archive.extractfile("package/dist/mermaid.min.js")
            licence = archive.extractfile("package/LICENSE")
            if script is None or licence is None:
                session.error(f"mermaid@{MERMAID_VERSION} has no dist/mermaid.min.js or LICENSE")
            data, licence_text = script.read(), licence.read()
    if _sha512(data) != MERMAID_SHA512:
        session.error(f"mermaid@{MERMAID_VERSION}'s mermaid.min.js is not the pinned one")
    MERMAID_TARGET.parent.mkdir(parents=True, exist_ok=True)
    MERMAID_TARGET.write_bytes(data)
    MERMAID_TARGET.with_name("mermaid.LICENSE").write_bytes(licence_text)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with --strict (every page and link resolves),
    then open every page in Chromium with every request beyond loopback blocked: each diagram
    must be drawn, no console error, no request to another host."""
    session.install(
        ".",
        *nox.project.dependency_groups(PYPROJECT, "docs"),
        *nox.project.dependency_groups(PYPROJECT, "docs-check"),
    )
    _vendor_mermaid(session)
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)
    session.run(
        "pytest", "-m", "docs", "tests/e2e/test_docs_site.py", env={"CMPAY_DOCS_SITE": "site"}
    )


@nox.session(name="docs-zensical")
def docs_zensical(session: nox.Session) -> None:
    """The same site built by Zensical (Material's maintained successor) from mkdocs.yml and
    checked the same way; not in the default run: it keeps the way to a move open."""
    session.install(
        ".",
        "zensical>=0.0.73",
        "mkdocstrings[python]>=0.26",
        "pymdown-extensions>=10",
        *nox.project.dependency_groups(PYPROJECT, "docs-check"),
    )
    _vendor_mermaid(session)
    # Zensical writes to mkdocs.yml's site_dir (site/), as the docs session does.
    session.run("zensical", "build", "--strict", "--clean", "-f", "mkdocs.yml")
    session.run(
        "pytest", "-m", "docs", "tests/e2e/test_docs_site.py", env={"CMPAY_DOCS_SITE": "site"}
    )


@nox.session
def build(session: nox.Session) -> None:
    """Build sdist and wheel, check them, install the wheel alone and run the demo from it."""
    import tarfile
    import tempfile
    import zipfile

    session.install("build>=1.2", "twine>=5")
    dist = Path("dist")
    shutil.rmtree(dist, ignore_errors=True)
    session.run("python", "-m", "build", "--outdir", str(dist))
    artifacts = sorted(str(p) for p in dist.iterdir())
    session.run("twine", "check", "--strict", *artifacts)
    (wheel,) = dist.glob("*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    if "cmpay_async/py.typed" not in names:
        session.error("the wheel has no cmpay_async/py.typed")
    stray = [n for n in names if n.startswith(("tests/", "benchmarks/", "recipes/"))]
    stray += [n for n in names if "__pycache__" in n or n.endswith((".pyc", ".pyo"))]
    if stray:
        session.error(f"the wheel carries files it should not: {stray[:5]}")
    if not any(n.endswith(".dist-info/licenses/LICENSE") for n in names):
        session.error("the wheel carries no LICENSE")
    (sdist,) = dist.glob("*.tar.gz")
    with tarfile.open(sdist) as archive:
        members = [m.split("/", 1)[1] for m in archive.getnames() if "/" in m]
        pkg_info = archive.extractfile(f"{sdist.name.removesuffix('.tar.gz')}/PKG-INFO")
        metadata = pkg_info.read().decode() if pkg_info else ""
    # The sdist leaves the tests out on purpose (pyproject: they need the whole repository).
    if "LICENSE" not in members or any(m.startswith("tests/") for m in members):
        session.error(f"the sdist must hold LICENSE and no tests/: {sorted(members)[:20]}")
    for line in ("License-Expression: MIT", "License-File: LICENSE"):
        if line not in metadata:
            session.error(f"the sdist's PKG-INFO lacks {line!r}")
    with tempfile.TemporaryDirectory() as tmp:
        venv = Path(tmp, "venv")
        session.run("python", "-m", "venv", str(venv))
        python = str(venv / "bin" / "python")
        session.run(
            python, "-m", "pip", "install", "-q", f"{wheel.resolve()}[sandbox]", external=True
        )
        expected = re.search(
            r'__version__ = "([^"]+)"', Path("cmpay_async/_version.py").read_text()
        )
        # From a directory without the source tree, so only the installed wheel can answer.
        session.chdir(tmp)
        version = session.run(python, "-m", "cmpay_async", "--version", external=True, silent=True)
        if expected is None or f"cmpay-async {expected.group(1)}" not in str(version):
            session.error(f"--version printed {version!r}")
        session.run(python, "-m", "cmpay_async", "demo", external=True)


@nox.session
def mutants(session: nox.Session) -> None:
    """Mutation testing (mutmut) of the modules in pyproject's [tool.mutmut]; writes
    benchmarks/MUTATION.md. Slow (not in CI); `nox -s mutants -- NAME_GLOB` runs a subset."""
    # Pinned: tests/support/mutmut_plugin.py reads mutmut's state (which code runs at import).
    session.install(
        ".",
        "mutmut~=3.8.0",
        "pytest-timeout",
        *nox.project.dependency_groups(PYPROJECT, "tests"),
    )
    # Three workers a core: a mutant's tests mostly wait on sockets and timers, not the CPU.
    workers = str(3 * (os.cpu_count() or 2))
    started = time.monotonic()
    session.run(
        "mutmut",
        "run",
        "--max-children",
        workers,
        *session.posargs,
        env={
            # The shift fuzzer's 100,000 payloads through mutmut's trampolines: a twentieth
            # of them outlived the 30 s limit in the stats run.
            "CMPAY_FUZZ_DIVISOR": "100",
            "CMPAY_ANYIO_BACKENDS": "asyncio",
            # A mutant that makes a test hang (a sandbox thread that died, a loop that never
            # ends) fails that test after 30 s instead of holding a worker until mutmut's
            # own timeout, several times longer.
            "PYTEST_ADDOPTS": "--timeout=30",
            # A mutant of code that runs at import is judged by re-importing the package and
            # the tests (tests/support/mutmut_plugin.py); without cached bytecode each such run
            # compiles some 150,000 mutated lines again (about 1 s of the 1.2 s an import
            # takes). Some machines set this variable for everything; mutmut's tree is
            # throwaway, so its caches may be written.
            "PYTHONDONTWRITEBYTECODE": None,
        },
    )
    minutes, seconds = divmod(round(time.monotonic() - started), 60)
    session.run("mutmut", "export-cicd-stats")
    session.env["MUTMUT_ELAPSED"] = f"{minutes} min {seconds:02d} s ({workers} workers)"
    session.run("python", "benchmarks/mutation_report.py")


@nox.session
def semantic(session: nox.Session) -> None:
    """Hand-written semantic mutants (tests/semantic_mutants.json), each judged by its test
    files on asyncio and trio; fails if any survives. `nox -s semantic -- --write` records
    benchmarks/SEMANTIC.md; `-- ID ...` judges some."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "tests"))
    session.run("python", "benchmarks/semantic_mutants.py", *session.posargs)
