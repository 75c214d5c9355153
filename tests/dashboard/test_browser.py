"""The dashboard in headless Chromium against SQLite, PostgreSQL and RabbitMQ.

The overview shows the backend's counts; a dead letter opens with its traceback; retry
moves it back and a worker processes it; purge asks, then empties; a ``<script>`` in a
reason shows as text and never runs.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest
from selenium import webdriver
from selenium.common.exceptions import NoAlertPresentException
from selenium.webdriver.common.by import By

import pashq
from pashq.testing import wait_for
from pashq_dashboard import create_app

from . import dashboard_messages
from .backends import BACKENDS, Backend
from .browser import chromium, screenshot, serve
from .dashboard_messages import Flaky

XSS_REASON = "<script>window.pwned = 1; alert('pwned')</script> [bold]not markup[/bold]"


@pytest.fixture(params=BACKENDS)
def config(request: pytest.FixtureRequest) -> Iterator[dict[str, Any]]:
    """The pashq configuration of a fresh instance of each backend."""
    backend: Backend = request.param
    with backend.open() as opened:
        yield opened


def _text(driver: webdriver.Chrome, css: str) -> str:
    """The text of the first ``css`` element, waiting for the page that shows it (a click
    may return before the next page has loaded)."""
    found = wait_for(
        lambda: driver.find_elements(By.CSS_SELECTOR, css),
        timeout=30,
        interval=0.1,
        what=f"{css} on {driver.current_url}",
    )
    return str(found[0].text)


def _cell(driver: webdriver.Chrome, queue: str, column: str) -> str:
    return _text(driver, f'tr[data-queue="{queue}"] td.{column}')


def _shows(driver: webdriver.Chrome, url: str, queue: str, column: str, expected: str) -> bool:
    driver.get(url)
    return _cell(driver, queue, column) == expected


def _no_script_ran(driver: webdriver.Chrome) -> None:
    try:
        alert = driver.switch_to.alert
    except NoAlertPresentException:
        pass
    else:
        text = alert.text
        alert.dismiss()
        raise AssertionError(f"a script from message data ran: alert({text!r})")
    assert driver.execute_script("return window.pwned === undefined") is True


def test_overview_dead_letter_retry_and_purge_in_the_browser(config: dict[str, Any]) -> None:
    pashq.configure(config)
    conn = pashq.queue("default")
    conn.dispatch("jobs", Flaky("evil", XSS_REASON))
    broken_id = conn.dispatch("jobs", Flaky("broken", "the payment service said no"))
    pashq.Worker("jobs", connection=conn, install_signal_handlers=False).run(until_empty=True)
    assert len(conn.failed("jobs")) == 2
    conn.dispatch_many("backlog", [Flaky(f"w{i}") for i in range(3)])

    with serve(create_app(refresh=30)) as base, chromium() as driver:
        # The overview shows what the backend counts (RabbitMQ's management API lags).
        wait_for(
            lambda: _shows(driver, base + "/", "backlog", "ready", "3"),
            timeout=60,
            interval=1.0,
            what="the overview to show 3 ready messages in 'backlog'",
        )
        assert conn.stats("backlog").ready == 3
        assert _cell(driver, "jobs", "failed") == "2" == str(conn.stats("jobs").failed)
        _no_script_ran(driver)
        screenshot(driver, "dashboard-overview.png")

        # The queue page lists both dead letters; the hostile reason is plain text.
        driver.find_element(By.CSS_SELECTOR, 'tr[data-queue="jobs"] td.name a').click()
        _text(driver, "td.reason")
        reasons = [e.text for e in driver.find_elements(By.CSS_SELECTOR, "td.reason")]
        assert any(XSS_REASON.split(" [")[0] in r for r in reasons), reasons
        _no_script_ran(driver)
        screenshot(driver, "dashboard-queue.png")

        # A dead letter opens with its traceback.
        _text(driver, f'tr[data-id="{broken_id}"] td.id a')
        driver.find_element(By.CSS_SELECTOR, f'tr[data-id="{broken_id}"] td.id a').click()
        reason = "failed 1 time(s), last: RuntimeError: the payment service said no"
        assert _text(driver, "#dead-letter-reason") == reason
        traceback = _text(driver, "#traceback")
        assert "Traceback (most recent call last)" in traceback
        assert "RuntimeError: the payment service said no" in traceback
        assert '"type": "dashboard.flaky"' in _text(driver, "#body")
        screenshot(driver, "dashboard-dead-letter.png")

        # Retry asks, then moves it back, and a worker processes it.
        dashboard_messages.fixed.set()
        worker = pashq.Worker(
            "jobs", connection=conn, install_signal_handlers=False, poll_timeout=0.5
        )
        running = threading.Thread(target=worker.run, name="dashboard-test-worker")
        running.start()
        try:
            _text(driver, "#retry-one")
            driver.find_element(By.ID, "retry-one").click()
            assert "Move 1 dead letter of queue 'jobs'" in _text(driver, "#question")
            assert broken_id in [d.id for d in conn.failed("jobs")]  # not before confirming
            driver.find_element(By.ID, "confirm").click()
            assert _text(driver, "#done") == "Moved 1 dead letter(s) back onto the queue."
            wait_for(
                lambda: "broken" in dashboard_messages.processed,
                timeout=60,
                what="the worker to process the retried message",
            )
        finally:
            worker.stop()
            running.join(timeout=60)
        assert [d.reason for d in conn.failed("jobs")] == [
            f"failed 1 time(s), last: RuntimeError: {XSS_REASON}"
        ]

        # Purge all asks, then empties the dead letters.
        _text(driver, 'button[value="purge:all"]')
        driver.find_element(By.CSS_SELECTOR, 'button[value="purge:all"]').click()
        assert "Delete every dead letter of queue 'jobs'" in _text(driver, "#question")
        assert len(conn.failed("jobs")) == 1
        driver.find_element(By.ID, "confirm").click()
        assert _text(driver, "#done") == "Deleted 1 dead letter(s)."
        assert driver.find_elements(By.ID, "no-dead-letters")
        assert conn.failed("jobs") == []

        # Purging a queue from the overview asks, then empties it.
        driver.get(base + "/")
        driver.find_element(
            By.CSS_SELECTOR, 'tr[data-queue="backlog"] button[value="purge-queue"]'
        ).click()
        assert "Delete every waiting message of queue 'backlog'" in _text(driver, "#question")
        assert conn.stats("backlog").ready == 3
        driver.find_element(By.ID, "confirm").click()
        assert _text(driver, "#done") == "Deleted 3 waiting message(s)."
        wait_for(lambda: conn.stats("backlog").ready == 0, timeout=60, what="an empty backlog")
        _no_script_ran(driver)
