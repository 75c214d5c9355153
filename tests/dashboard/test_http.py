"""The dashboard over HTTP: pages, 404s, token, CSRF, read-only mode and escaping."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner
from starlette.testclient import TestClient

import pashq
from pashq.cli import main
from pashq_dashboard import create_app

from .conftest import TOKEN
from .dashboard_messages import Flaky

XSS = '<script>window.pwned=1</script>[bold]x[/bold]<img src=x onerror="alert(1)">'


def _dead_letter(note: str = "boom", connection: str = "default", queue: str = "jobs") -> str:
    message_id = pashq.queue(connection).dispatch(queue, Flaky("k", note))
    pashq.Worker(queue, connection=connection, install_signal_handlers=False).run(until_empty=True)
    assert message_id in [d.id for d in pashq.queue(connection).failed(queue)]
    return message_id


def _csrf(html: str) -> str:
    found = re.search(r'name="csrf" value="([0-9a-f]{64})"', html)
    assert found, "no CSRF field in the page"
    return found.group(1)


def test_overview_lists_connections_queues_and_counts(client: TestClient) -> None:
    pashq.queue("default").dispatch("jobs", Flaky("a"))
    pashq.queue("default").dispatch("jobs", Flaky("b"))
    page = client.get("/")
    assert page.status_code == 200
    html = page.text
    assert 'data-queue="jobs"' in html and 'data-queue="configured"' in html
    row = html[html.index('data-queue="jobs"') :]
    assert re.search(r'class="ready">2<', row)
    assert '<meta http-equiv="refresh" content="5">' in html


def test_every_page_forbids_scripts_and_framing(client: TestClient) -> None:
    page = client.get("/")
    policy = page.headers["content-security-policy"]
    assert "default-src 'none'" in policy and "script-src" not in policy
    assert "frame-ancestors 'none'" in policy
    assert page.headers["x-content-type-options"] == "nosniff"
    assert "<script" not in page.text


def test_unknown_connection_queue_or_dead_letter_is_a_404_page(client: TestClient) -> None:
    message_id = _dead_letter()
    for url in (
        "/queue?c=nope&q=jobs",
        "/queue?c=default&q=nope",
        "/queue?c=default",
        "/dead-letter?c=default&q=jobs&id=nope",
        f"/dead-letter?c=nope&q=jobs&id={message_id}",
        "/queue?c=default&q=jobs&page=-1",
        "/no/such/page",
    ):
        page = client.get(url)
        assert page.status_code == 404, url
        assert "404" in page.text and "Traceback" not in page.text, url
        assert page.headers["content-type"].startswith("text/html"), url


def test_dead_letter_page_shows_traceback_and_pretty_body(client: TestClient) -> None:
    message_id = _dead_letter("it broke")
    queue_page = client.get("/queue?c=default&q=jobs")
    assert message_id in queue_page.text and "dashboard.flaky" in queue_page.text
    page = client.get(f"/dead-letter?c=default&q=jobs&id={message_id}")
    assert page.status_code == 200
    assert "RuntimeError: it broke" in page.text
    assert "Traceback (most recent call last)" in page.text
    assert "  &#34;type&#34;: &#34;dashboard.flaky&#34;" in page.text  # indented JSON


def test_message_data_is_escaped_everywhere(client: TestClient) -> None:
    message_id = _dead_letter(XSS, queue="<b>jobs</b>")
    for url in (
        "/",
        "/queue?c=default&q=%3Cb%3Ejobs%3C%2Fb%3E",
        f"/dead-letter?c=default&q=%3Cb%3Ejobs%3C%2Fb%3E&id={message_id}",
    ):
        html = client.get(url).text
        assert "<script>window.pwned" not in html, url
        assert "<img src=x" not in html and "<b>jobs</b>" not in html, url
        assert "&lt;b&gt;jobs&lt;/b&gt;" in html, url
    assert "&lt;script&gt;window.pwned=1&lt;/script&gt;[bold]x[/bold]" in html


def test_url_passwords_are_never_shown(tmp_path: Path) -> None:
    pashq.configure(
        {
            "queues": {
                "broken": {
                    "type": "database",
                    "url": "postgresql+psycopg://app:hunter2-secret@127.0.0.1:1/app",
                    "create_tables": False,
                }
            }
        }
    )
    with TestClient(create_app(), base_url="http://127.0.0.1") as client:
        html = client.get("/").text
    assert "hunter2" not in html
    assert "app:***@127.0.0.1" in html


def test_action_asks_for_confirmation_then_retries(client: TestClient) -> None:
    message_id = _dead_letter()
    csrf = _csrf(client.get("/queue?c=default&q=jobs").text)
    form = {"csrf": csrf, "c": "default", "q": "jobs", "action": "retry:one", "id": message_id}
    asked = client.post("/action", data=form)
    assert asked.status_code == 200 and "Move 1 dead letter" in asked.text
    assert len(pashq.queue("default").failed("jobs")) == 1  # nothing done yet
    done = client.post("/action", data={**form, "confirmed": "yes"}, follow_redirects=False)
    assert done.status_code == 303
    assert pashq.queue("default").failed("jobs") == []
    assert pashq.queue("default").stats("jobs").ready == 1
    page = client.get(done.headers["location"])
    assert "Moved 1 dead letter(s) back onto the queue." in page.text


def test_purge_selected_all_and_queue(client: TestClient) -> None:
    conn = pashq.queue("default")
    first, second, third = (_dead_letter(str(i)) for i in range(3))
    csrf = _csrf(client.get("/queue?c=default&q=jobs").text)
    base = {"csrf": csrf, "c": "default", "q": "jobs", "confirmed": "yes"}
    client.post("/action", data={**base, "action": "purge:selected", "id": [first, second]})
    assert [d.id for d in conn.failed("jobs")] == [third]
    client.post("/action", data={**base, "action": "purge:all"})
    assert conn.failed("jobs") == []
    conn.dispatch("jobs", Flaky("waiting"))
    client.post("/action", data={**base, "action": "purge-queue"})
    assert conn.stats("jobs").ready == 0


def test_post_without_or_with_a_wrong_csrf_token_is_refused(client: TestClient) -> None:
    message_id = _dead_letter()
    client.get("/")  # the browser has its cookie
    form = {"c": "default", "q": "jobs", "action": "purge:all", "confirmed": "yes"}
    assert client.post("/action", data=form).status_code == 403
    assert client.post("/action", data={**form, "csrf": "0" * 64}).status_code == 403
    other = TestClient(client.app, base_url="http://127.0.0.1")  # another browser's token
    stolen = _csrf(other.get("/queue?c=default&q=jobs").text)
    assert client.post("/action", data={**form, "csrf": stolen}).status_code == 403
    assert [d.id for d in pashq.queue("default").failed("jobs")] == [message_id]


def test_bad_action_and_bad_form_are_400(client: TestClient) -> None:
    _dead_letter()
    csrf = _csrf(client.get("/queue?c=default&q=jobs").text)
    base = {"csrf": csrf, "c": "default", "q": "jobs"}
    assert client.post("/action", data={**base, "action": "drop:all"}).status_code == 400
    assert client.post("/action", data={**base, "action": "retry:selected"}).status_code == 400
    assert client.post("/action", content=b"{}", headers={"content-type": "application/json"})
    unknown = client.post("/action", data={**base, "q": "nope", "action": "retry:all"})
    assert unknown.status_code == 404
    assert client.get("/action").status_code == 405


def test_read_only_hides_and_refuses_actions(sqlite_config: dict[str, object]) -> None:
    pashq.configure(sqlite_config)
    message_id = _dead_letter()
    with TestClient(create_app(read_only=True), base_url="http://127.0.0.1") as client:
        for url in (
            "/",
            "/queue?c=default&q=jobs",
            f"/dead-letter?c=default&q=jobs&id={message_id}",
        ):
            html = client.get(url).text
            assert "<form" not in html and "<button" not in html, url
            assert "read-only" in html
        form = {"c": "default", "q": "jobs", "action": "purge:all", "confirmed": "yes"}
        assert client.post("/action", data=form).status_code == 403
    assert len(pashq.queue("default").failed("jobs")) == 1


def test_token_is_required_on_every_request(sqlite_config: dict[str, object]) -> None:
    pashq.configure(sqlite_config)
    app = create_app(token=TOKEN)
    with TestClient(app, base_url="http://127.0.0.1") as client:
        for url in ("/", "/queue?c=default&q=jobs", "/static/dashboard.css"):
            assert client.get(url).status_code == 401, url
        assert client.post("/action", data={"action": "purge:all"}).status_code == 401
        assert client.get("/?token=wrong-token-wrong-token").status_code == 401
        bearer = client.get("/", headers={"Authorization": f"Bearer {TOKEN}"})
        assert bearer.status_code == 200
        opened = client.get(f"/?token={TOKEN}", follow_redirects=False)
        assert opened.status_code == 303 and opened.headers["location"] == "/"
        assert "HttpOnly" in opened.headers["set-cookie"]
        assert client.get("/").status_code == 200  # the cookie carries it now


def test_short_token_is_refused() -> None:
    with pytest.raises(ValueError, match="at least 16"):
        create_app(token="short")


def test_cli_refuses_a_public_host_without_a_token(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PASHQ_DASHBOARD_TOKEN", raising=False)
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert "refusing to serve the dashboard on '0.0.0.0' without a token" in result.output
    result = CliRunner().invoke(main, ["dashboard", "--host", "0.0.0.0", "--token", "short"])
    assert result.exit_code == 1 and "at least 16 characters" in result.output


def test_app_can_be_mounted_under_a_path(sqlite_config: dict[str, object]) -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    pashq.configure(sqlite_config)
    message_id = _dead_letter()
    outer = Starlette(routes=[Mount("/ops/queues", app=create_app())])
    with TestClient(outer, base_url="http://127.0.0.1") as client:
        html = client.get("/ops/queues/").text
        assert 'href="/ops/queues/static/dashboard.css"' in html
        assert 'href="/ops/queues/queue?c=default&amp;q=jobs"' in html
        csrf = _csrf(client.get("/ops/queues/queue?c=default&q=jobs").text)
        form = {"csrf": csrf, "c": "default", "q": "jobs", "action": "retry:all"}
        done = client.post(
            "/ops/queues/action", data={**form, "confirmed": "yes"}, follow_redirects=False
        )
        assert done.headers["location"].startswith("/ops/queues/queue?")
    assert pashq.queue("default").failed("jobs") == []
    assert message_id


def test_loopback_names_only_when_asked(sqlite_config: dict[str, object]) -> None:
    """Against DNS rebinding: another site's name pointed at 127.0.0.1 gets no page."""
    from pashq_dashboard.security import LOOPBACK_HOSTS

    pashq.configure(sqlite_config)
    app = create_app(allowed_hosts=LOOPBACK_HOSTS)
    with TestClient(app, base_url="http://127.0.0.1:8000") as client:
        assert client.get("/").status_code == 200
        assert client.get("/", headers={"host": "localhost:8000"}).status_code == 200
        rebound = client.get("/", headers={"host": "evil.example:8000"})
        assert rebound.status_code == 400 and "csrf" not in rebound.text


