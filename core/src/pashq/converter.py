"""The private cattrs converter that turns message fields into JSON values and back.

Supports nested attrs classes, ``datetime`` (ISO 8601; keep them timezone-aware), ``date``,
``UUID``, ``Decimal`` (as a string, exactly), ``Enum`` (by value), ``Optional``/``Union``,
``list``, ``tuple``, ``set``/``frozenset`` (as JSON arrays) and ``dict``. A structuring
error becomes :class:`~pashq.errors.SerializationError` naming the failing field.
"""

from __future__ import annotations

from collections.abc import Callable
from collections.abc import Set as AbstractSet
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any, TypeVar
from uuid import UUID

import cattrs
from cattrs.strategies import configure_union_passthrough

from pashq.errors import SerializationError

__all__ = [
    "make_converter",
    "plain_structure_hook",
    "structure",
    "unstructure",
    "unstructure_hook",
]

T = TypeVar("T")


def _structure_datetime(value: Any, _: type) -> datetime:
    if isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 datetime string, got {value!r}")
    return datetime.fromisoformat(value)


def _structure_date(value: Any, _: type) -> date:
    if isinstance(value, date) and not isinstance(value, datetime):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected an ISO 8601 date string, got {value!r}")
    return date.fromisoformat(value)


def _structure_decimal(value: Any, _: type) -> Decimal:
    if isinstance(value, bool) or not isinstance(value, str | int | float | Decimal):
        raise ValueError(f"expected a decimal string, got {value!r}")
    try:
        return Decimal(str(value) if isinstance(value, float) else value)
    except InvalidOperation:
        raise ValueError(f"expected a decimal string, got {value!r}") from None


def _structure_uuid(value: Any, _: type) -> UUID:
    if isinstance(value, UUID):
        return value
    if not isinstance(value, str):
        raise ValueError(f"expected a UUID string, got {value!r}")
    return UUID(value)


def make_converter(detailed_validation: bool = True) -> cattrs.Converter:
    """Build a converter preconfigured for the JSON wire format (``detailed_validation``:
    its errors name every failing field, at about twice the cost of a plain one)."""
    converter = cattrs.Converter(
        detailed_validation=detailed_validation,
        unstruct_collection_overrides={AbstractSet: list},
    )
    converter.register_unstructure_hook(datetime, datetime.isoformat)
    converter.register_structure_hook(datetime, _structure_datetime)
    converter.register_unstructure_hook(date, date.isoformat)
    converter.register_structure_hook(date, _structure_date)
    converter.register_unstructure_hook(Decimal, str)
    converter.register_structure_hook(Decimal, _structure_decimal)
    converter.register_unstructure_hook(UUID, str)
    converter.register_structure_hook(UUID, _structure_uuid)
    # Unions of JSON scalars (int | str, float | None ...) pass through as decoded.
    configure_union_passthrough(str | int | float | bool | None, converter)
    return converter


_converter = make_converter()
# The same hooks without detailed validation: what structure() runs first, the detailed
# converter only explaining a body that fails.
_plain_converter = make_converter(detailed_validation=False)
# The converter's hook for each class, looked up once (the converter is private: no hook
# is registered on it after make_converter()).
_unstructure_hooks: dict[type, Callable[[Any], Any]] = {}
_structure_hooks: dict[type, Callable[[Any, type], Any]] = {}
_plain_structure_hooks: dict[type, Callable[[Any, type], Any]] = {}


def unstructure_hook(cls: type) -> Callable[[Any], Any]:
    """The converter's unstructure hook of ``cls`` (what :func:`unstructure` calls)."""
    hook = _unstructure_hooks.get(cls)
    if hook is None:
        hook = _unstructure_hooks[cls] = _converter.get_unstructure_hook(cls)
    return hook


def unstructure(obj: Any) -> Any:
    """Turn an attrs instance (and what it holds) into JSON-compatible values."""
    cls = type(obj)
    hook = _unstructure_hooks.get(cls)
    if hook is None:
        hook = _unstructure_hooks[cls] = _converter.get_unstructure_hook(cls)
    return hook(obj)


def plain_structure_hook(cls: type) -> Callable[[Any, type], Any]:
    """The hook :func:`structure` tries first for ``cls`` (no detailed validation: it
    raises without naming the fields; :func:`structure` explains)."""
    plain = _plain_structure_hooks.get(cls)
    if plain is None:
        plain = _plain_structure_hooks[cls] = _plain_converter.get_structure_hook(cls)
    return plain


def structure(value: Any, cls: type[T]) -> T:
    """Build ``cls`` from JSON values.

    :raises SerializationError: naming each failing field (``$.amount: expected int``).
    """
    try:
        return plain_structure_hook(cls)(value, cls)  # type: ignore[no-any-return]
    except Exception:  # explained by the detailed converter below
        pass
    hook = _structure_hooks.get(cls)
    if hook is None:
        hook = _structure_hooks[cls] = _converter.get_structure_hook(cls)
    try:
        return hook(value, cls)  # type: ignore[no-any-return]
    except Exception as exc:
        details = "; ".join(cattrs.transform_error(exc, path=cls.__name__))
        raise SerializationError(f"cannot build {cls.__qualname__}: {details}") from exc
