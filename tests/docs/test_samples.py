"""Every page's samples, run as written: the docs cannot drift from the code.

Each Markdown page (``README.md`` and ``docs/*.md``) is one test. Its fenced blocks run in
page order in a fresh directory (the current directory of every step), with no pashq
configuration but what the page itself writes:

- a ``python`` block is executed; the page's blocks share one namespace until the next
  ``console`` step (each group runs in its own Python process, so pages cannot interfere);
- a ``toml`` block must parse;
- any block preceded by a marker comment is handled as the marker says instead.

Markers are HTML comments on the lines just before a block (invisible on rendered pages):

- ``<!-- pashq-docs: file NAME -->``: the block is the content of file ``NAME`` (written
  after the block's ``shell`` marker, if any; a ``python`` file block is compiled, not
  executed);
- ``<!-- pashq-docs: run -->`` (``console`` blocks): run each ``$ COMMAND`` line with the
  shell; it must exit 0. Its expected output is compared with the real one when it has no
  table; 32-hex message ids in the page are mapped to the ids the run printed, in order;
- ``<!-- pashq-docs: log -->`` (``text`` blocks): each line is a log line the last ``$``
  command wrote to stderr (in any order, after the timestamp; ids mapped as above,
  durations such as ``0.83s`` match any duration);
- ``<!-- pashq-docs: shell COMMAND -->``: run ``COMMAND`` at this point (a step the page
  describes in prose, such as "change the first line of messages.py");
- ``<!-- pashq-docs: skip REASON -->``: not run; say why, for instance "runs until
  stopped" or "fragment: the class's other lines are elided".

Blocks in other languages (``text``, ``json``, ``sh`` ...) and unmarked ``console`` blocks
are prose. docs/index.md's contributor note repeats these rules.

A page with an SQS connection (``type = "sqs"``) runs against moto's server (started once
per session, ``tests/moto_server.py``): its steps get dummy credentials and the server's
URL in ``AWS_ENDPOINT_URL_SQS`` (which boto3 reads when the config gives no
``endpoint_url``) and in ``PASHQ_SQS_ENDPOINT`` (for configs that write
``endpoint_url = "${PASHQ_SQS_ENDPOINT:-...}"``), so the page's config runs as written.
"""

from __future__ import annotations

import ast
import json
import os
import re
import subprocess
import sys
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from moto_server import CLEARED_ENV, DUMMY_ENV, free_port, moto_command, serve

ROOT = Path(__file__).resolve().parents[2]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
_BLOCK = re.compile(
    r"((?:^<!-- pashq-docs:[^\n]*-->\n)*)^```([\w-]*)[^\n]*\n(.*?)^```[ \t]*$", re.S | re.M
)
_MARKER = re.compile(r"<!-- pashq-docs: (\w+) ?(.*?) ?-->")
_ID = re.compile(r"\b[0-9a-f]{32}\b")
_DURATION = re.compile(r"[0-9]+\\\.[0-9]+s")  # in re.escape()d text
_RUNNER = """\
import sys
namespace = {"__name__": "__main__"}
for path in sys.argv[1:]:
    with open(path, encoding="utf-8") as source:
        exec(compile(source.read(), path, "exec"), namespace)
"""
TIMEOUT = 120
_SQS_PAGE = re.compile(r'^type = "sqs"', re.M)


@dataclass
class Block:
    """One fenced block and the markers before it."""

    language: str
    body: str
    line: int
    markers: list[tuple[str, str]]


def blocks(page: Path) -> list[Block]:
    """The fenced blocks of ``page`` in order, with their markers."""
    text = page.read_text(encoding="utf-8")
    found = []
    for match in _BLOCK.finditer(text):
        markers = [(m.group(1), m.group(2)) for m in _MARKER.finditer(match.group(1))]
        line = text.count("\n", 0, match.start(2)) + 1
        found.append(Block(match.group(2), match.group(3), line, markers))
    return found


