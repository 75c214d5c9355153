"""``pashq sqs create|policy`` and the generic commands on the SQS driver (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.sqs


@pytest.fixture
def config(moto_endpoint: str, tmp_path: Path) -> Path:
    path = tmp_path / "pashq.toml"
    path.write_text(
        "[queues.default]\n"
        'type = "sqs"\n'
        f'endpoint_url = "{moto_endpoint}"\n'
        'region = "us-east-1"\n'
        "visibility_timeout = 5\n"
        "wait_time = 1\n"
    )
    return path


def pashq(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pashq", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_sqs_create_makes_queue_and_dead_letter_queue(config: Path, sqs_client: Any) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    done = pashq(config, "sqs", "create", name)
    assert done.returncode == 0, done.stderr
    assert f"{name}-failed" in done.stdout
    url = sqs_client.get_queue_url(QueueName=name)["QueueUrl"]
    attributes = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["RedrivePolicy"])
    assert json.loads(attributes["Attributes"]["RedrivePolicy"])["maxReceiveCount"] == 5


def test_sqs_policy_names_both_queues_and_only_needed_actions(config: Path) -> None:
    name = f"cli-{uuid.uuid4().hex[:8]}"
    assert pashq(config, "sqs", "create", name).returncode == 0
    done = pashq(config, "sqs", "policy", name)
    assert done.returncode == 0, done.stderr
    (statement,) = json.loads(done.stdout)["Statement"]
    assert sorted(statement["Resource"]) == sorted(
        [f"arn:aws:sqs:us-east-1:123456789012:{n}" for n in (name, f"{name}-failed")]
    )
    assert "sqs:CreateQueue" not in statement["Action"]
    assert "sqs:ReceiveMessage" in statement["Action"]


def test_missing_queue_is_a_clear_cli_error(config: Path) -> None:
    done = pashq(config, "stats", f"absent-{uuid.uuid4().hex[:8]}")
    assert done.returncode != 0
    assert "does not exist" in done.stderr and "create_queues = true" in done.stderr
