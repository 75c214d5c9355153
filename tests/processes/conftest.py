"""Fixtures for ``pashq work --processes``: an app folder with a config, run as real processes.

Each test gets a folder with ``pashq.toml`` (a database connection on SQLite or PostgreSQL
with short leases), ``procs_app.py`` (message classes that record what they run into
files) and helpers to dispatch, start ``python -m pashq work`` and read the records.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from database.conftest import POSTGRESQL_URL, require_server

import pashq

APP = '''
import os, time
from pathlib import Path
import attrs
import pashq

FOLDER = Path(__file__).parent


def _line(name: str, text: str) -> None:
    with open(FOLDER / name, "a", encoding="ascii") as out:
        out.write(text + "\\n")


@attrs.define
class Job(pashq.Message, type_name="tests.processes.job"):
    """Records its id and the pid that ran it; sleeps ``seconds`` in between."""

    n: int
    seconds: float = 0.0

    def process_message(self) -> None:
        _line("started.txt", f"{self.n} {os.getpid()}")
        if self.seconds:
            time.sleep(self.seconds)
        _line("done.txt", f"{self.n} {os.getpid()}")


@attrs.define
class Blocker(pashq.Message, type_name="tests.processes.blocker"):
    """Hangs until the file ``release`` exists (the test kills the child meanwhile)."""

    n: int

    def process_message(self) -> None:
        _line("started.txt", f"{self.n} {os.getpid()}")
        while not (FOLDER / "release").exists():
            time.sleep(0.05)
        _line("done.txt", f"{self.n} {os.getpid()}")
'''

BACKENDS = [
    pytest.param("sqlite", id="sqlite"),
    pytest.param("postgresql", id="postgresql", marks=pytest.mark.postgresql),
]


class App:
    """One app folder: its config, its records and its ``pashq work`` processes."""

    def __init__(self, folder: Path, backend: str) -> None:
        self.folder = folder
        self.backend = backend
        self.prefix = f"p{uuid.uuid4().hex[:8]}_"
        if backend == "sqlite":
            url = f"sqlite:///{folder / 'q.sqlite3'}"
        else:
            require_server(backend, POSTGRESQL_URL)
            url = POSTGRESQL_URL
        lines = [
            'imports = ["procs_app"]',
            "[queues.default]",
            'type = "database"',
            f"url = {json.dumps(url)}",
            f'table_prefix = "{self.prefix}"',
            "create_tables = true",
            "lease = 2.0",
            "poll_interval = 0.2",
        ]
        (folder / "pashq.toml").write_text("\n".join(lines) + "\n")
        (folder / "procs_app.py").write_text(APP)
        self.processes: list[subprocess.Popen[str]] = []

    def dispatch(self, messages: list[Any]) -> None:
        """Dispatch ``messages`` (built by :meth:`job` / :meth:`blocker`) to queue ``q``."""
        pashq.configure(str(self.folder / "pashq.toml"))
        pashq.queue().dispatch_many("q", messages)
        pashq.reset()

    def module(self) -> Any:
        """The app module, imported from the folder."""
        sys.path.insert(0, str(self.folder))
        try:
            import procs_app

            return procs_app
        finally:
            sys.path.remove(str(self.folder))

    def work(self, *args: str) -> subprocess.Popen[str]:
        """Start ``python -m pashq work q ARGS`` in the folder; its JSON logs go to a file
        (:func:`stderr_of`), so a test can read them while it runs."""
        log = self.folder / f"stderr-{len(self.processes)}.log"
        with open(log, "w") as err:
            proc = subprocess.Popen(
                [sys.executable, "-m", "pashq", "work", "q", "--json", *args],
                cwd=self.folder,
                stdout=subprocess.PIPE,
                stderr=err,
                text=True,
            )
        _LOGS[proc.pid] = log
        self.processes.append(proc)
        return proc

    def records(self, name: str) -> list[tuple[int, int]]:
        """The ``(message number, pid)`` lines of ``started.txt`` or ``done.txt``."""
        path = self.folder / name
        if not path.exists():
            return []
        return [
            (int(n), int(pid))
            for n, pid in (line.split() for line in path.read_text().splitlines() if line)
        ]

    def wait_for(self, what: str, predicate: Any, timeout: float = 60.0) -> None:
        """Wait until ``predicate()`` is true, failing with ``what`` after ``timeout``."""
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                pytest.fail(f"timed out waiting for {what}")
            for proc in self.processes:
                if proc.poll() is not None and proc.returncode != 0:
                    proc.communicate()
                    pytest.fail(f"pashq work exited with {proc.returncode}:\n{stderr_of(proc)}")
            time.sleep(0.05)

    def cleanup(self) -> None:
        for proc in self.processes:
            if proc.poll() is None:
                for pid in children(proc.pid):
                    _kill(pid)
                proc.kill()
                proc.communicate()
        if self.backend != "sqlite":
            pashq.configure(str(self.folder / "pashq.toml"))
            pashq.queue().driver.drop_tables()
            pashq.reset()


def children(pid: int) -> list[int]:
    """The process ids of ``pid``'s children (Linux ``/proc``), without the resource tracker
    that :mod:`multiprocessing` starts."""
    try:
        text = Path(f"/proc/{pid}/task/{pid}/children").read_text()
    except OSError:
        return []
    found = []
    for child in text.split():
        try:
            cmdline = Path(f"/proc/{child}/cmdline").read_bytes()
        except OSError:
            continue
        if b"resource_tracker" not in cmdline:
            found.append(int(child))
    return found


def alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _kill(pid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)


_LOGS: dict[int, Path] = {}


def stderr_of(proc: subprocess.Popen[str]) -> str:
    """What ``pashq work`` (the supervisor and its children) wrote to stderr so far."""
    return _LOGS[proc.pid].read_text()


def summary(proc: subprocess.Popen[str], timeout: float = 90.0) -> tuple[int, dict[str, Any], str]:
    """Wait for ``pashq work`` to exit: its exit code, JSON summary and stderr."""
    out, _ = proc.communicate(timeout=timeout)
    err = stderr_of(proc)
    lines = [line for line in out.splitlines() if line.startswith("{")]
    assert lines, f"no JSON summary (exit {proc.returncode}); stderr:\n{err}"
    return proc.returncode, json.loads(lines[-1]), err


@pytest.fixture(params=BACKENDS)
def app(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[App]:
    """An app folder on each backend; its processes are killed and tables dropped after."""
    made = App(tmp_path, request.param)
    try:
        yield made
    finally:
        made.cleanup()
