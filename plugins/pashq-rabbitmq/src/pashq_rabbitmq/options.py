"""The driver's options (``[queues.<name>]`` keys) and the password-free broker address."""

from __future__ import annotations

import urllib.parse

import attrs

__all__ = ["DEFAULT_URL", "RabbitMQOptions", "display_url"]

DEFAULT_URL = "amqp://guest:guest@127.0.0.1:5672/%2F"


@attrs.frozen
class RabbitMQOptions:
    """Options of the ``rabbitmq`` driver (see the driver module for what each one does)."""

    url: str = DEFAULT_URL
    prefetch: int = 100
    confirm: bool = True
    queue_type: str = "classic"
    heartbeat: int | None = None
    declare: str = "auto"
    publish_timeout: float = 30.0
    reconnect_delay_max: float = 5.0
    max_in_flight: int = 10_000
    management_url: str | None = None
    max_priority: int = 9

    def __attrs_post_init__(self) -> None:
        if urllib.parse.urlsplit(self.url).scheme not in ("amqp", "amqps"):
            raise ValueError(
                "'url' must be an amqp:// or amqps:// URL "
                f"(amqp://user:password@host:5672/vhost), got {display_url(self.url)!r}"
            )
        for key in ("prefetch", "publish_timeout", "reconnect_delay_max", "max_in_flight"):
            if getattr(self, key) <= 0:
                raise ValueError(f"'{key}' must be > 0, got {getattr(self, key)!r}")
        if self.management_url is not None and urllib.parse.urlsplit(
            self.management_url
        ).scheme not in ("http", "https"):
            raise ValueError(
                "'management_url' must be an http:// or https:// URL (e.g. http://127.0.0.1:15672)"
            )
        if type(self.max_priority) is not int or not 0 <= self.max_priority <= 255:
            raise ValueError(
                "'max_priority' must be an integer from 0 (no priorities) to 255 (AMQP's "
                f"limit; pashq priorities go to 9), got {self.max_priority!r}"
            )
        if self.prefetch > 65535:
            raise ValueError(f"'prefetch' must be <= 65535 (AMQP limit), got {self.prefetch}")
        if self.heartbeat is not None and self.heartbeat < 0:
            raise ValueError(f"'heartbeat' must be >= 0 seconds (0 = off), got {self.heartbeat}")
        for key, choices in (
            ("queue_type", ("classic", "quorum")),
            ("declare", ("auto", "passive")),
        ):
            if getattr(self, key) not in choices:
                raise ValueError(
                    f"'{key}' must be one of {', '.join(map(repr, choices))}, "
                    f"got {getattr(self, key)!r}"
                )

    def __repr__(self) -> str:
        return f"RabbitMQOptions(url={display_url(self.url)!r}, prefetch={self.prefetch}, ...)"


def display_url(url: str) -> str:
    """Return ``url`` without its password, fit for logs and error messages."""
    try:
        parts = urllib.parse.urlsplit(url)
        host = parts.hostname or ""
        port = parts.port
    except ValueError:
        return "<unparsable URL>"
    netloc = host if ":" not in host else f"[{host}]"
    if port:
        netloc = f"{netloc}:{port}"
    if parts.username:
        netloc = f"{parts.username}@{netloc}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, parts.path, "", ""))
