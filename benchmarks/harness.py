"""Benchmark of the replay core on the in-memory store (no PostgreSQL, simulated clock).

    python benchmarks/harness.py [--runs 1000] [--steps 10] [--lengths 10,1000,10000] [--repeat 5]

(a) **Interpreter + memory store throughput**: ``--runs`` runs of ``--steps`` ``Run`` steps each,
    started at once and executed by ``Harness.run_until_idle()``; reports recorded steps per second.
(b) **Replay cost per recorded step**: a history of N completed ``Run`` steps is built once, then a
    fresh ``Replayer(...).decide(now)`` replays it from scratch (what a worker does after a wait or a
    crash); reports µs per recorded step, best of ``--repeat``. It must be flat in N: a replay that
    grew quadratically would make long-lived runs ever slower to resume.
"""

from __future__ import annotations

import argparse
import gc
import sys
import time
from collections.abc import Sequence
from typing import Any

import pendulum

import pgflow
from pgflow import Run, workflow
from pgflow.records import StepRecord
from pgflow.replay import Complete, Replayer, ReplayInput
from pgflow.testing import Harness, SimClock

T0 = pendulum.datetime(2030, 1, 1, tz="UTC")


def work(i: int) -> int:
    """The trivial unit of work of every step (annotated: replay structures its result as ``int``)."""
    return i + 1


@workflow("bench-steps")
def steps_flow(ctx: pgflow.Context[Any]) -> Any:
    total = 0
    for i in range(ctx.input["steps"]):
        total = yield Run(f"step-{i}", work, total)
    return total


# -- (a) throughput ---------------------------------------------------------------------------------


def bench_throughput(runs: int, steps: int) -> dict[str, float]:
    """Start ``runs`` runs of ``steps`` steps, execute them all; steps recorded per second."""
    with Harness(workflows=[steps_flow], clock=SimClock(T0)) as h:
        ids = [h.start_workflow(steps_flow, {"steps": steps}).id for _ in range(runs)]
        start = time.perf_counter()
        h.run_until_idle()
        elapsed = time.perf_counter() - start
        done = [h.get_run(i) for i in ids]
    assert all(r.status == "completed" and r.output == steps for r in done), (
        "a benchmark run did not complete"
    )
    total = runs * steps
    return {"runs": runs, "steps": total, "seconds": elapsed, "steps_per_s": total / elapsed}


# -- (b) replay cost --------------------------------------------------------------------------------


def history(length: int) -> dict[str, StepRecord]:
    """A recorded history of ``length`` completed ``Run`` steps of ``bench-steps``."""
    return {
        f"step-{i}": StepRecord(
            f"step-{i}", "run", "completed", output=i + 1, attempts=1, started_at=T0, completed_at=T0
        )
        for i in range(length)
    }


def replay_once(length: int, recorded: dict[str, StepRecord]) -> float:
    """Seconds for one fresh Replayer to replay ``recorded`` to its decision."""
    info = ReplayInput("bench-run", steps_flow.id, None, 0, {"steps": length})
    start = time.perf_counter()
    replayer = Replayer(steps_flow, info, recorded)
    decision = replayer.decide(T0)
    elapsed = time.perf_counter() - start
    replayer.close()
    assert isinstance(decision.action, Complete) and decision.action.output == length, decision
    return elapsed


def bench_replay(length: int, repeat: int) -> dict[str, float]:
    """Best-of-``repeat`` replay time of a ``length``-step history, per recorded step."""
    recorded = history(length)
    replay_once(length, recorded)  # warm caches (type hints, converter hooks)
    gc.collect()
    best = min(replay_once(length, recorded) for _ in range(repeat))
    return {"length": length, "seconds": best, "us_per_step": best / length * 1e6}


# -- report -----------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=1000)
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--lengths", default="10,1000,10000", help="history lengths, comma-separated")
    parser.add_argument("--repeat", type=int, default=5)
    args = parser.parse_args(argv)
    lengths = [int(x) for x in args.lengths.split(",") if x.strip()]

    throughput = bench_throughput(args.runs, args.steps)
    replays = [bench_replay(n, args.repeat) for n in lengths]

    print(f"pgflow replay core on the memory store (Python {sys.version.split()[0]})")
    print()
    print("(a) interpreter + memory store")
    print(f"    {'runs':>8} {'steps':>8} {'seconds':>9} {'steps/s':>10}")
    t = throughput
    print(f"    {t['runs']:>8,} {t['steps']:>8,} {t['seconds']:>9.3f} {t['steps_per_s']:>10,.0f}")
    print()
    print("(b) replay from scratch, fresh Replayer(...).decide(now)")
    print(f"    {'history':>8} {'seconds':>9} {'µs/step':>9}")
    for r in replays:
        print(f"    {r['length']:>8,} {r['seconds']:>9.4f} {r['us_per_step']:>9.2f}")
    if len(replays) > 1:
        ratio = replays[-1]["us_per_step"] / replays[0]["us_per_step"]
        print(
            f"    per-step cost at {replays[-1]['length']:,} vs {replays[0]['length']:,} steps: ×{ratio:.2f}"
        )
    return {"throughput": throughput, "replay": replays}


if __name__ == "__main__":
    main()
