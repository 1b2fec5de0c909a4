"""The recorded order a replay must follow (SPEC §14): which step the workflow has to yield next.

While recorded steps remain to be replayed, the next step the generator yields must be the recorded
one with the lowest unreplayed ``seq`` (same id, kind and event). Two kinds of records bend the rule,
both from a run retry (a new run attempt replaying an older one):

- a step that **failed in an earlier attempt** is not expected: it is retried when the workflow
  reaches it again at its place, and otherwise dropped;
- records **after** such a failure were reached only because of it: they are *provisional* — replayed
  in order while the workflow follows them, and dropped (with their consumed events released) the
  first time it does not, since a retried step may now succeed and change the path.

Everything else that does not match is a divergence: the caller raises NonDeterminismError. Pure.
"""

from __future__ import annotations

from collections.abc import Mapping

from .records import StepRecord

__all__ = ["RecordedOrder"]


def _same_step(rec: StepRecord, step_id: str, kind: str, event: str | None) -> bool:
    return rec.step_id == step_id and rec.kind == kind and (kind != "wait_for" or rec.event == event)


class RecordedOrder:
    """A run's records in ``seq`` order and how far the replay has followed them."""

    def __init__(self, records: Mapping[str, StepRecord], attempt: int) -> None:
        ordered = sorted(records.values(), key=lambda r: r.seq)
        self._retryable = {r.step_id for r in ordered if r.status == "failed" and r.run_attempt < attempt}
        first_retry = min((r.seq for r in ordered if r.step_id in self._retryable), default=None)
        self._provisional_from = first_retry  # records with a higher seq are provisional
        self._records = ordered
        self._pos = 0
        self.diverged: StepRecord | None = None  # the record the workflow should have yielded instead
        self.dropped: list[str] = []  # records to delete (provisional ones the workflow left)
        self.skipped: list[str] = []  # failures of earlier attempts not reached again at their place

    @property
    def remaining(self) -> list[StepRecord]:
        return self._records[self._pos :]

    @property
    def replaying(self) -> bool:
        """Whether recorded steps remain that the workflow has not yielded yet."""
        return self._pos < len(self._records)

    def follow(self, step_id: str, kind: str, event: str | None = None) -> StepRecord | None:
        """The workflow yields ``step_id`` (of ``kind``, ``event``) now: the record it replays, or
        None for a new step — or for a divergence, then :attr:`diverged` names the record expected.
        Records the workflow legitimately leaves behind are dropped on the way."""
        while self._pos < len(self._records):
            rec = self._records[self._pos]
            if _same_step(rec, step_id, kind, event):
                self._pos += 1
                return rec
            if rec.step_id in self._retryable:  # not reached again at its place: not expected
                self._pos += 1
                self.skipped.append(rec.step_id)
                continue
            if self._is_provisional(rec):
                self.drop_rest()
                return None
            self.diverged = rec
            return None
        return None

    def returned(self) -> StepRecord | None:
        """The workflow returned: the first record it should still have yielded, if any (a
        divergence); provisional records and earlier failures left behind are dropped."""
        for rec in self.remaining:
            if rec.step_id not in self._retryable and not self._is_provisional(rec):
                return rec
        self.drop_rest()
        return None

    def drop_rest(self) -> None:
        """The workflow left the provisional path: what remains of it is deleted."""
        for rec in self.remaining:
            if rec.step_id in self._retryable:
                self.skipped.append(rec.step_id)
            else:
                self.dropped.append(rec.step_id)
        self._pos = len(self._records)

    def is_retryable(self, step_id: str) -> bool:
        return step_id in self._retryable

    def _is_provisional(self, rec: StepRecord) -> bool:
        return self._provisional_from is not None and rec.seq > self._provisional_from
