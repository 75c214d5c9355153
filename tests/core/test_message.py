"""Message classes: type names, the registry, the converter and custom bodies."""

from __future__ import annotations

import enum
import uuid
from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Any

import attrs
import pytest

from pashq import Message, RegistryError, SerializationError
from pashq.message import body_of, build_message
from pashq.registry import lookup, unregister


@attrs.define
class Plain(Message):
    n: int


@attrs.define
class Named(Message, type_name="tests.named", queue="billing", connection="events"):
    n: int


class Color(enum.Enum):
    RED = "red"
    BLUE = "blue"


@attrs.frozen
class Address:
    city: str
    zip: str | None = None


@attrs.define
class Rich(Message, type_name="tests.rich"):
    when: datetime
    day: date
    ref: uuid.UUID
    amount: Decimal
    color: Color
    address: Address
    tags: list[str]
    pair: tuple[int, int]
    unique: set[int]
    extra: dict[str, int]
    maybe: int | None = None
    either: int | str = 0


def test_default_type_name_is_module_and_qualname() -> None:
    assert Plain.type_name == f"{__name__}.Plain"
    assert lookup(Plain.type_name) is Plain


def test_class_keywords_set_type_name_queue_and_connection() -> None:
    assert Named.type_name == "tests.named"
    assert Named.default_queue == "billing"
    assert Named.default_connection == "events"
    assert lookup("tests.named") is Named


def test_slotted_rebuild_by_attrs_keeps_one_registration() -> None:
    # attrs.define rebuilds the class; the registry must hold the final class.
    assert lookup("tests.named") is Named
    assert "__attrs_attrs__" in Named.__dict__


def test_two_classes_cannot_share_a_type_name() -> None:
    with pytest.raises(RegistryError, match=r"already used by .*Named"):

        @attrs.define
        class Other(Message, type_name="tests.named"):
            pass


def test_class_without_attrs_decorator_is_refused_at_dispatch() -> None:
    class NotAttrs(Message, type_name="tests.not_attrs"):
        pass

    try:
        with pytest.raises(RegistryError, match=r"must be decorated with @attrs\.define"):
            body_of(NotAttrs())
    finally:
        unregister("tests.not_attrs")


def test_rich_fields_round_trip_through_json_values() -> None:
    message = Rich(
        when=datetime(2026, 11, 27, 18, 0, tzinfo=UTC),
        day=date(2026, 11, 27),
        ref=uuid.UUID(int=5),
        amount=Decimal("12.30"),
        color=Color.BLUE,
        address=Address("Tehran"),
        tags=["a", "b"],
        pair=(1, 2),
        unique={3},
        extra={"k": 1},
        maybe=None,
        either="text",
    )
    body = body_of(message)
    assert body["when"] == "2026-11-27T18:00:00+00:00"
    assert body["amount"] == "12.30"
    assert body["color"] == "blue"
    assert body["unique"] == [3]
    assert body["ref"] == str(uuid.UUID(int=5))
    assert build_message(Rich, body) == message


def test_get_message_and_set_message_are_inverse() -> None:
    text = Named(5).get_message()
    assert text == '{"n":5}'
    assert Named.set_message(text) == Named(5)
    assert Named.set_message({"n": 6}) == Named(6)


def test_structuring_error_names_the_field() -> None:
    with pytest.raises(SerializationError, match="amount"):
        build_message(
            Rich,
            {
                **body_of(
                    Rich(
                        datetime.now(UTC),
                        date.today(),
                        uuid.uuid4(),
                        Decimal(1),
                        Color.RED,
                        Address("x"),
                        [],
                        (1, 2),
                        set(),
                        {},
                    )
                ),
                "amount": [1],
            },
        )


def test_missing_field_is_named() -> None:
    with pytest.raises(SerializationError, match=r"Plain.*n"):
        build_message(Plain, {})


def test_non_object_body_is_refused_for_default_set_message() -> None:
    with pytest.raises(SerializationError, match="must be a JSON object"):
        build_message(Plain, "text")


@attrs.define
class CustomBody(Message, type_name="tests.custom_body"):
    words: list[str]

    def get_message(self) -> str:
        return " ".join(self.words)

    @classmethod
    def set_message(cls, value: str | Any) -> CustomBody:
        assert isinstance(value, str)
        return cls(value.split())


def test_custom_text_body_round_trips_as_text() -> None:
    body = body_of(CustomBody(["a", "b"]))
    assert body == "a b"
    assert build_message(CustomBody, body) == CustomBody(["a", "b"])


def test_group_and_deduplication_ids_come_from_named_fields() -> None:
    @attrs.define
    class Fifo(Message, type_name="tests.fifo"):
        account: int
        key: str
        group_by = "account"
        deduplicate_by = "key"

    try:
        assert Fifo(7, "k1").get_group_id() == "7"
        assert Fifo(7, "k1").get_deduplication_id() == "k1"
        assert Plain(1).get_group_id() is None
    finally:
        unregister("tests.fifo")


def test_dispatch_to_an_empty_queue_name_raises_like_the_connection() -> None:
    import pashq

    pashq.configure({"queues": {"default": {"type": "memory"}}})

    @attrs.define
    class ToNowhere(Message, type_name="tests.to_nowhere", queue="somewhere"):
        pass

    try:
        with pytest.raises(ValueError):
            pashq.queue().dispatch("", ToNowhere())
        with pytest.raises(ValueError):
            ToNowhere().dispatch("")
    finally:
        unregister("tests.to_nowhere")
