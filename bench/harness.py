"""The benchmark harness every driver uses: one workload for pashq, raw clients and peers.

Workload: N messages whose body is the JSON of
``{"id": i, "event": "invoice.paid", "payload": "x" * 200}`` (253 bytes at i = 19,999).
Phase A publishes all N from one process; phase B consumes all N with acknowledgement in
one process. Each phase is timed on its own; every id must arrive exactly once or the run
fails. Each case runs ``--repeat`` times (default 3), each time in a fresh subprocess, so
the peak RSS (``ru_maxrss``) is that case's own; the table shows medians.

A benchmark script defines cases and calls :func:`main`::

    def pashq_memory(n: int) -> Phases:
        ...publish n messages..., ...consume them..., return Phases(t_pub, t_con, ids)

    if __name__ == "__main__":
        main({"pashq memory": pashq_memory}, default_n=20_000, title="memory driver")
"""

from __future__ import annotations

import argparse
import json
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

__all__ = ["Phases", "Timer", "body", "main", "payload", "run_child"]


def payload(i: int) -> dict[str, object]:
    """The message content for id ``i``."""
    return {"id": i, "event": "invoice.paid", "payload": "x" * 200}


def body(i: int) -> bytes:
    """The raw JSON body for id ``i`` (what raw clients publish)."""
    return json.dumps(payload(i)).encode()


@dataclass
class Phases:
    """What one case run measured: seconds per phase and the ids consumed."""

    publish_seconds: float
    consume_seconds: float
    ids: Iterable[int]
    notes: dict[str, float] = field(default_factory=dict)


class Timer:
    """``with Timer() as t: ...`` then ``t.seconds``."""

    def __enter__(self) -> Timer:
        self.start = time.perf_counter()
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self.start


def run_child(name: str, n: int, failures: list[str]) -> dict[str, Any] | None:
    """One run of case ``name`` in a fresh subprocess (``None`` and a failure noted if it
    failed or lost or repeated a message)."""
    proc = subprocess.run(
        [sys.executable, sys.argv[0], "--child", name, "-n", str(n)],
        capture_output=True,
        text=True,
    )
    lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
    if proc.returncode != 0 or not lines:
        failures.append(f"{name}: exit {proc.returncode}\n{proc.stderr}")
        return None
    run: dict[str, Any] = json.loads(lines[-1][7:])
    if not run["ok"]:
        failures.append(
            f"{name}: got {run['count']} ids ({run['distinct']} distinct), "
            f"expected each of {n} exactly once"
        )
        return None
    return run


def _child(cases: dict[str, Callable[[int], Phases]], name: str, n: int) -> None:
    result = cases[name](n)
    ids = list(result.ids)
    ok = len(ids) == n and sorted(ids) == list(range(n))
    rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        "RESULT "
        + json.dumps(
            {
                "publish": result.publish_seconds,
                "consume": result.consume_seconds,
                "ok": ok,
                "count": len(ids),
                "distinct": len(set(ids)),
                "rss_mb": rss_mb,
                "notes": result.notes,
            }
        ),
        flush=True,
    )


def _rate(n: int, seconds: float) -> str:
    return "-" if seconds <= 0 else f"{n / seconds:,.0f}"


def main(
    cases: dict[str, Callable[[int], Phases]],
    *,
    default_n: int = 20_000,
    title: str = "",
    argv: list[str] | None = None,
) -> None:
    """Run the cases (each ``--repeat`` times in a subprocess) and print a markdown table."""
    parser = argparse.ArgumentParser(description=title or "pashq benchmark")
    parser.add_argument("-n", type=int, default=default_n, help="messages per run")
    parser.add_argument("--repeat", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--only", action="append", help="run only cases containing this text")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--json", help="also write the results to this JSON file")
    parser.add_argument(
        "--interleave",
        action="store_true",
        help="run the cases round by round and show each one's per-round ratio to the first",
    )
    args = parser.parse_args(argv)
    if args.child:
        _child(cases, args.child, args.n)
        return
    selected = [c for c in cases if not args.only or any(o in c for o in args.only)]
    rows = []
    failures: list[str] = []
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in selected}
    # --interleave: round after round of every case, so that a change in the machine's load
    # hits all cases alike; otherwise each case's runs in a row.
    order = (
        [name for _ in range(args.repeat) for name in selected]
        if args.interleave
        else [name for name in selected for _ in range(args.repeat)]
    )
    broken: set[str] = set()
    for name in order:
        if name in broken:
            continue
        run = run_child(name, args.n, failures)
        if run is None:
            broken.add(name)
            continue
        results[name].append(run)
        print(
            f"  {name} run {len(results[name])}: publish {_rate(args.n, run['publish'])}/s, "
            f"consume {_rate(args.n, run['consume'])}/s, rss {run['rss_mb']:.0f} MB",
            file=sys.stderr,
            flush=True,
        )
    for name in selected:
        runs = results[name]
        if len(runs) == args.repeat:
            rows.append(
                {
                    "case": name,
                    "publish_per_s": args.n / statistics.median(r["publish"] for r in runs)
                    if all(r["publish"] > 0 for r in runs)
                    else None,
                    "consume_per_s": args.n / statistics.median(r["consume"] for r in runs)
                    if all(r["consume"] > 0 for r in runs)
                    else None,
                    "rss_mb": statistics.median(r["rss_mb"] for r in runs),
                }
            )
    print(f"\n{title} — N = {args.n:,}, median of {args.repeat}, {platform.python_version()}\n")
    print("| case | publish msg/s | consume msg/s | peak RSS MB |")
    print("|---|---:|---:|---:|")
    for row in rows:
        pub = "-" if row["publish_per_s"] is None else f"{row['publish_per_s']:,.0f}"
        con = "-" if row["consume_per_s"] is None else f"{row['consume_per_s']:,.0f}"
        print(f"| {row['case']} | {pub} | {con} | {row['rss_mb']:.0f} |")
    if args.interleave and len(rows) > 1 and rows[0]["case"] == selected[0]:
        base = results[selected[0]]
        print(f"\nPer-round ratio to {selected[0]} (median of {args.repeat} rounds):\n")
        print("| case | publish | consume |")
        print("|---|---:|---:|")
        for row in rows[1:]:
            runs = results[row["case"]]
            ratios = [
                statistics.median(b[phase] / r[phase] for b, r in zip(base, runs, strict=True))
                if all(r[phase] > 0 for r in runs)
                else None
                for phase in ("publish", "consume")
            ]
            shown = ["-" if x is None else f"{x:.2f}x" for x in ratios]
            print(f"| {row['case']} | {shown[0]} | {shown[1]} |")
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "repeat": args.repeat, "rows": rows}, fh, indent=2)
    if failures:
        print("\nFAILED:\n" + "\n".join(failures), file=sys.stderr)
        sys.exit(1)
