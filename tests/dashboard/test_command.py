"""``pashq dashboard`` as a user runs it: a real uvicorn process on a free port."""

from __future__ import annotations

import os
import subprocess
import sys
import urllib.error
import urllib.request
from pathlib import Path

from pashq.testing import wait_for

from .browser import free_port
from .conftest import TOKEN


def _get(url: str, token: str | None = None) -> tuple[int, str]:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()
    except OSError:
        return 0, ""


def test_pashq_dashboard_serves_with_a_token(tmp_path: Path) -> None:
    config = tmp_path / "pashq.toml"
    config.write_text('[queues.default]\ntype = "memory"\nqueues = ["emails"]\n')
    port = free_port()
    env = {**os.environ, "PASHQ_DASHBOARD_TOKEN": TOKEN}
    command = [sys.executable, "-m", "pashq", "dashboard", "--port", str(port)]
    process = subprocess.Popen(
        [*command, "--config", str(config), "--read-only"],
        env=env,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = f"http://127.0.0.1:{port}/"
        wait_for(lambda: _get(url)[0] != 0, timeout=60, what="pashq dashboard to listen")
        assert _get(url)[0] == 401
        status, html = _get(url, TOKEN)
        assert status == 200
        assert 'data-queue="emails"' in html and "read-only" in html
    finally:
        process.terminate()
        _, stderr = process.communicate(timeout=60)
    assert f"pashq dashboard on http://127.0.0.1:{port}/" in stderr
    assert TOKEN not in stderr
