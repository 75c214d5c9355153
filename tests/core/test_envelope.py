"""Envelope v1: encoding, and decoding that rejects anything else with EnvelopeError."""

from __future__ import annotations

import json
import pathlib
from typing import Any

import pytest

from pashq import Envelope, EnvelopeError, decode_envelope, encode_envelope

GOOD = {
    "v": 1,
    "id": "a" * 32,
    "type": "t",
    "body": {"x": 1},
    "created_at": "2026-11-27T18:00:00.000000Z",
    "headers": {"h": "v"},
}


def test_round_trip_keeps_every_field() -> None:
    envelope = Envelope.from_dict(GOOD)
    assert json.loads(encode_envelope(envelope)) == GOOD
    assert decode_envelope(encode_envelope(envelope)) == envelope


def test_non_ascii_is_written_as_utf8() -> None:
    data = encode_envelope(Envelope("i", "t", {"s": "é🚀"}, "now", {}))
    assert "é🚀".encode() in data


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (b"", "not valid UTF-8 JSON"),
        (b"\xff\xfe", "not valid UTF-8 JSON"),
        (b"{not json", "not valid UTF-8 JSON"),
        (b"[1, 2]", "must be a JSON object"),
        (b"null", "must be a JSON object"),
        (json.dumps({**GOOD, "v": 2}).encode(), "unsupported envelope version 2"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "v"}).encode(), "version None"),
        (json.dumps({k: v for k, v in GOOD.items() if k != "body"}).encode(), "lacks keys: body"),
        (json.dumps({**GOOD, "extra": 1}).encode(), "unknown envelope keys: extra"),
        (json.dumps({**GOOD, "id": ""}).encode(), "'id' must be a non-empty string"),
        (json.dumps({**GOOD, "type": 5}).encode(), "'type' must be a non-empty string"),
        (json.dumps({**GOOD, "headers": {"a": 1}}).encode(), "object of strings"),
        (json.dumps({**GOOD, "headers": []}).encode(), "object of strings"),
        (b"[" * 100_000, "not valid UTF-8 JSON"),
    ],
)
def test_malformed_envelopes_raise_envelope_error(raw: bytes, match: str) -> None:
    with pytest.raises(EnvelopeError, match=match):
        decode_envelope(raw)


def test_body_that_is_not_json_fails_to_encode_with_envelope_error() -> None:
    with pytest.raises(EnvelopeError, match="not JSON"):
        encode_envelope(Envelope("i", "t", {"x": object()}, "now", {}))


@pytest.mark.parametrize(
    ("raw", "match"),
    [
        (json.dumps({**GOOD, "v": True}).encode(), "unsupported envelope version True"),
        (b'{"v":1,"id":"i","type":"t","body":NaN,"created_at":"c","headers":{}}', "NaN"),
        (b'{"v":1,"id":"i","type":"t","body":Infinity,"created_at":"c","headers":{}}', "Inf"),
    ],
)
def test_non_json_constants_and_boolean_version_are_rejected(raw: bytes, match: str) -> None:
    with pytest.raises(EnvelopeError, match=match):
        decode_envelope(raw)


def test_fast_encoding_matches_the_generic_encoder() -> None:
    envelope = Envelope("ab" * 16, 'odd"type\\name', {"x": [1, "é", None]}, "2026-11-27Z", {})
    generic = json.dumps(envelope.to_dict(), ensure_ascii=False, separators=(",", ":"))
    assert encode_envelope(envelope) == generic.encode()


def test_new_message_ids_are_uuid4_hex() -> None:
    import uuid

    from pashq.envelope import new_message_ids

    ids = new_message_ids(500)
    assert len(set(ids)) == 500
    assert all(len(i) == 32 and uuid.UUID(i).version == 4 for i in ids)


def test_surrounding_whitespace_is_accepted_and_trailing_data_is_not() -> None:
    text = json.dumps(GOOD)
    assert decode_envelope(f" \n{text}\r\n".encode()) == Envelope.from_dict(GOOD)
    with pytest.raises(EnvelopeError, match="data after the JSON value"):
        decode_envelope(f"{text} {{}}".encode())
    with pytest.raises(EnvelopeError, match="not valid UTF-8 JSON"):
        decode_envelope(b"   ")


def _with(**changes: object) -> bytes:
    data = dict(GOOD, **changes)
    return json.dumps(data).encode()


@pytest.mark.parametrize(
    "message_id", ["a", "A-z_0.9:x", "0f8e5c2a9b7d4e1f8a6b3c2d1e0f9a8b", "x" * 64]
)
def test_ids_of_the_allowed_characters_up_to_64_decode(message_id: str) -> None:
    assert decode_envelope(_with(id=message_id)).id == message_id


