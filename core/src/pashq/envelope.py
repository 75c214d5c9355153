"""The wire format: envelope version 1.

One JSON object, UTF-8::

    {"v": 1, "id": "<uuid4 hex>", "type": "billing.ping", "body": {...},
     "created_at": "2026-11-27T18:00:00.000000Z", "headers": {}}

``body`` is the message's content (a JSON object for the default ``get_message``, a JSON
string for a custom text body). Attempt counts and leases belong to the driver, never to
the envelope. :func:`decode_envelope` raises :class:`~pashq.errors.EnvelopeError` for
anything else and never another exception. The schema is in ``docs/envelope.schema.json``.
"""

from __future__ import annotations

import enum
import json
import os
import re
import time
import uuid
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

import attrs
import msgspec
import orjson

from pashq.errors import EnvelopeError

__all__ = [
    "ENVELOPE_VERSION",
    "HEADERS_LIMIT",
    "HEADER_NAME",
    "HEADER_VALUE_LIMIT",
    "MESSAGE_ID",
    "TYPE_NAME_LIMIT",
    "Envelope",
    "decode_envelope",
    "encode_envelope",
    "encode_fields",
    "new_message_id",
    "utc_timestamp",
]

ENVELOPE_VERSION = 1
#: A message id: 1 to 64 of ``A-Z a-z 0-9 _ . : -`` (fits an AMQP shortstr, an SQS
#: attribute, the database column and a command line without quoting).
MESSAGE_ID = re.compile(r"[A-Za-z0-9_.:-]{1,64}")
#: ``created_at``: ISO 8601 / RFC 3339 date and time with an offset (pashq writes ``Z``).
CREATED_AT = re.compile(
    r"[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}(\.[0-9]{1,9})?(Z|[+-][0-9]{2}:[0-9]{2})"
)
#: A header name: a letter or digit, then up to 127 of ``A-Z a-z 0-9 _ . -``.
HEADER_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")
#: The most characters of one header value, and the most headers.
HEADER_VALUE_LIMIT = 8192
HEADERS_LIMIT = 64
#: The most characters of a type name.
TYPE_NAME_LIMIT = 255
_KEYS = frozenset({"v", "id", "type", "body", "created_at", "headers"})
_encoder = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"), allow_nan=False)


def _not_json(value: object) -> Any:
    # orjson writes these two natively (a field typed ``Any`` may hold one): so does this.
    if isinstance(value, enum.Enum):
        return value.value
    if isinstance(value, uuid.UUID):
        return str(value)
    raise TypeError(f"Object of type {type(value).__name__} is not JSON serializable")


def _body_encoder() -> Any:
    """The same encoding as ``_encoder.encode`` for a body, made once instead of per call
    (``JSONEncoder.encode`` builds its C encoder on every call); ``None`` without the C
    accelerator. No cycle check: bodies come from attrs fields, and a cycle ends in
    ``RecursionError``, which :func:`encode_envelope` reports like any unencodable body."""
    make = getattr(json.encoder, "c_make_encoder", None)
    if make is None:
        return None
    try:
        encode = make(
            None, _not_json, json.encoder.encode_basestring, None, ":", ",", False, False, False
        )
        sample = {"a": [1, 2.5, None, True], "b": "\u00e9"}
        if "".join(encode(sample, 0)) != _encoder.encode(sample):
            return None
    except Exception:  # another interpreter's private signature: the plain way
        return None
    return lambda value: "".join(encode(value, 0))


_encode_body = _body_encoder() or _encoder.encode
#: orjson refuses (``TypeError``) what the standard library would encode differently or
#: refuse: datetimes, dataclasses and subclasses of the JSON types go to the standard path.
_ORJSON_OPTIONS = (
    orjson.OPT_PASSTHROUGH_DATETIME
    | orjson.OPT_PASSTHROUGH_DATACLASS
    | orjson.OPT_PASSTHROUGH_SUBCLASS
)
_orjson_dumps = orjson.dumps


