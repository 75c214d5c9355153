"""Check the demo's result: each of the 100 e-mails was sent exactly once."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

sent = Counter(line.split()[0] for line in Path("sent.log").read_text().splitlines())
expected = {str(i) for i in range(100)}
if set(sent) != expected or set(sent.values()) != {1}:
    sys.exit(
        f"demo FAILED: {len(sent)} distinct e-mails, duplicates: "
        f"{[k for k, v in sent.items() if v > 1]}"
    )
print("demo OK: 100 e-mails sent, each exactly once")
