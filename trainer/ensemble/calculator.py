"""An ASE calculator backed by a deep ensemble: relaxations and MD with an uncertainty at every step.

    atoms.calc = EnsembleCalculator("runs/hpo-.../ensemble")
    BFGS(atoms).run(fmax=0.05)
    atoms.calc.results["forces_std"]      # calibrated, eV/Å, per atom and component

Energy and forces are the ensemble means; `energy_std` (eV) and `forces_std`
(eV/Å) are the calibrated member spreads, available in `results` after each
calculation (raw ones under `*_std_raw`), so a driver can stop or flag a
trajectory that leaves the region the members agree on.
"""
from __future__ import annotations

from pathlib import Path

from ase.calculators.calculator import Calculator, all_changes

from trainer.ensemble.predict import Ensemble


class EnsembleCalculator(Calculator):
    implemented_properties = ["energy", "free_energy", "forces", "energy_std", "forces_std"]

    def __init__(self, ensemble: str | Path | Ensemble, device: str = "cpu", source: int = 0, **kwargs):
        super().__init__(**kwargs)
        self.ensemble = ensemble if isinstance(ensemble, Ensemble) else Ensemble.load(ensemble, device)
        self.source = source   # which training source's reference energies (level of theory) to use

    def calculate(self, atoms=None, properties=("energy",), system_changes=all_changes) -> None:
        super().calculate(atoms, properties, system_changes)
        pred = self.ensemble.predict([self.atoms], batch_size=1, source=self.source)
        energy = float(pred.energy_mean[0])
        self.results = {
            "energy": energy,
            "free_energy": energy,   # no electronic entropy in the model: ASE's optimisers may ask for it
            "forces": pred.forces_mean.copy(),
            "energy_std": float(pred.energy_std[0]),
            "forces_std": pred.forces_std.copy(),
            "energy_std_raw": float(pred.energy_std_raw[0]),
            "forces_std_raw": pred.forces_std_raw.copy(),
        }
