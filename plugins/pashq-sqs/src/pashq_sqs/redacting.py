"""Keeping the password of an ``endpoint_url`` out of every log record and error text.

botocore and urllib3 write the endpoint URL, user and password included, into their
DEBUG records (``Endpoint provider result: http://user:secret@host``, the prepared
request) and into exception text (``Could not connect to the endpoint URL: ...``), which
a worker logs with its traceback. :func:`protect` registers an endpoint's password and
installs :class:`RedactingFilter` on those libraries' loggers; :func:`scrub` is the same
redaction for text the driver builds itself.
"""

from __future__ import annotations

import logging
import os
import threading
import traceback
from urllib.parse import unquote, urlsplit

from pashq.redaction import MASK, redact_url

__all__ = ["RedactingFilter", "carries_secret", "protect", "scrub"]

# Libraries that log the endpoint URL; every logger under them gets the filter.
_LIBRARIES = ("botocore", "boto3", "urllib3", "s3transfer")
# Loggers of those libraries known to log URLs or tracebacks, created up front so a
# record logged before anything else created them is filtered too.
_KNOWN = (
    "botocore.endpoint",
    "botocore.regions",
    "botocore.retryhandler",
    "botocore.retries.standard",
    "botocore.httpsession",
    "botocore.client",
    "botocore.hooks",
    "botocore.parsers",
    "botocore.auth",
    "botocore.utils",
    "urllib3.connectionpool",
    "urllib3.connection",
    "urllib3.util.retry",
)
_lock = threading.Lock()
_secrets: set[str] = set()
_armed = False  # an endpoint with a password was seen: the filter is needed


def _after_fork_in_child() -> None:
    global _lock
    _lock = threading.Lock()  # a parent's thread may have held it at the fork


os.register_at_fork(after_in_child=_after_fork_in_child)


def scrub(text: str) -> str:
    """Return ``text`` with URL passwords and every registered password masked."""
    text = redact_url(text)
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, MASK)
    return text


def carries_secret(exc: BaseException) -> bool:
    """Whether ``exc`` or an exception it chains to shows a password when printed."""
    text = "".join(traceback.format_exception(exc))
    return scrub(text) != text


class RedactingFilter(logging.Filter):
    """Masks passwords in a record's message, arguments and exception text."""

    def filter(self, record: logging.LogRecord) -> bool:
        """Rewrite ``record`` in place when it shows a password; always keep it."""
        try:
            message = record.getMessage()
        except Exception:  # a broken format: leave it to logging's own error path
            return True
        clean = scrub(message)
        if clean != message:
            record.msg, record.args = clean, None
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(record.exc_info[1]))
            clean = scrub(text)
            if clean != text:
                # Formatters print exc_text when it is set; the exception object goes.
                record.exc_text, record.exc_info = clean.rstrip("\n"), None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        if record.stack_info:
            record.stack_info = scrub(record.stack_info)
        return True


_FILTER = RedactingFilter()


def protect(endpoint_url: str | None) -> None:
    """Register the password of ``endpoint_url`` (if any) and filter the libraries' logs.

    Once any endpoint had a password, every call also covers loggers the libraries
    created since the last one.
    """
    global _armed
    password = urlsplit(endpoint_url).password if endpoint_url else None
    with _lock:
        if password:
            _armed = True
            # Short ones would mask ordinary words; URLs are masked whatever the length.
            _secrets.update(p for p in {password, unquote(password)} if len(p) >= 6)
        if not _armed:
            return
        names = [
            name
            for name in list(logging.Logger.manager.loggerDict)
            if name.split(".", 1)[0] in _LIBRARIES
        ]
        for name in {*_LIBRARIES, *_KNOWN, *names}:
            logger = logging.getLogger(name)
            if _FILTER not in logger.filters:
                logger.addFilter(_FILTER)
