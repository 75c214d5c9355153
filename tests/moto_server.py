"""moto's standalone SQS server in its own process, for tests/sqs and tests/docs.

:func:`serve` starts a command (moto's server through ``sqs/moto_launcher.py``, or the
keep-alive proxy) and yields its URL once ``/moto-api/`` answers; it fails the test, never
skips, when the server does not come up. :data:`DUMMY_ENV` holds dummy credentials and a
region so nothing can fall back to a real AWS account; :data:`CLEARED_ENV` lists what must
not leak in from the developer's environment.
"""

from __future__ import annotations

import contextlib
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = [
    "CLEARED_ENV",
    "DUMMY_ENV",
    "LAUNCHER",
    "PROXY",
    "free_port",
    "moto_command",
    "serve",
]

LAUNCHER = Path(__file__).with_name("sqs") / "moto_launcher.py"
PROXY = Path(__file__).with_name("sqs") / "keep_alive_proxy.py"
DUMMY_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
    "AWS_EC2_METADATA_DISABLED": "true",
}
CLEARED_ENV = (
    "AWS_PROFILE",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_SQS",
    "AWS_CONFIG_FILE",
    "AWS_SHARED_CREDENTIALS_FILE",
)


def free_port() -> int:
    """A TCP port on 127.0.0.1 that was free a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def moto_command(port: int) -> list[str]:
    """The command that runs moto's server on ``127.0.0.1:port``."""
    return [sys.executable, str(LAUNCHER), "-H", "127.0.0.1", "-p", str(port)]


@contextlib.contextmanager
def serve(command: list[str], url: str, log_path: Path, what: str) -> Iterator[str]:
    """Run ``command`` until the block ends; yield ``url`` once it answers."""
    log = log_path.open("wb")
    process = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT)
    deadline = time.monotonic() + 60
    try:
        while True:
            if process.poll() is not None:
                pytest.fail(
                    f"{what} exited with {process.returncode} before serving "
                    f"(log: {log_path}): {log_path.read_text(errors='replace')[-2000:]}\n"
                    "Install moto's server with: pip install 'moto[server]>=5'"
                )
            try:
                with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                    break
            except (urllib.error.URLError, OSError):
                if time.monotonic() > deadline:
                    pytest.fail(
                        f"{what} did not answer on {url} within 60 s (log: {log_path}); "
                        f"start it by hand with `{' '.join(command)}` to see why"
                    )
                time.sleep(0.1)  # polling until the server answers
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
        log.close()