def _body_bytes(value: Any) -> bytes:
    """A body's JSON as UTF-8, the standard library's values exactly.

    orjson first (about ten times faster); the standard encoder for whatever orjson
    refuses (integers beyond 64 bits, keys that are not strings, a depth over 254, the
    types above) and for any output holding ``null``: orjson writes NaN and infinities as
    ``null``, the standard encoder refuses them, and only it can tell them from ``None``.

    :raises TypeError, ValueError, RecursionError: the value is not JSON.
    """
    try:
        out = _orjson_dumps(value, None, _ORJSON_OPTIONS)
    except TypeError:  # orjson.JSONEncodeError included
        return _encode_body(value).encode()
    if b"null" in out:
        return _encode_body(value).encode()
    return out


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


_decoder = json.JSONDecoder(parse_constant=_reject_constant)
_WHITESPACE = " \t\n\r"


def new_message_id() -> str:
    """Return a fresh message id (uuid4, 32 hex digits)."""
    return uuid.uuid4().hex


#: Byte maps that set a uuid4's version nibble (byte 6) and RFC 4122 variant bits (byte 8).
_VERSION_4 = bytes((b & 0x0F) | 0x40 for b in range(256))
_VARIANT_RFC_4122 = bytes((b & 0x3F) | 0x80 for b in range(256))


def new_message_ids(count: int) -> list[str]:
    """Return ``count`` fresh uuid4 hex ids, drawing the randomness in one call."""
    raw = bytearray(os.urandom(16 * count))
    raw[6::16] = raw[6::16].translate(_VERSION_4)
    raw[8::16] = raw[8::16].translate(_VARIANT_RFC_4122)
    text = raw.hex()
    return [text[offset : offset + 32] for offset in range(0, 32 * count, 32)]


_second: list[Any] = [-1, ""]  # the last whole second formatted, and its text


def utc_timestamp() -> str:
    """Return the current UTC time as the envelope writes it (``...T...Z``, microseconds)."""
    now = time.time_ns() // 1000
    seconds, micros = divmod(now, 1_000_000)
    cached = _second
    if cached[0] != seconds:  # format the date part once per second
        text = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
        cached[0], cached[1] = seconds, text
    return f"{cached[1]}.{micros:06d}Z"


@attrs.define(slots=True)
class Envelope:
    """A decoded envelope.

    :ivar id: the message id.
    :ivar type: the registered type name of the message class.
    :ivar body: the message content (JSON value).
    :ivar created_at: when it was dispatched, ISO 8601 UTC text.
    :ivar headers: string headers (trace ids, middleware data); never attempt counts.
    """

    id: str
    type: str
    body: Any
    created_at: str
    headers: Mapping[str, str] = attrs.field(factory=dict)

    def to_dict(self) -> dict[str, Any]:
        """Return the envelope as the JSON object of wire format version 1."""
        return {
            "v": ENVELOPE_VERSION,
            "id": self.id,
            "type": self.type,
            "body": self.body,
            "created_at": self.created_at,
            "headers": dict(self.headers),
        }

    @classmethod
    def from_dict(cls, data: object) -> Envelope:
        """Validate a decoded JSON value and build the envelope.

        :raises EnvelopeError: the value is not a version-1 envelope; the message says why.
        """
        if not isinstance(data, dict):
            raise EnvelopeError(f"envelope must be a JSON object, got {type(data).__name__}")
        version = data.get("v")
        if type(version) is not int or version != ENVELOPE_VERSION:
            raise EnvelopeError(
                f"unsupported envelope version {version!r} (this pashq reads version 1)"
            )
        if data.keys() == _KEYS:
            # Fast path for the common, well-formed case; the checks below explain errors.
            id_, type_, created_at, headers = (
                data["id"],
                data["type"],
                data["created_at"],
                data["headers"],
            )
            if (
                type(id_) is str
                and _id_ok(id_)
                and type(type_) is str
                and 0 < len(type_) <= TYPE_NAME_LIMIT
                and type(created_at) is str
                and _created_ok(created_at)
                and type(headers) is dict
                and not headers
            ):
                return cls(id_, type_, data["body"], created_at, headers)
        extra = data.keys() - _KEYS
        if extra:
            raise EnvelopeError(f"unknown envelope keys: {', '.join(sorted(extra))}")
        missing = _KEYS - data.keys()
        if missing:
            raise EnvelopeError(f"envelope lacks keys: {', '.join(sorted(missing))}")
        for key in ("id", "type", "created_at"):
            value = data[key]
            if not isinstance(value, str) or not value:
                raise EnvelopeError(f"envelope key {key!r} must be a non-empty string")
        check_message_id(data["id"])
        if len(data["type"]) > TYPE_NAME_LIMIT:
            raise EnvelopeError(
                f"envelope 'type' is {len(data['type'])} characters; the most is {TYPE_NAME_LIMIT}"
            )
        if not _created_ok(data["created_at"]):
            raise EnvelopeError(
                f"envelope 'created_at' {_shown(data['created_at'])} is not an ISO 8601 UTC "
                "time such as 2026-11-27T18:00:00.000000Z"
            )
        headers = data["headers"]
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise EnvelopeError("envelope key 'headers' must be an object of strings")
        check_headers(headers)
        return cls(data["id"], data["type"], data["body"], data["created_at"], headers)


