"""The run page's timeline as numbers: each step's duration and its bar on the run's time axis.

Pure: a ``WorkflowRun`` and ``now`` in, rows out. The axis runs from the run's creation to its end
(or ``now`` while it lives), so bars are proportional to durations and show where the time went.
"""

from __future__ import annotations

from datetime import datetime

import attrs

from pgflow import StepRecord, WorkflowRun

__all__ = ["Bar", "StepRow", "Timeline", "build_timeline"]

MIN_WIDTH = 0.6  # percent of the axis: an instant step still shows a sliver
SETTLED = frozenset({"completed", "failed"})


@attrs.frozen
class Bar:
    """Where a step's bar sits on the axis, in percent."""

    start: float
    width: float


@attrs.frozen
class StepRow:
    """One step of the timeline."""

    number: int
    record: StepRecord
    seconds: float | None  # how long it took, or has been going on (None: never started)
    ongoing: bool  # still waiting or running: its bar grows until it settles
    bar: Bar

    @property
    def state(self) -> str:
        """The CSS state of the row: the record's status (``running`` included, §13)."""
        return self.record.status


@attrs.frozen
class Timeline:
    rows: tuple[StepRow, ...]
    start: datetime
    end: datetime
    ongoing: bool  # the run has not ended: the axis ends now

    @property
    def seconds(self) -> float:
        return max((self.end - self.start).total_seconds(), 0.0)


def build_timeline(run: WorkflowRun, now: datetime) -> Timeline:
    """The run's steps in execution order, each with its duration and its bar."""
    records = list(run.timeline.values())
    ongoing = run.completed_at is None
    end = _axis_end(run, records, now)
    span = max((end - run.created_at).total_seconds(), 1e-3)
    rows = tuple(
        _row(number, rec, run.created_at, end, span, ongoing) for number, rec in enumerate(records, start=1)
    )
    return Timeline(rows, run.created_at, end, ongoing)


def _axis_end(run: WorkflowRun, records: list[StepRecord], now: datetime) -> datetime:
    """The run's end, or now while it lives; never before a time the run recorded (clock skew)."""
    seen: list[datetime] = [
        run.updated_at,
        *(t for r in records for t in (r.started_at, r.completed_at) if t is not None),
    ]
    if run.completed_at is not None:
        seen.append(run.completed_at)
    else:
        seen.append(now)
    return max(seen)


def _row(number: int, rec: StepRecord, start: datetime, end: datetime, span: float, ongoing: bool) -> StepRow:
    began = rec.started_at or start
    finished = rec.completed_at if rec.completed_at is not None else end
    seconds = max((finished - began).total_seconds(), 0.0) if rec.started_at is not None else None
    offset = min(max((began - start).total_seconds() / span * 100, 0.0), 100 - MIN_WIDTH)
    width = min(max((seconds or 0.0) / span * 100, MIN_WIDTH), 100 - offset)
    live = ongoing and rec.status not in SETTLED
    return StepRow(number, rec, seconds, live, Bar(round(offset, 3), round(width, 3)))
