"""Which structures are fit to train on, and the per-source tally (Table II of the HydraGNN GFM paper).

Every dropped structure is counted under exactly one rule, the first it breaks
in the order of RULES, so that for every source read = kept + sum(dropped).
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from trainer.data.structures import LabelledStructures

RULES = {
    "no_atoms": "structure has no atoms",
    "missing_energy": "no total-energy label",
    "missing_forces": "no force labels",
    "non_finite": "NaN or infinite energy, forces, positions or cell",
    "max_force": "largest per-atom force norm above the limit",
}


@dataclass
class SourceReport:
    """The tally of one input file."""
    path: str
    split: str               # trainset/valset/testset, or "random" for a fraction split
    first_sample_id: int     # sample_id of the file's first structure
    read: int = 0
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(RULES, 0))

    @property
    def kept(self) -> int:
        return self.read - sum(self.dropped.values())

    def to_dict(self) -> dict:
        return {"path": self.path, "split": self.split, "first_sample_id": self.first_sample_id,
                "read": self.read, "kept": self.kept, "dropped": dict(self.dropped)}


def broken_rule(n_atoms: int, energy: float | None, forces: np.ndarray | None, positions: np.ndarray,
                cell: np.ndarray, max_force: float) -> str | None:
    """The first rule of RULES a structure breaks, or None when it is kept."""
    if n_atoms == 0:
        return "no_atoms"
    if energy is None:
        return "missing_energy"
    if forces is None:
        return "missing_forces"
    if not (np.isfinite(energy) and np.isfinite(forces).all() and np.isfinite(positions).all()
            and np.isfinite(cell).all()):
        return "non_finite"
    if np.sqrt(np.einsum("ij,ij->i", forces, forces).max()) > max_force:
        return "max_force"
    return None


def clean(labelled: LabelledStructures, max_force: float, report: SourceReport) -> np.ndarray:
    """Indices (into `labelled`) of the structures kept; tallies the rest into `report`."""
    keep = []
    for k, atoms in enumerate(labelled.structures):
        rule = broken_rule(len(atoms), labelled.energy[k], labelled.forces[k], atoms.positions,
                           atoms.cell.array, max_force)
        if rule is None:
            keep.append(k)
        else:
            report.dropped[rule] += 1
    report.read += len(labelled)
    return np.asarray(keep, dtype=np.int64)


def report_dict(reports: list[SourceReport], max_force: float) -> dict:
    """The JSON form stored beside the dataset and in its `cleaning_report` attribute."""
    total = SourceReport(path="total", split="", first_sample_id=0)
    for report in reports:
        total.read += report.read
        for rule, count in report.dropped.items():
            total.dropped[rule] += count
    totals = total.to_dict()
    del totals["path"], totals["split"], totals["first_sample_id"]
    return {"max_force": max_force, "rules": dict(RULES),
            "sources": [report.to_dict() for report in reports], "total": totals}


def report_table(report: dict) -> str:
    """A fixed-width table: one row per source, one column per rule."""
    names = [s["path"] for s in report["sources"]] + ["total"]
    width = max(len(name) for name in names)
    header = f"{'source':<{width}}  {'split':>8} {'read':>8} {'kept':>8} " + " ".join(
        f"{rule:>14}" for rule in RULES)
    lines = [header, "-" * len(header)]
    rows = [*report["sources"], {"path": "total", "split": "", **report["total"]}]
    for row in rows:
        lines.append(f"{row['path']:<{width}}  {row['split']:>8} {row['read']:>8} {row['kept']:>8} "
                     + " ".join(f"{row['dropped'][rule]:>14}" for rule in RULES))
    lines.append(f"(max_force = {report['max_force']:g} eV/Å per atom)")
    return "\n".join(lines)
