"""docs/writing-a-driver.md quotes the example driver; the quotes must match the source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "writing-a-driver.md"
_BLOCK = re.compile(r"^```(python|toml)\n# (\S+)\n(.*?)^```$", re.MULTILINE | re.DOTALL)


def _quotes() -> list[tuple[str, str, str]]:
    text = GUIDE.read_text(encoding="utf-8")
    return [(m[1], m[2], m[3]) for m in _BLOCK.finditer(text)]


def test_guide_quotes_the_example_driver() -> None:
    """The guide has quotes from the example's files (so the check below checks something)."""
    quoted = {path for _, path, _ in _quotes()}
    assert "examples/pashq-example-driver/src/pashq_example_driver/spool.py" in quoted
    assert "examples/pashq-example-driver/pyproject.toml" in quoted


@pytest.mark.parametrize(("kind", "path", "text"), _quotes(), ids=lambda v: str(v)[:40])
def test_guide_quote_matches_the_source(kind: str, path: str, text: str) -> None:
    """A Python quote is a verbatim slice of its file; a TOML quote's lines are all in it."""
    source = (ROOT / path).read_text(encoding="utf-8")
    if kind == "python":
        assert text in source, f"the guide's quote of {path} is out of date:\n{text}"
    else:
        lines = set(source.splitlines())
        missing = [line for line in text.splitlines() if line.strip() and line not in lines]
        assert not missing, f"lines quoted from {path} are not in it: {missing}"
