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
    session.run("pytest", "-m", "not integration", *session.posargs)


@nox.session
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
    """mypy --strict over the package and a file that uses the public API as a user would."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "typing"))
    session.run("mypy", "cmpay_async", "tests/typing_usage.py", "recipes")


@nox.session
def bench(session: nox.Session) -> None:
    """Run every benchmark in one process; results go to benchmarks/results.json."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "bench"))
    session.run("python", "-m", "benchmarks", *session.posargs)


@nox.session
def docs(session: nox.Session) -> None:
    """Build the documentation site into site/ with --strict (every page and link resolves)."""
    session.install(".", *nox.project.dependency_groups(PYPROJECT, "docs"))
    session.run("mkdocs", "build", "--strict", "--site-dir", "site", *session.posargs)


@nox.session
def build(session: nox.Session) -> None:
    """Build sdist and wheel, check them, install the wheel alone and run the demo from it."""
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
    # Pinned: tests/mutmut_plugin.py reads mutmut's state (which code runs at import).
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
            "CMPAY_FUZZ_DIVISOR": "20",
            "CMPAY_ANYIO_BACKENDS": "asyncio",
            # A mutant that makes a test hang (a sandbox thread that died, a loop that never
            # ends) fails that test after 30 s instead of holding a worker until mutmut's
            # own timeout, several times longer.
            "PYTEST_ADDOPTS": "--timeout=30",
            # A mutant of code that runs at import is judged by re-importing the package and
            # the tests (tests/mutmut_plugin.py); without cached bytecode each such run
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
