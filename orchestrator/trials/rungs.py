"""The rungs table of the trial database: every ASHA decision (trial, rung, value, kept), see search/fidelity.py.

A mixin of TrialDB (db.py), which owns the connection and its lock: the
decisions are state changes like any other and are committed before the
manager acts on them (contract 4), so a restarted manager neither judges a
trial twice at a rung nor loses the values later trials are compared with.
"""
from __future__ import annotations

import time
from dataclasses import dataclass


@dataclass(frozen=True)
class RungDecision:
    trial_id: int
    rung: int         # epochs
    value: float      # best validation loss up to the rung
    kept: bool        # False: discarded at this rung
    rank: int         # 1 = best of the values at the rung when it was judged
    judged: int       # values at the rung then, its own included


class RungRecords:
    """Rung decisions; expects the host class's `_transaction` and `_query` (TrialDB)."""

    def record_rung(self, decision: RungDecision) -> None:
        with self._transaction() as db:  # type: ignore[attr-defined]
            db.execute("INSERT INTO rungs (trial_id, rung, value, kept, rank, judged, at) VALUES (?, ?, ?, ?, ?, ?, ?)",
                       (decision.trial_id, decision.rung, decision.value, int(decision.kept), decision.rank,
                        decision.judged, time.time()))

    def rung_values(self, rung: int, phase: str = "hpo") -> dict[int, float]:
        """{trial id: value} of every trial judged at `rung` so far (kept or not)."""
        rows = self._query("SELECT r.trial_id, r.value FROM rungs AS r JOIN trials AS t USING (trial_id) "  # type: ignore[attr-defined]
                           "WHERE r.rung = ? AND t.phase = ?", (rung, phase))
        return dict(rows)

    def rung_decisions(self, trial_id: int | None = None) -> list[RungDecision]:
        """Every decision (of one trial, or of all), by trial and rung."""
        rows = self._query("SELECT trial_id, rung, value, kept, rank, judged FROM rungs "  # type: ignore[attr-defined]
                           "WHERE ? IS NULL OR trial_id = ? ORDER BY trial_id, rung", (trial_id, trial_id))
        return [RungDecision(t, r, v, bool(k), rank, n) for t, r, v, k, rank, n in rows]
