"""Every developer task is a nox session: tests, lint, typecheck, build, demo, bench.

Run them through ``./dev SESSION`` (which installs nox on first use) or ``nox -s SESSION``.
Database and broker URLs for the tests can be overridden with PASHQ_TEST_POSTGRESQL_URL,
PASHQ_TEST_MYSQL_URL and PASHQ_TEST_RABBITMQ_URL.
"""

from __future__ import annotations

import os
import pathlib
import shutil

import nox

ROOT = pathlib.Path(__file__).parent
PLUGINS = sorted(p for p in (ROOT / "plugins").iterdir() if (p / "pyproject.toml").is_file())
DISTRIBUTIONS = [ROOT / "core", *PLUGINS]
EXAMPLE_DRIVER = ROOT / "examples" / "pashq-example-driver"
# Pinned so a new release's rules cannot turn a green tree red overnight; bump on purpose.
RUFF = "ruff==0.17.6"
MYPY = "mypy==2.4.1"

nox.options.sessions = ["lint", "typecheck", "tests"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_missing_interpreters = True


def _install_all(session: nox.Session, extra: str = "test") -> None:
    args = ["-e", f"{ROOT / 'core'}[test]"]
    for plugin in PLUGINS:
        args += ["-e", f"{plugin}[{extra}]"]
    if EXAMPLE_DRIVER.is_dir():
        args += ["-e", str(EXAMPLE_DRIVER)]
    session.install(*args)


@nox.session(python="3.11")
def tests(session: nox.Session) -> None:
    """The whole test suite: core, contract suite on every driver, reliability, e2e."""
    _install_all(session)
    # Bring up every server the suite needs (and the browser), as .ci/run relies on.
    session.run("bash", str(ROOT / "scripts" / "services"), external=True)
    # The suite restarts the local PostgreSQL server in two reliability tests; set
    # PASHQ_TEST_RESTART_POSTGRESQL=0 when others share the server.
    env = {"PASHQ_TEST_RESTART_POSTGRESQL": os.environ.get("PASHQ_TEST_RESTART_POSTGRESQL", "1")}
    session.run("pytest", *(session.posargs or ["tests"]), env=env)


@nox.session(python="3.11")
def lint(session: nox.Session) -> None:
    """ruff check and ruff format --check over the whole repository."""
    session.install(RUFF)
    session.run("ruff", "check", ".")
    session.run("ruff", "format", "--check", ".")


@nox.session(python="3.11")
def typecheck(session: nox.Session) -> None:
    """mypy --strict, one distribution at a time."""
    _install_all(session)
    session.install(MYPY)
    for dist in [*DISTRIBUTIONS, EXAMPLE_DRIVER]:
        session.run("mypy", "--strict", str(dist / "src"))


@nox.session(python="3.11")
def build(session: nox.Session) -> None:
    """Build a wheel and an sdist per distribution, then smoke-test the pashq wheel alone."""
    session.install("build>=1.0")
    dist_dir = ROOT / "dist"
    shutil.rmtree(dist_dir, ignore_errors=True)
    for dist in DISTRIBUTIONS:
        session.run("python", "-m", "build", "--outdir", str(dist_dir), str(dist))
    smoke = session.create_tmp()
    venv = pathlib.Path(smoke) / "smoke-venv"
    session.run("python", "-m", "venv", "--clear", str(venv))
    wheel = next(dist_dir.glob("pashq-*.whl"))
    session.run(
        str(venv / "bin" / "python"), "-m", "pip", "install", "--quiet", str(wheel), external=True
    )
    session.run(
        str(venv / "bin" / "python"), str(ROOT / "examples" / "smoke_check.py"), external=True
    )


@nox.session(python="3.11")
def demo(session: nox.Session) -> None:
    """The README demo: a producer dispatches messages, `pashq work` processes them."""
    session.install("-e", str(ROOT / "core"), "-e", str(ROOT / "plugins" / "pashq-database"))
    demo_dir = ROOT / "examples" / "demo"
    with session.chdir(demo_dir):
        for leftover in demo_dir.glob("pashq.sqlite3*"):
            leftover.unlink()
        session.run("python", "producer.py")
        session.run("pashq", "work", "demo", "--until-empty")
        session.run("python", "check.py")


@nox.session(python="3.11")
def bench(session: nox.Session) -> None:
    """The benchmark harness on the memory driver (drivers have bench/bench_<driver>.py)."""
    _install_all(session)
    session.run("python", str(ROOT / "bench" / "bench_memory.py"), *session.posargs)
