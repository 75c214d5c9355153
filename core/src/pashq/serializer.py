"""The default serializer: envelope <-> UTF-8 JSON, registered ``trylast`` on every connection."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pashq.envelope import Envelope, decode_envelope, encode_envelope
from pashq.hookspecs import hookimpl

__all__ = ["JsonSerializer", "default_only"]


def default_only(hook_caller: Any, default: Callable[[Any], Any]) -> Callable[[Any], Any]:
    """Return a one-argument callable for a serializer hook: ``default`` itself when the
    JSON serializer is the hook's only implementation (the common case; saves a pluggy call
    per message), else a call of the hook with its one keyword argument."""
    impls = hook_caller.get_hookimpls()
    if len(impls) == 1 and isinstance(impls[0].plugin, JsonSerializer):
        return default
    (argument,) = hook_caller.spec.argnames
    return lambda value: hook_caller(**{argument: value})


class JsonSerializer:
    """Serializes envelopes as the documented JSON wire format (version 1)."""

    @hookimpl(trylast=True)
    def pashq_serialize(self, envelope: Envelope) -> bytes:
        """Encode the envelope as compact UTF-8 JSON."""
        return encode_envelope(envelope)

    @hookimpl(trylast=True)
    def pashq_deserialize(self, data: bytes) -> Envelope:
        """Decode UTF-8 JSON bytes; :class:`~pashq.errors.EnvelopeError` for anything else."""
        return decode_envelope(data)
