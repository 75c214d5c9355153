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

__all__ = ["Phases", "Timer", "body", "main", "payload"]


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
    args = parser.parse_args(argv)
    if args.child:
        _child(cases, args.child, args.n)
        return
    selected = [c for c in cases if not args.only or any(o in c for o in args.only)]
    rows = []
    failures = []
    for name in selected:
        runs = []
        for attempt in range(args.repeat):
            proc = subprocess.run(
                [sys.executable, sys.argv[0], "--child", name, "-n", str(args.n)],
                capture_output=True,
                text=True,
            )
            lines = [x for x in proc.stdout.splitlines() if x.startswith("RESULT ")]
            if proc.returncode != 0 or not lines:
                failures.append(f"{name} run {attempt + 1}: exit {proc.returncode}\n{proc.stderr}")
                break
            run = json.loads(lines[-1][7:])
            if not run["ok"]:
                failures.append(
                    f"{name}: got {run['count']} ids ({run['distinct']} distinct), "
                    f"expected each of {args.n} exactly once"
                )
                break
            runs.append(run)
            print(
                f"  {name} run {attempt + 1}: publish {_rate(args.n, run['publish'])}/s, "
                f"consume {_rate(args.n, run['consume'])}/s, rss {run['rss_mb']:.0f} MB",
                file=sys.stderr,
                flush=True,
            )
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
    if args.json:
        with open(args.json, "w") as fh:
            json.dump({"n": args.n, "repeat": args.repeat, "rows": rows}, fh, indent=2)
    if failures:
        print("\nFAILED:\n" + "\n".join(failures), file=sys.stderr)
        sys.exit(1)
