"""What a calibration is: per quantity, a map from the members' raw std to the reported std.

    identity  sigma -> sigma            (not calibrated, or calibrating did not help)
    scalar    sigma -> a * sigma        (b = 1)
    power     sigma -> a * sigma ** b   (a in eV^(1-b) or (eV/Å)^(1-b))

Energy (per structure, eV) and forces (per component, eV/Å) each have their
own map, stored in the manifest with the record of how it was chosen
(`fit`: calibration_fit.py). Manifests of format 1 stored one factor per
quantity; `upgrade_v1` reads them as scalar maps, so they keep working.
Torch-free (numpy only): the manifest reader uses it.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

import numpy as np

from trainer.contract.typed import Invalid, bounded

FORMS = ("identity", "scalar", "power")


@dataclass(frozen=True)
class StdMap:
    """sigma -> a * sigma ** b for one quantity."""
    form: Literal["identity", "scalar", "power"] = "identity"
    a: float = bounded(1.0, low=0.0, low_exclusive=True)
    b: float = bounded(1.0, low=0.0, low_exclusive=True)
    fit: dict[str, Any] | None = None   # how it was chosen (held-out areas of each form, note), if fitted

    def check(self) -> None:
        if self.form == "identity" and (self.a, self.b) != (1.0, 1.0):
            raise Invalid("a", f"the identity has a = b = 1, got a = {self.a}, b = {self.b}")
        if self.form == "scalar" and self.b != 1.0:
            raise Invalid("b", f"the scalar form has b = 1, got {self.b}")

    @classmethod
    def scalar(cls, factor: float, fit: dict[str, Any] | None = None) -> "StdMap":
        return cls("identity" if factor == 1.0 else "scalar", float(factor), 1.0, fit)

    def apply(self, std: np.ndarray) -> np.ndarray:
        std = np.asarray(std, dtype=np.float64)
        if self.form == "identity":
            return std
        return self.a * (std if self.b == 1.0 else np.power(std, self.b))

    def describe(self) -> str:
        if self.form == "identity":
            return "raw (identity)"
        if self.form == "scalar":
            return f"x {self.a:.4g}"
        return f"{self.a:.4g}·σ^{self.b:.3g}"


@dataclass(frozen=True)
class Calibration:
    """The std maps of energy and forces, the members' energy offsets, and the data they were fitted on."""
    energy: StdMap = field(default_factory=StdMap)
    forces: StdMap = field(default_factory=StdMap)
    fitted_on: dict[str, Any] | None = None   # which data (file, split, structures) and when
    # Per member, eV/atom: its mean energy per atom minus the ensemble's on the fitting data.
    # None: not fitted (ensembles from before; the raw spread is used).
    energy_offsets: list[float] | None = None


def member_offsets(member_energy: np.ndarray, num_atoms: np.ndarray) -> list[float]:
    """Each member's constant disagreement with the others, per atom (they sum to zero).

    Members differ in energy by an offset per atom that no structure causes: on
    3BPA (6 members, trained 30 epochs) it was ~0.5 meV/atom, over half the spread
    in distribution, and the same on shifted frames, where it hid the growth of
    the structure-dependent spread (x0.99 shifted over in distribution with it,
    x2.45 without). It needs no labels: it is the mean of (E_m - E_mean) / n.
    """
    deviation = (member_energy - member_energy.mean(axis=0)) / num_atoms
    return [float(d) for d in deviation.mean(axis=1)]


def energy_spread(member_energy: np.ndarray, num_atoms: np.ndarray, offsets: list[float] | None) -> np.ndarray:
    """[G] std over members of their energies, each member's offset (per atom) removed first."""
    if offsets is None:
        return member_energy.std(axis=0)
    return (member_energy - np.asarray(offsets)[:, None] * num_atoms[None, :]).std(axis=0)


def upgrade_v1(calibration: Any) -> Any:
    """A format-1 calibration ({"energy": s, "forces": s, ...}) as scalar maps; anything else unchanged."""
    if not isinstance(calibration, dict):
        return calibration
    upgraded = dict(calibration)
    for quantity in ("energy", "forces"):
        value = calibration.get(quantity)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            # A non-positive factor is left as a number in a map, for the schema to refuse by name.
            upgraded[quantity] = {"form": "identity" if value == 1.0 else "scalar", "a": value, "b": 1.0}
    return upgraded