@pytest.mark.parametrize("message_id", ["x" * 65, "has space", "a/b", "é", "a\x00b", "semi;colon"])
def test_other_ids_are_rejected_on_decode_and_encode(message_id: str) -> None:
    with pytest.raises(EnvelopeError, match="envelope id"):
        decode_envelope(_with(id=message_id))
    with pytest.raises(EnvelopeError, match="envelope id"):
        encode_envelope(Envelope(message_id, "t", {}, GOOD["created_at"], {}))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "created_at",
    ["2026-11-27T18:00:00Z", "2026-11-27T18:00:00.123Z", "2026-11-27T18:00:00.000000+01:00"],
)
def test_created_at_is_iso_8601_with_an_offset(created_at: str) -> None:
    assert decode_envelope(_with(created_at=created_at)).created_at == created_at


@pytest.mark.parametrize(
    "created_at", ["now", "2026-11-27", "2026-11-27 18:00:00Z", "2026-11-27T18:00:00"]
)
def test_other_created_at_values_are_rejected(created_at: str) -> None:
    with pytest.raises(EnvelopeError, match="created_at"):
        decode_envelope(_with(created_at=created_at))


@pytest.mark.parametrize(
    ("headers", "problem"),
    [
        ({"": "v"}, "header name"),
        ({"-lead": "v"}, "header name"),
        ({"with space": "v"}, "header name"),
        ({"x" * 129: "v"}, "header name"),
        ({"h": "v" * 8193}, "at most 8192"),
        ({f"h{i}": "v" for i in range(65)}, "the most is 64"),
    ],
)
def test_headers_break_no_rule(headers: dict[str, str], problem: str) -> None:
    with pytest.raises(EnvelopeError, match=problem):
        decode_envelope(_with(headers=headers))
    with pytest.raises(EnvelopeError, match=problem):
        encode_envelope(Envelope("i", "t", {}, GOOD["created_at"], headers))


def test_a_header_value_with_a_lone_surrogate_is_rejected() -> None:
    data = _with(headers={"h": "\udc80"})  # json.dumps writes it as an escape
    with pytest.raises(EnvelopeError, match="valid Unicode"):
        decode_envelope(data)


def test_a_body_with_a_lone_surrogate_cannot_be_encoded() -> None:
    with pytest.raises(EnvelopeError, match="not JSON"):
        encode_envelope(Envelope("i", "t", {"s": "\udc80"}, GOOD["created_at"], {}))


def test_a_type_name_over_255_characters_is_rejected() -> None:
    with pytest.raises(EnvelopeError, match="the most is 255"):
        decode_envelope(_with(type="t" * 256))


SCHEMA = json.loads(
    (pathlib.Path(__file__).parents[2] / "docs" / "envelope.schema.json").read_text()
)
SAMPLES = [
    GOOD,
    dict(GOOD, id="x" * 64),
    dict(GOOD, id="x" * 65),
    dict(GOOD, id="a/b"),
    dict(GOOD, created_at="now"),
    dict(GOOD, created_at="2026-11-27T18:00:00+02:00"),
    dict(GOOD, headers={"traceparent": "00-abc-01", "x.y_z": ""}),
    dict(GOOD, headers={"-x": "v"}),
    dict(GOOD, headers={"h": "v" * 8193}),
    dict(GOOD, headers={f"h{i}": "v" for i in range(65)}),
    dict(GOOD, type="t" * 256),
    dict(GOOD, type=""),
    dict(GOOD, extra=1),
]


@pytest.mark.parametrize("sample", SAMPLES, ids=range(len(SAMPLES)))
def test_the_json_schema_accepts_exactly_what_the_decoder_accepts(sample: dict[str, Any]) -> None:
    """docs/envelope.schema.json is exact: it agrees with decode_envelope on every sample."""
    import jsonschema

    schema_ok = jsonschema.Draft202012Validator(SCHEMA).is_valid(sample)
    try:
        decode_envelope(json.dumps(sample).encode())
        decoder_ok = True
    except EnvelopeError:
        decoder_ok = False
    assert schema_ok == decoder_ok


# -- the fast paths (orjson writes bodies, msgspec reads envelopes) and the standard one ----

BODIES: list[Any] = [
    {"x": 1},
    {"big": 10**30, "negative": -(10**25)},  # beyond 64 bits: orjson refuses, json writes
    {"none": None, "f": 1e16, "tiny": 5e-324, "neg": -0.0},
    {"nested": [[[{"a": 'é\u2028\x00"\\'}]]]},
    {"deep": json.loads("[" * 300 + "]" * 300)},  # deeper than orjson's limit
    ["a list", 1.5, True, False],
    "a text body",
]


