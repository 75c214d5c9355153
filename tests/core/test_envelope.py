"""Envelope v1: encoding, and decoding that rejects anything else with EnvelopeError."""

from __future__ import annotations

import json

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