_id_ok = MESSAGE_ID.fullmatch
_created_seen: list[str] = [""]  # a batch shares one created_at: check each distinct one once


def _created_ok(text: str) -> bool:
    if text == _created_seen[0]:
        return True
    if CREATED_AT.fullmatch(text) is None:
        return False
    _created_seen[0] = text
    return True


def _shown(value: str) -> str:
    return repr(value if len(value) <= 70 else value[:60] + "...")


def _encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def check_message_id(message_id: str) -> None:
    """Raise :class:`EnvelopeError` unless ``message_id`` is a valid envelope id."""
    if not _id_ok(message_id):
        raise EnvelopeError(
            f"envelope id {_shown(message_id)} is not 1 to 64 of A-Z a-z 0-9 _ . : -"
        )


def check_headers(headers: Mapping[str, str]) -> None:
    """Raise :class:`EnvelopeError` unless ``headers`` follow the envelope's header rules."""
    if len(headers) > HEADERS_LIMIT:
        raise EnvelopeError(f"envelope has {len(headers)} headers; the most is {HEADERS_LIMIT}")
    for name, value in headers.items():
        if not HEADER_NAME.fullmatch(name):
            raise EnvelopeError(
                f"envelope header name {_shown(name)} is not a letter or digit followed by up "
                "to 127 of A-Z a-z 0-9 _ . -"
            )
        if len(value) > HEADER_VALUE_LIMIT or not _encodable(value):
            raise EnvelopeError(
                f"envelope header {name!r} must be valid Unicode text of at most "
                f"{HEADER_VALUE_LIMIT} characters"
            )


_encoded_strings: dict[str, bytes] = {}
_headers_seen: list[Mapping[str, str]] = [{}]  # the last headers found valid


def _check_headers_once(headers: Mapping[str, str]) -> None:
    """:func:`check_headers`, skipped for the headers checked last: a batch often shares
    its headers (a trace context). The last ones are kept as a copy, so that changing the
    headers of an envelope afterwards never makes unchecked headers look checked."""
    if headers != _headers_seen[0]:
        check_headers(headers)
        _headers_seen[0] = dict(headers)


def _json_string(value: str) -> bytes:
    """A string's JSON as UTF-8 (type names and timestamps repeat: each distinct one is
    encoded once)."""
    found = _encoded_strings.get(value)
    if found is None:
        found = _encoder.encode(value).encode()
        if len(_encoded_strings) < 10_000:
            _encoded_strings[value] = found
    return found


