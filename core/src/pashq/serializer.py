"""The default serializer: envelope <-> UTF-8 JSON, registered ``trylast`` on every connection."""

from __future__ import annotations

from pashq.envelope import Envelope, decode_envelope, encode_envelope
from pashq.hookspecs import hookimpl

__all__ = ["JsonSerializer"]


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
