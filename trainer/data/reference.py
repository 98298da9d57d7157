"""Statistics of the training split stored with a dataset: per-element reference energies and degrees.

The references are fitted on the training split (`fit_references`), or are the
energies of isolated atoms computed with the same DFT settings (`isolated_atoms`,
`gfm-data convert --isolated-atoms`), as MACE's E0s: those make the model learn
atomisation energies, which carry over to compositions the training set lacks.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from trainer.contract.errors import UserError

if TYPE_CHECKING:
    from trainer.data.graphs import GraphArrays


def composition_matrix(graphs: GraphArrays, elements: list[int]) -> np.ndarray:
    """[G, len(elements)] counts of each element in each graph."""
    column = np.searchsorted(elements, graphs.atomic_numbers)
    graph = np.repeat(np.arange(len(graphs)), graphs.num_atoms)
    counts = np.zeros((len(graphs), len(elements)), dtype=np.float64)
    np.add.at(counts, (graph, column), 1.0)
    return counts


@dataclass(frozen=True)
class ReferenceFit:
    """Per-element reference energies and how well the training compositions determine them."""
    energies: dict[int, float]   # eV per atom of element Z
    rank: int                    # of the composition matrix; == len(energies) when every e_Z is determined
    num_compositions: int        # distinct compositions among the structures
    composition: dict[int, int] | None  # the composition, when all structures share one
    structures: int
    shared_mean: float           # eV per atom: the one energy per atom that best fits the totals

    @property
    def method(self) -> str:
        return "least_squares" if self.rank == len(self.energies) else "shared_mean"

    def message(self) -> str:
        """One line for the convert output: what was fitted, and why when it is not per element."""
        from ase.data import chemical_symbols
        from ase.formula import Formula

        if self.method == "least_squares":
            return (f"reference energies: per-element least squares over {self.structures} training structures "
                    f"({self.num_compositions} compositions)")
        n = len(self.energies)
        if self.composition is not None:
            formula = Formula.from_dict({chemical_symbols[z]: c for z, c in self.composition.items()})
            seen = f"all have the composition {formula.format('hill')}"
        else:
            seen = f"have {self.num_compositions} compositions"
        outcome = ("every element gets it" if self.rank <= 1 else
                   f"elements differ from it only as far as the compositions determine (rank {self.rank} of {n})")
        return (f"reference energies: the {self.structures} training structures {seen}, which cannot separate "
                f"the energies of {n} elements: using the mean energy per atom, {self.shared_mean:.4f} eV, instead; "
                f"{outcome}, and the model learns the deviations")

    def to_dict(self) -> dict:
        """The JSON form kept in the convert report."""
        from ase.data import chemical_symbols

        return {"method": self.method, "rank": self.rank, "elements": len(self.energies),
                "compositions": self.num_compositions, "structures": self.structures,
                "shared_mean_eV_per_atom": self.shared_mean,
                "energies_eV": {chemical_symbols[z]: e for z, e in sorted(self.energies.items())},
                "message": self.message()}


def fit_references(graphs: GraphArrays) -> ReferenceFit:
    """Per-element energies e_Z with E_total ~= sum_Z n_Z e_Z, fitted on `graphs` (the training split).

    Fitted on the training split only, so validation and test data never leak
    into what the model subtracts. When the compositions determine every e_Z
    (the composition matrix has full rank) this is plain least squares. When
    they do not (every ethanol frame is C2H6O) plain minimum-norm least squares
    still reproduces the totals but splits them between elements arbitrarily
    (H -616 eV for ethanol). Instead we start from the one energy per atom mu
    that best fits the totals and fit the minimum-norm deviations from it:
    each e_Z moves away from mu only along combinations the data determine, so
    one composition gives e_Z = mu for every Z, and a partly determined mixed
    set (an OC20 subset: rank 30 of 41 elements) keeps its fitted differences.
    """
    if len(graphs) == 0:
        return ReferenceFit({}, 0, 0, None, 0, 0.0)
    elements = sorted(int(z) for z in np.unique(graphs.atomic_numbers))
    counts = composition_matrix(graphs, elements)
    atoms = counts.sum(axis=1)
    shared = float(graphs.energy @ atoms / (atoms @ atoms))
    deviation, _, rank, _ = np.linalg.lstsq(counts, graphs.energy - shared * atoms, rcond=None)
    distinct = np.unique(counts, axis=0)
    only = {z: int(c) for z, c in zip(elements, distinct[0])} if len(distinct) == 1 else None
    return ReferenceFit({z: shared + float(d) for z, d in zip(elements, deviation)}, int(rank),
                        len(distinct), only, len(graphs), shared)


@dataclass(frozen=True)
class IsolatedAtoms:
    """Reference energies read from the single-atom structures of a file."""
    energies: dict[int, float]   # eV per atom of element Z
    path: str
    others: int                  # structures of the file with more than one atom (not used)
    method = "isolated_atoms"

    def message(self) -> str:
        from ase.data import chemical_symbols

        skipped = f"; its {self.others} structures of several atoms are not used" if self.others else ""
        names = " ".join(chemical_symbols[z] for z in sorted(self.energies))
        return f"reference energies: isolated-atom energies of {names} from {self.path}{skipped}"

    def to_dict(self) -> dict:
        from ase.data import chemical_symbols

        return {"method": self.method, "path": self.path, "elements": len(self.energies),
                "energies_eV": {chemical_symbols[z]: e for z, e in sorted(self.energies.items())},
                "message": self.message()}

    def covering(self, elements: list[int]) -> "IsolatedAtoms":
        """These references restricted to `elements`, every one of which needs its energy."""
        from ase.data import chemical_symbols

        missing = [chemical_symbols[z] for z in elements if z not in self.energies]
        if missing:
            found = " ".join(chemical_symbols[z] for z in sorted(self.energies))
            raise UserError(f"{self.path}: no isolated-atom energy for {' '.join(missing)} (it has {found}); "
                            "give one for every element of the data")
        return IsolatedAtoms({z: self.energies[z] for z in elements}, self.path, self.others)


def read_isolated_atoms(path: str | Path) -> IsolatedAtoms:
    """The energy of each element alone, from the one-atom structures of `path`.

    A file may hold other structures too (3BPA's training file starts with its
    isolated atoms): only the one-atom ones are read. An element given twice must
    be given the same energy.
    """
    from ase.data import chemical_symbols

    from trainer.data.structures import extract_labels, read_structures

    structures = read_structures(path)
    labels = extract_labels(structures, path)
    energies: dict[int, float] = {}
    for k, (atoms, energy) in enumerate(zip(structures, labels.energy)):
        if len(atoms) != 1:
            continue
        z = int(atoms.numbers[0])
        if energy is None or not np.isfinite(energy):
            raise UserError(f"{path}: structure {k} ({chemical_symbols[z]} alone) has no finite energy")
        if z in energies and abs(energies[z] - energy) > 1e-6:
            raise UserError(f"{path}: two different energies for an isolated {chemical_symbols[z]} "
                            f"({energies[z]} and {energy} eV)")
        energies[z] = float(energy)
    if not energies:
        raise UserError(f"{path}: no one-atom structure with an energy (--isolated-atoms needs the "
                        "energy of each element alone)")
    return IsolatedAtoms(energies, str(path), sum(len(a) != 1 for a in structures))


def fit_reference_energies(graphs: GraphArrays) -> dict[int, float]:
    """The per-element energies of `fit_references` (eV per atom of element Z)."""
    return fit_references(graphs).energies


def degree_histogram(graphs: GraphArrays) -> list[int]:
    """histogram[d] = number of atoms with in-degree d (edges targeting them), as PNA's `deg` expects."""
    if graphs.num_atoms.sum() == 0:
        return [0]
    edge_graph = np.repeat(np.arange(len(graphs)), graphs.num_edges)
    target = graphs.edge_index[:, 1] + graphs.atom_offsets[edge_graph]
    degree = np.bincount(target, minlength=int(graphs.num_atoms.sum()))
    return [int(count) for count in np.bincount(degree)]