class PageRun:
    """Runs one page's steps in ``workdir``."""

    def __init__(self, page: Path, workdir: Path) -> None:
        self.page = page
        self.workdir = workdir
        self.pending: list[Path] = []  # python blocks not run yet
        self.ids: dict[str, str] = {}  # id in the page -> id of this run
        self.stderr = ""  # of the last command
        bin_dir = str(Path(sys.executable).parent)
        self.env = {
            k: v for k, v in os.environ.items() if not k.startswith(("PASHQ_CONFIG", "PYTHON"))
        }
        self.env["PATH"] = bin_dir + os.pathsep + self.env.get("PATH", "")
        self.env["PYTHONPATH"] = str(workdir)

    def where(self, block: Block) -> str:
        return f"{self.page.name}:{block.line}"

    def flush(self) -> None:
        """Run the python blocks seen since the last step, in one process."""
        if not self.pending:
            return
        (self.workdir / "_run_blocks.py").write_text(_RUNNER)
        cmd = [sys.executable, "_run_blocks.py", *map(str, self.pending)]
        names = ", ".join(p.name for p in self.pending)
        self.pending = []
        self._run(cmd, f"python blocks {names}")

    def _run(self, cmd: list[str] | str, what: str) -> str:
        proc = subprocess.run(
            cmd,
            cwd=self.workdir,
            env=self.env,
            shell=isinstance(cmd, str),
            capture_output=True,
            text=True,
            timeout=TIMEOUT,
        )
        assert proc.returncode == 0, (
            f"{what} exited {proc.returncode}\nstdout:\n{proc.stdout}\nstderr:\n{proc.stderr}"
        )
        self.stderr = proc.stderr
        return proc.stdout

    def step(self, block: Block) -> None:
        kinds = dict(block.markers)
        if "skip" in kinds:
            return
        if block.language == "python":
            compile(block.body, self.where(block), "exec", ast.PyCF_ONLY_AST)
        if "shell" in kinds:
            self.flush()
            self._run(kinds["shell"], f"{self.where(block)}: shell step {kinds['shell']!r}")
        if "file" in kinds:
            path = self.workdir / kinds["file"]
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(block.body, encoding="utf-8")
            return
        if block.language == "python":
            path = self.workdir / f"_block_{block.line}.py"
            path.write_text(block.body, encoding="utf-8")
            self.pending.append(path)
        elif block.language == "toml":
            tomllib.loads(block.body)
        elif block.language == "console" and "run" in kinds:
            self.flush()
            self.console(block)
        elif "log" in kinds:
            self.log(block)

    def log(self, block: Block) -> None:
        """Each line of ``block`` ends a line of the last command's stderr."""
        written = self.stderr.splitlines()
        for line in block.body.splitlines():
            line = _ID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), line)
            pattern = _DURATION.sub(lambda _: r"[0-9]+\.[0-9]+s", re.escape(line))
            assert any(re.search(pattern + "$", w) for w in written), (
                f"{self.where(block)}: no log line ends with {line!r}; the command wrote:\n"
                + self.stderr
            )

    def console(self, block: Block) -> None:
        """Run the block's ``$`` commands; compare outputs that hold no table."""
        commands: list[tuple[str, list[str]]] = []
        for line in block.body.splitlines():
            if line.startswith("$ "):
                commands.append((line[2:], []))
            elif commands:
                commands[-1][1].append(line)
        for command, expected_lines in commands:
            command = _ID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), command)
            out = self._run(command, f"{self.where(block)}: $ {command}")
            expected = "\n".join(expected_lines)
            page_ids = [i for i in _ID.findall(expected) if i not in self.ids]
            run_ids = [i for i in _ID.findall(out) if i not in self.ids.values()]
            if len(page_ids) == len(run_ids):
                self.ids.update(zip(page_ids, run_ids, strict=True))
            if not expected or any(c in expected for c in "┃│"):
                continue
            expected = _ID.sub(lambda m: self.ids.get(m.group(0), m.group(0)), expected)
            if expected.startswith(("[", "{")):
                assert json.loads(out) == json.loads(expected), (self.where(block), command)
            else:
                assert out.rstrip("\n") == expected, (self.where(block), command, out)


@pytest.fixture(scope="session")
def moto_endpoint(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """moto's SQS server on a free loopback port, for the pages with SQS samples."""
    port = free_port()
    log_path = tmp_path_factory.mktemp("moto") / "moto.log"
    url = f"http://127.0.0.1:{port}"
    with serve(moto_command(port), url, log_path, "moto's server") as url:
        yield url


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_page_samples_run_as_written(
    page: Path, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    run = PageRun(page, tmp_path)
    if _SQS_PAGE.search(page.read_text(encoding="utf-8")):
        endpoint = request.getfixturevalue("moto_endpoint")
        for key in CLEARED_ENV:
            run.env.pop(key, None)
        run.env.update(DUMMY_ENV, AWS_ENDPOINT_URL_SQS=endpoint, PASHQ_SQS_ENDPOINT=endpoint)
    for block in blocks(page):
        run.step(block)
    run.flush()


def test_markers_are_known_and_skips_say_why() -> None:
    for page in PAGES:
        for block in blocks(page):
            for kind, argument in block.markers:
                assert kind in {"file", "log", "run", "shell", "skip"}, (page.name, block.line)
                assert argument or kind in {"log", "run"}, (page.name, block.line, kind)