@pytest.mark.parametrize("body", BODIES)
def test_every_body_comes_back_as_the_standard_library_reads_it(body: Any) -> None:
    envelope = Envelope("i", "t", body, "2026-11-27T18:00:00.000000Z", {})
    data = encode_envelope(envelope)
    assert json.loads(data)["body"] == body
    assert decode_envelope(data).body == body


@pytest.mark.parametrize("value", [float("nan"), float("inf"), -float("inf")])
def test_nan_and_infinity_are_refused_even_beside_a_none(value: float) -> None:
    # orjson would write them as null: the standard encoder refuses them.
    with pytest.raises(EnvelopeError, match="not JSON"):
        encode_envelope(Envelope("i", "t", {"x": value, "y": None}, "now", {}))
    with pytest.raises(EnvelopeError, match="not JSON"):
        encode_envelope(Envelope("i", "t", {"x": value}, "now", {}))


def test_keys_that_are_not_strings_are_written_as_the_standard_library_does() -> None:
    data = encode_envelope(Envelope("i", "t", {1: "a", "b": 2}, "now", {}))
    assert json.loads(data)["body"] == {"1": "a", "b": 2}


def test_enum_and_uuid_values_are_written_as_their_value() -> None:
    import enum
    import uuid

    class Colour(enum.Enum):
        RED = "red"

    token = uuid.uuid4()
    for extra in ({}, {"y": None}):  # with and without the standard encoder's pass
        data = encode_envelope(Envelope("i", "t", {"c": Colour.RED, "u": token, **extra}, "n", {}))
        assert json.loads(data)["body"] == {"c": "red", "u": str(token), **extra}


@pytest.mark.parametrize(
    "raw",
    [
        json.dumps(GOOD).encode(),
        json.dumps(GOOD, indent=2).encode(),
        b'{"v":1,"id":"i","type":"t","body":{"a":1,"a":2},"created_at":"2026-11-27T18:00:00Z",'
        b'"headers":{}}',
        b'{"v":1,"id":"i","id":"j","type":"t","body":1,"created_at":"2026-11-27T18:00:00Z",'
        b'"headers":{}}',
        b'{"v":1,"id":"i","type":"t","body":"\\ud800","created_at":"2026-11-27T18:00:00Z",'
        b'"headers":{}}',
        b'{"v":1,"id":"i","type":"t","body":1e400,"created_at":"2026-11-27T18:00:00Z",'
        b'"headers":{}}',
        b'{"v":1,"id":"i","type":"t","body":123456789012345678901234567890,'
        b'"created_at":"2026-11-27T18:00:00Z","headers":{}}',
        b'\xef\xbb\xbf{"v":1,"id":"i","type":"t","body":1,"created_at":"2026-11-27T18:00:00Z",'
        b'"headers":{}}',
        b'{"v":1.0,"id":"i","type":"t","body":1,"created_at":"2026-11-27T18:00:00Z","headers":{}}',
        b'{"v":1,"id":"i","type":"t","body":"\xff","created_at":"2026-11-27T18:00:00Z",'
        b'"headers":{}}',
        b'{"v":1,"id":"i","type":"","body":1,"created_at":"2026-11-27T18:00:00Z","headers":{}}',
        b'{"v":1,"id":"i","type":"t","body":1,"created_at":"yesterday","headers":{}}',
        b'{"v":1,"id":"i","type":"t","body":1,"created_at":"2026-11-27T18:00:00Z",'
        b'"headers":{"-bad":"x"}}',
        "[" * 5000,
    ],
)
def test_the_fast_decoder_decides_as_the_standard_one(raw: bytes | str) -> None:
    from pashq.envelope import _decode_standard

    try:
        expected: Envelope | str = _decode_standard(raw)
    except EnvelopeError as exc:
        expected = str(exc)
    try:
        got: Envelope | str = decode_envelope(raw)
    except EnvelopeError as exc:
        got = str(exc)
    assert got == expected


def test_headers_changed_after_decoding_are_still_checked_in_the_next_envelope() -> None:
    good = {**GOOD, "headers": {"trace": "a"}}
    envelope = decode_envelope(json.dumps(good).encode())
    envelope.headers["-bad"] = "x"  # type: ignore[index]  # a plugin editing a decoded envelope
    bad = {**GOOD, "headers": {"trace": "a", "-bad": "x"}}
    with pytest.raises(EnvelopeError, match="header name"):
        decode_envelope(json.dumps(bad).encode())