def test_token_redirect_never_leaves_the_site(sqlite_config: dict[str, object]) -> None:
    pashq.configure(sqlite_config)
    with TestClient(create_app(token=TOKEN), base_url="http://127.0.0.1") as client:
        opened = client.get(f"/%2F%2Fevil.example?token={TOKEN}", follow_redirects=False)
        assert opened.status_code == 303
        assert opened.headers["location"] == "/evil.example"


def test_dead_letters_are_paginated_oldest_first(sqlite_config: dict[str, object]) -> None:
    pashq.configure(sqlite_config)
    ids = [_dead_letter(str(i)) for i in range(3)]
    with TestClient(create_app(page_size=2), base_url="http://127.0.0.1") as client:
        first = client.get("/queue?c=default&q=jobs").text
        second = client.get("/queue?c=default&q=jobs&page=2").text
        third = client.get("/queue?c=default&q=jobs&page=3").text
    assert re.findall(r'data-id="([0-9a-f]{32})"', first) == ids[:2]
    assert 'id="next-page"' in first and 'id="previous-page"' not in first
    assert re.findall(r'data-id="([0-9a-f]{32})"', second) == ids[2:]
    assert 'id="next-page"' not in second and 'id="previous-page"' in second
    assert 'id="no-dead-letters"' in third
