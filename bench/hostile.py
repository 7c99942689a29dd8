"""Hostile input against real processes: per attack, the longest event-loop stall, RSS growth, legit failures.

    .venv/bin/python bench/hostile.py [--only NAME[,NAME]] [--small] [--json]

Every attack registered in `tests/hostile/attacks_*.py` (the same ones `tests/hostile/` asserts bounds on)
runs against a fresh stack of real processes (`xds-control serve`, demo backends, and Envoy plus
`xds-control aggregator` where the attack needs them). While it runs, an observer process times a heartbeat
on each event loop (admin `grpc.health.v1/Check` for the control plane, `GET /healthz` for the aggregator),
samples each process's RSS, and runs a legitimate client (admin reads; an MCP `tools/call` through Envoy when
the aggregator runs). Printed per attack: the longest stall of each loop, the largest RSS growth and whose,
the legitimate client's calls and failures, and what the attacker was told. Targets (issue 14): stall
< 100 ms, RSS growth < 100 MB, 0 failed legitimate calls; each row says met / NOT met.

`--small` runs the tests' size instead of the issue's (what tests/bench/test_bench_scripts.py runs). Add an
attack by registering it in a `tests/hostile/attacks_*.py` module: it appears here as a row.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.hostile.support import MB, TARGETS, Report, Scale, load_attacks, run_attack
from tests.support.procs import unwind_on_sigterm


def row(report: Report) -> dict[str, object]:
    obs = report.observation
    growth = obs.rss_growth
    worst = max(growth, key=lambda k: growth[k]) if growth else "-"
    return {
        "attack": report.attack.name,
        "surface": report.attack.surface,
        "stall_ms": obs.stall_ms,
        "rss_growth_mb": {k: round(v / MB, 1) for k, v in growth.items()},
        "worst_rss": worst,
        "legit_calls": obs.legit_calls,
        "legit_errors": obs.legit_errors,
        "attacker_saw": report.finding.attacker_saw[:160],
        "facts": report.finding.facts,
        "seconds": round(report.seconds, 1),
        "problems": report.problems(TARGETS),
    }


def print_table(rows: list[dict[str, object]]) -> None:
    header = (
        f"{'attack':<28} {'stall cp ms':>11} {'stall agg ms':>12} {'RSS growth MB':>14} {'legit err/calls':>15}  target"
    )
    print(header)
    print("-" * len(header))
    for r in rows:
        stalls = r["stall_ms"]
        assert isinstance(stalls, dict)
        growth = r["rss_growth_mb"]
        assert isinstance(growth, dict)
        worst = max(growth.values(), default=0.0)
        cp = f"{stalls.get('control-plane', 0):.1f}"
        agg = f"{stalls['aggregator']:.1f}" if "aggregator" in stalls else "-"
        legit = f"{r['legit_errors']}/{r['legit_calls']}"
        verdict = "met" if not r["problems"] else "NOT met"
        print(f"{r['attack']:<28} {cp:>11} {agg:>12} {worst:>8.1f} ({r['worst_rss']}) {legit:>9}  {verdict}")
    print()
    for r in rows:
        print(f"{r['attack']}: {r['surface']}")
        print(f"  attacker saw: {r['attacker_saw']}")
        print(f"  facts: {json.dumps(r['facts'])}  ({r['seconds']} s)")
        for problem in r["problems"]:  # type: ignore[attr-defined]
            print(f"  NOT met: {problem}")


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--only", help="comma-separated attack names (default: all)")
    parser.add_argument("--small", action="store_true", help="the tests' size, not the issue's")
    parser.add_argument("--json", action="store_true", help="also print one JSON object per attack")
    args = parser.parse_args()
    unwind_on_sigterm()
    attacks = load_attacks()
    names = args.only.split(",") if args.only else sorted(attacks)
    unknown = [n for n in names if n not in attacks]
    if unknown:
        parser.error(f"unknown attacks {unknown}; known: {sorted(attacks)}")
    rows = []
    for name in names:
        print(f"running {name} ...", flush=True)
        with tempfile.TemporaryDirectory(prefix=f"hostile-{name}-") as tmp:
            report = await run_attack(attacks[name], Path(tmp), Scale(bench=not args.small))
        rows.append(row(report))
        if args.json:
            print(json.dumps(rows[-1]), flush=True)
    print()
    print_table(rows)
    print(
        f"\ntargets: stall < {TARGETS.stall_ms:.0f} ms, RSS growth < {TARGETS.rss_growth_bytes // MB} MB, 0 failed legit calls"
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(asyncio.run(main()))
