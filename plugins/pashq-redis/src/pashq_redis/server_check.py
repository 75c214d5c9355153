"""What a Redis server's settings mean for the messages it holds (``pashq redis check``).

Persistence (``appendonly``, ``appendfsync``, ``save``) decides what a Redis crash loses;
the eviction policy (``maxmemory-policy``) decides whether Redis may delete queue keys on
its own when it runs out of memory, which loses messages without any crash. Each setting
is read with ``CONFIG GET`` (or ``INFO`` where a managed service refuses ``CONFIG``).
"""

from __future__ import annotations

from typing import Any

import attrs

__all__ = ["Finding", "check_server"]

#: Policies under which Redis never deletes a key to free memory.
_SAFE_EVICTION = ("noeviction",)


@attrs.frozen
class Finding:
    """One setting and what it means: ``level`` is ``ok``, ``warning`` or ``danger``."""

    setting: str
    value: str
    level: str
    meaning: str


def _config(client: Any, name: str) -> str | None:
    try:
        found = client.config_get(name)
    except Exception:  # managed services (ElastiCache, Upstash ...) refuse CONFIG
        return None
    value = found.get(name) if isinstance(found, dict) else None
    if isinstance(value, bytes):
        value = value.decode()
    return None if value is None else str(value)


def check_server(client: Any) -> list[Finding]:
    """Read the server's persistence and eviction settings and say what each means."""
    findings: list[Finding] = []
    info = client.info("server")
    version = str(info.get("redis_version", "?"))
    major_minor = tuple(int(p) for p in version.split(".")[:2] if p.isdigit())
    findings.append(
        Finding(
            "redis_version",
            version,
            "ok" if major_minor >= (6, 2) else "danger",
            "6.2 or later is needed (ZMSCORE)" if major_minor < (6, 2) else "supported",
        )
    )
    policy = _config(client, "maxmemory-policy")
    if policy is None:
        findings.append(
            Finding("maxmemory-policy", "?", "warning", "unreadable (CONFIG refused): make "
                    "sure it is noeviction, or Redis may delete queue keys when memory is full")
        )  # fmt: skip
    elif policy in _SAFE_EVICTION:
        findings.append(Finding("maxmemory-policy", policy, "ok", "Redis never evicts a queue key"))
    else:
        findings.append(
            Finding("maxmemory-policy", policy, "danger", "when memory is full Redis may "
                    "delete queue keys, losing messages: set maxmemory-policy noeviction "
                    "(pushes then fail with OOM instead)")
        )  # fmt: skip
    appendonly = _config(client, "appendonly")
    fsync = _config(client, "appendfsync")
    save = _config(client, "save")
    if appendonly == "yes":
        level, meaning = {
            "always": ("ok", "every confirmed write is on disk before Redis replies"),
            "everysec": ("ok", "a crash may lose about the last second of writes"),
            "no": ("warning", "the OS decides when to write: a crash may lose ~30 s"),
        }.get(fsync or "", ("warning", "unknown appendfsync"))
        findings.append(Finding("appendfsync", fsync or "?", level, meaning))
    elif appendonly == "no":
        meaning = (
            f"no append-only file; RDB snapshots ({save}) lose what came after the last one"
            if save
            else "no persistence at all: a Redis restart loses every message"
        )
        findings.append(Finding("appendonly", "no", "danger" if not save else "warning", meaning))
    else:
        findings.append(Finding("appendonly", "?", "warning", "unreadable (CONFIG refused)"))
    return findings
