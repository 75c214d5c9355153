"""Keeping secrets out of logs, reprs and error text.

:func:`redact` masks the password of URLs (``amqp://user:***@host``) and the values of
keys that look secret (``password``, ``secret``, ``token``, ``*_key``), at any depth.
Drivers use it before putting options or URLs into a message.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

__all__ = ["is_secret_key", "redact", "redact_url"]

# The password runs to the LAST "@" before the host (an unencoded "@" in it is common).
_URL_PASSWORD = re.compile(
    r"(?P<head>[A-Za-z][A-Za-z0-9+.\-]*://[^:/@\s]*:)[^\s]*@(?=[^@\s/]*(?:[/?#\s'\"]|$))"
)
_SECRET_KEY = re.compile(r"(password|passwd|secret|token|credential|_key$|^key$)", re.I)
MASK = "***"


def redact_url(text: str) -> str:
    """Mask the password part of every URL in ``text``."""
    return _URL_PASSWORD.sub(lambda m: m.group("head") + MASK + "@", text)


def is_secret_key(key: str) -> bool:
    """Whether an option named ``key`` holds a secret."""
    return bool(_SECRET_KEY.search(key))


def redact(value: Any) -> Any:
    """Return ``value`` with URL passwords and secret-looking keys masked (recursively)."""
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {
            k: MASK if isinstance(k, str) and is_secret_key(k) else redact(v)
            for k, v in value.items()
        }
    if isinstance(value, list | tuple):
        return type(value)(redact(v) for v in value)
    return value
