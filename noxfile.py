"""Development tasks: ``nox`` runs tests, lint and mypy; ``nox -s bench`` runs benchmarks."""

from __future__ import annotations

import nox

nox.options.sessions = ["tests", "integration", "lint", "mypy"]
nox.options.reuse_existing_virtualenvs = True
# uv builds the environments in seconds where it is installed; plain virtualenv otherwise.
nox.options.default_venv_backend = "uv|virtualenv"

PYPROJECT = nox.project.load_toml("pyproject.toml")

# Sessions run on the interpreter nox itself runs on. The machines (and CI) have one Python,
# and under CI=true nox fails on a missing interpreter, so no version list is pinned here;
# run e.g. `nox --force-python 3.12` to test another one that is installed.


@nox.session
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