def encode_envelope(envelope: Envelope) -> bytes:
    """Serialize an envelope to UTF-8 JSON bytes.

    :raises EnvelopeError: the id or headers break the envelope's rules, or the body is not
        JSON (pashq never writes what it could not read back).
    """
    return encode_fields(
        envelope.id, envelope.type, envelope.body, envelope.created_at, envelope.headers
    )


def encode_fields(
    message_id: str, type_name: str, body: Any, created_at: str, headers: Mapping[str, str]
) -> bytes:
    """:func:`encode_envelope` of the envelope these fields make, without building it."""
    if not _id_ok(message_id):
        check_message_id(message_id)
    if headers:
        _check_headers_once(headers)
    try:
        # Written directly: the same JSON as encoding to_dict(). The id needs no escapes
        # (checked above: A-Z a-z 0-9 _ . : -).
        return b"".join(
            (
                b'{"v":1,"id":"',
                message_id.encode(),
                b'","type":',
                _json_string(type_name),
                b',"body":',
                _body_bytes(body),
                b',"created_at":',
                _json_string(created_at),
                b',"headers":',
                _body_bytes(dict(headers)) if headers else b"{}",
                b"}",
            )
        )
    except (TypeError, ValueError, RecursionError) as exc:  # UnicodeEncodeError included
        raise EnvelopeError(
            f"message {message_id} ({type_name}) has a body that is not JSON: {exc}"
        ) from exc


class _Wire(msgspec.Struct, forbid_unknown_fields=True, gc=False):
    """An envelope as pashq writes it: what the fast decoder accepts (anything else takes
    the standard library's path, which explains what is wrong). Not tracked by the garbage
    collector (one per delivery, short-lived, never in a cycle)."""

    v: int
    id: str
    type: str
    body: Any
    created_at: str
    headers: dict[str, str]


_decode_wire = msgspec.json.Decoder(_Wire).decode


def decode_envelope(data: bytes | str) -> Envelope:
    """Parse UTF-8 JSON bytes into an :class:`Envelope`.

    The common case (what pashq writes, read by msgspec in C) is checked here; anything
    msgspec refuses or these checks do not pass takes the standard library's path, which
    decides, with the same values and errors as ever.

    :raises EnvelopeError: for anything that is not a valid version-1 envelope.
    """
    try:
        wire = _decode_wire(data)
    except Exception:  # malformed, another shape, another input type: the full path says
        return _decode_standard(data)
    headers, created_at = wire.headers, wire.created_at
    if (
        wire.v == ENVELOPE_VERSION
        and _id_ok(wire.id)
        and 0 < len(wire.type) <= TYPE_NAME_LIMIT
        and (created_at == _created_seen[0] or _created_ok(created_at))
    ):
        if headers:
            _check_headers_once(headers)
        return Envelope(wire.id, wire.type, wire.body, created_at, headers)
    return _decode_standard(data)


def _decode_standard(data: bytes | str) -> Envelope:
    """:func:`decode_envelope` with the standard library's JSON decoder."""
    try:
        if type(data) is bytes:  # what every driver hands over
            text = data.decode("utf-8")
        elif isinstance(data, bytes | bytearray | memoryview):
            text = bytes(data).decode("utf-8")
        else:
            text = data
        if not isinstance(text, str):
            raise EnvelopeError(f"envelope must be bytes or str, got {type(data).__name__}")
        if text[:1] in _WHITESPACE:
            text = text.lstrip(_WHITESPACE)
        value, end = _decoder.raw_decode(text)  # no regex pass: the hot path of every pull
        if end != len(text) and text[end:].strip(_WHITESPACE):
            raise EnvelopeError(f"envelope has data after the JSON value (at {end})")
    except EnvelopeError:
        raise
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise EnvelopeError(f"envelope is not valid UTF-8 JSON: {exc}") from exc
    return Envelope.from_dict(value)
