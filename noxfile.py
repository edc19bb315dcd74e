"""Development tasks: ``nox`` runs tests, lint and mypy; ``nox -s bench`` runs benchmarks."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import nox

nox.options.sessions = ["tests", "integration", "lint", "mypy"]
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
