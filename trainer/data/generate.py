"""Labelled structures from a real (if simple) physics engine: ASE's EMT potential.

Scaling tests need more data than the small DFT sets in ../shared/data, and a
fresh clone of the project has none of them. Three families, each with
realistic forces (a few eV/Å):
  slabs      fcc(111)/(100) metal or alloy slabs with H/C/N/O adsorbates, periodic
             in x and y, vacuum in z, the bottom layers held by FixAtoms (OC20-like);
  bulk       random fcc alloys in strained periodic supercells (MPTrj-like);
  molecules  small organic molecules (H, C, N, O) in vacuum, frames along short
             molecular-dynamics runs (MD17-like).
For slabs and bulk a "system" is one such structure, rattled; its frames are the
first steps of a FIRE relaxation (every step is a labelled frame, as in OC20 and
MPTrj trajectories) and then rattled copies of where the relaxation stopped.
Each frame costs one EMT call, the dominant cost (~0.4 ms per atom here). For
molecules a system is one molecule, turned at random, and its frames are
snapshots of one velocity-Verlet run (see `molecule_frames` for why it starts
from EMT's own minimum).

Deterministic: system k draws everything from the generator seeded by
(seed, k), so the output depends on neither the number of workers nor timing.
"""
from __future__ import annotations

import itertools
import math
import multiprocessing
from dataclasses import dataclass
from functools import lru_cache, partial
from pathlib import Path
from typing import Literal

import numpy as np
from ase import Atoms
from ase import units
from ase.build import add_adsorbate, bulk, fcc100, fcc111, molecule
from ase.calculators.emt import EMT
from ase.calculators.singlepoint import SinglePointCalculator
from ase.constraints import FixAtoms
from ase.data import atomic_numbers, reference_states
from ase.md.verlet import VelocityVerlet
from ase.optimize import FIRE

from trainer.contract.errors import UserError

METALS = ("Al", "Cu", "Ag", "Au", "Ni", "Pd", "Pt")
ADSORBATES = {  # EMT carries (rough) parameters for H, C, N and O; bond lengths in Å
    "H": [("H", 0.0)], "O": [("O", 0.0)], "N": [("N", 0.0)], "C": [("C", 0.0)],
    "OH": [("O", 0.0), ("H", 0.97)], "CO": [("C", 0.0), ("O", 1.15)], "NO": [("N", 0.0), ("O", 1.15)],
}
# Names in ASE's g2 set made only of H, C, N and O: ethanol, its isomer, molecules with its
# functional groups and a few with N, so that a set is ethanol-like but not one molecule.
MOLECULES = ("CH3CH2OH", "CH3OCH3", "CH3OH", "CH3CHO", "CH3COOH", "CH3CONH2", "H3CNH2", "CH3CN",
             "C3H8", "C5H5N", "H2O", "NH3")
RELAX_FRAMES = 6      # frames along the relaxation of each system
RATTLED_FRAMES = 6    # rattled copies of the relaxed end point
MD_FRAMES = 12        # snapshots of each molecule's trajectory
MD_STRIDE = 4         # time steps between snapshots: 2 fs, so neighbouring frames are not near-copies
MD_TIMESTEP = 0.5     # fs, as in MD17: short enough for the C-H and O-H vibrations
MD_TEMPERATURES = (300.0, 1000.0)  # K of the starting momenta, drawn uniformly per system
FORCE_CEILING = 50.0  # eV/Å: a frame above this (a rare bad start) is discarded, never written
MIN_BULK_ATOMS = 8
MIN_SLAB_ATOMS = 16  # 2 x 2 x 3 layers and room for adsorbates
MIN_MOLECULE_ATOMS = 3  # water

Kind = Literal["slabs", "bulk", "molecules"]
KINDS = ("slabs", "bulk", "molecules")
FRAMES_PER_SYSTEM = {"slabs": RELAX_FRAMES + RATTLED_FRAMES, "bulk": RELAX_FRAMES + RATTLED_FRAMES,
                     "molecules": MD_FRAMES}
MIN_ATOMS = {"slabs": MIN_SLAB_ATOMS, "bulk": MIN_BULK_ATOMS, "molecules": MIN_MOLECULE_ATOMS}


@dataclass(frozen=True)
class GenerateOptions:
    kind: Kind
    count: int
    seed: int = 0
    max_atoms: int = 60
    workers: int = 2
    molecules: tuple[str, ...] = MOLECULES  # kind "molecules": the names drawn from (one: an MD17-like set)


def lattice_constant(symbols: list[str]) -> float:
    """Vegard's law over the fcc lattice constants of the metals present."""
    return float(np.mean([reference_states[atomic_numbers[s]]["a"] for s in symbols]))


def _alloy(rng: np.random.Generator, n_atoms: int) -> list[str]:
    species = list(rng.choice(METALS, size=int(rng.integers(1, 4)), replace=False))
    weights = rng.dirichlet(np.ones(len(species)))
    return list(rng.choice(species, size=n_atoms, p=weights))


def build_bulk(rng: np.random.Generator, max_atoms: int) -> Atoms:
    """A random fcc alloy supercell, cubic or primitive (triclinic), under a small random strain."""
    cubic = bool(rng.integers(2))
    per_cell = 4 if cubic else 1
    shapes = [r for r in itertools.product(range(1, 5), repeat=3)
              if MIN_BULK_ATOMS <= per_cell * math.prod(r) <= max_atoms]
    repeat = shapes[int(rng.integers(len(shapes)))]
    atoms = bulk("Cu", "fcc", a=1.0, cubic=cubic).repeat(repeat)
    atoms.set_chemical_symbols(_alloy(rng, len(atoms)))
    strain = np.eye(3) + rng.uniform(-0.02, 0.02, (3, 3))
    cell = atoms.cell.array * lattice_constant(atoms.get_chemical_symbols()) @ (0.5 * (strain + strain.T))
    atoms.set_cell(cell, scale_atoms=True)
    return atoms


def build_slab(rng: np.random.Generator, max_atoms: int) -> Atoms:
    """A metal or alloy fcc(111)/(100) slab, 1-2 adsorbates on the top, bottom half of the layers fixed."""
    facet = fcc111 if rng.integers(2) else fcc100
    shapes = [(nx, ny, layers) for nx in (2, 3, 4) for ny in (2, 3, 4) for layers in (3, 4)
              if nx * ny * layers + 4 <= max_atoms]  # + up to two 2-atom adsorbates
    nx, ny, layers = shapes[int(rng.integers(len(shapes)))]
    probe = facet("Cu", (nx, ny, layers), a=1.0)
    symbols = _alloy(rng, len(probe))
    slab = facet("Cu", (nx, ny, layers), a=lattice_constant(symbols), vacuum=6.0)
    slab.set_chemical_symbols(symbols)
    fixed = slab.get_tags() > layers - layers // 2  # tags count layers from the top
    sites = list(slab.info["adsorbate_info"]["sites"])
    offsets = rng.permutation(nx * ny)[: int(rng.integers(1, 3))]
    for offset in offsets:
        name = list(ADSORBATES)[int(rng.integers(len(ADSORBATES)))]
        molecule = Atoms([s for s, _ in ADSORBATES[name]], positions=[(0, 0, z) for _, z in ADSORBATES[name]])
        add_adsorbate(slab, molecule, height=float(rng.uniform(1.4, 2.0)),
                      position=sites[int(rng.integers(len(sites)))], offset=(offset // ny, offset % ny))
    slab.set_constraint(FixAtoms(mask=np.concatenate([fixed, np.zeros(len(slab) - len(fixed), bool)])))
    del slab.info["adsorbate_info"]
    return slab


@lru_cache(maxsize=None)
def _relaxed_molecule(name: str) -> Atoms:
    """The g2 molecule relaxed by EMT (deterministic, so cached once per process)."""
    atoms = molecule(name)
    atoms.calc = EMT()
    FIRE(atoms, logfile=None).run(fmax=0.05, steps=500)
    return Atoms(atoms.numbers, atoms.positions)


def _random_rotation(rng: np.random.Generator) -> np.ndarray:
    """A rotation matrix uniform over SO(3) (QR of a Gaussian matrix, signs fixed)."""
    q, r = np.linalg.qr(rng.normal(size=(3, 3)))
    q = q * np.sign(np.diag(r))
    return q if np.linalg.det(q) > 0 else -q


def molecule_frames(rng: np.random.Generator, index: int, max_atoms: int,
                    names: tuple[str, ...] = MOLECULES) -> list[Atoms]:
    """Snapshots of a short NVE velocity-Verlet run of one molecule, started at EMT's minimum.

    EMT has no directional bonds and only rough H/C/N/O parameters: its minimum
    of a molecule is a more compact version of the real (g2) geometry (C-C ~1.1 Å,
    C-H 1.2-1.5 Å), ~2.6 eV below it for ethanol. Started at the g2 geometry, a
    run would turn that energy into over 1000 K of heat and fall into the minimum
    instead of vibrating about it; started at the minimum with Maxwell-Boltzmann
    momenta at T, it samples thermal displacements at about T/2 (equipartition
    moves half the kinetic energy into the potential). So the frames are EMT's
    chemistry, not the real molecules': data for pipelines, not for accuracy claims.
    """
    names = [n for n in names if len(molecule(n)) <= max_atoms]
    name = names[int(rng.integers(len(names)))]
    atoms = _relaxed_molecule(name).copy()
    atoms.positions = (atoms.positions - atoms.positions.mean(axis=0)) @ _random_rotation(rng).T
    temperature = float(rng.uniform(*MD_TEMPERATURES))
    masses = atoms.get_masses()[:, None]
    momenta = rng.normal(size=atoms.positions.shape) * np.sqrt(masses * units.kB * temperature)
    atoms.set_momenta(momenta - masses * momenta.sum(axis=0) / masses.sum())  # no drift of the whole molecule
    atoms.calc = EMT()
    dynamics = VelocityVerlet(atoms, timestep=MD_TIMESTEP * units.fs, logfile=None)
    frames = []
    for frame in range(MD_FRAMES):
        dynamics.run(MD_STRIDE)
        frames.append(_frame(atoms, "molecules", index, frame))
        frames[-1].info["molecule"] = name
    return frames


def _frame(atoms: Atoms, kind: str, system: int, frame: int) -> Atoms:
    """A clean copy carrying the EMT labels (raw forces: FixAtoms does not change the physics)."""
    energy = atoms.get_potential_energy()
    forces = atoms.get_forces(apply_constraint=False)
    copy = Atoms(atoms.numbers, atoms.positions, cell=atoms.cell, pbc=atoms.pbc, constraint=atoms.constraints,
                 info={"kind": kind, "system": system, "frame": frame})
    results = {"energy": energy, "forces": forces}
    if atoms.pbc.all():
        results["stress"] = atoms.get_stress()
    copy.calc = SinglePointCalculator(copy, **results)
    return copy


def system_frames(index: int, kind: Kind, seed: int, max_atoms: int,
                  molecules: tuple[str, ...] = MOLECULES) -> list[Atoms]:
    """All frames of system `index` (fewer than the nominal number if some exceed FORCE_CEILING)."""
    rng = np.random.default_rng([seed, index])
    if kind == "molecules":
        frames = molecule_frames(rng, index, max_atoms, molecules)
        return [f for f in frames if _max_force(f) <= FORCE_CEILING]
    atoms = (build_slab if kind == "slabs" else build_bulk)(rng, max_atoms)
    atoms.rattle(stdev=float(rng.uniform(0.05, 0.15)), seed=int(rng.integers(2**31)))
    atoms.calc = EMT()
    frames = []
    optimiser = FIRE(atoms, logfile=None)
    for step, _ in enumerate(optimiser.irun(fmax=0.05, steps=RELAX_FRAMES - 1)):
        frames.append(_frame(atoms, kind, index, step))
    relaxed = atoms.positions.copy()
    movable = np.ones((len(atoms), 1))
    for constraint in atoms.constraints:
        movable[constraint.get_indices()] = 0.0  # fixed atoms stay put, as in a constrained relaxation
    while len(frames) < RELAX_FRAMES + RATTLED_FRAMES:
        noise = rng.normal(0.0, rng.uniform(0.02, 0.12), relaxed.shape)
        atoms.positions = relaxed + movable * noise
        frames.append(_frame(atoms, kind, index, len(frames)))
    return [f for f in frames if _max_force(f) <= FORCE_CEILING]


def _max_force(frame: Atoms) -> float:
    return float(np.linalg.norm(frame.calc.results["forces"], axis=1).max())


def check_options(options: GenerateOptions) -> None:
    """Reject requests that cannot be met before any work is done."""
    if options.count < 1:
        raise UserError(f"--count {options.count}: must be at least 1")
    if options.workers < 1:
        raise UserError(f"--workers {options.workers}: must be at least 1")
    if options.kind not in KINDS:
        raise UserError(f"--kind {options.kind}: must be one of {', '.join(KINDS)}")
    smallest = MIN_ATOMS[options.kind]
    if options.max_atoms < smallest:
        raise UserError(f"--max-atoms {options.max_atoms}: {options.kind} need at least {smallest}")
    if options.kind != "molecules":
        if options.molecules != MOLECULES:
            raise UserError(f"--molecule applies to --kind molecules, not {options.kind}")
        return
    unknown = [name for name in options.molecules if name not in MOLECULES]
    if unknown or not options.molecules:
        raise UserError(f"--molecule {' '.join(unknown) or '(none)'}: choose from {', '.join(MOLECULES)}")
    if all(len(molecule(name)) > options.max_atoms for name in options.molecules):
        raise UserError(f"--max-atoms {options.max_atoms}: smaller than every molecule asked for")


def generate(options: GenerateOptions) -> list[Atoms]:
    """Exactly `options.count` frames, system after system, identical for any number of workers."""
    check_options(options)
    worker = partial(system_frames, kind=options.kind, seed=options.seed, max_atoms=options.max_atoms,
                     molecules=tuple(options.molecules))
    per_system = FRAMES_PER_SYSTEM[options.kind]
    pool = multiprocessing.get_context("spawn").Pool(options.workers) if options.workers > 1 else None
    frames: list[Atoms] = []
    start = 0
    try:
        while len(frames) < options.count:
            # Enough systems for the rest of the request (plus a little for discarded frames).
            wanted = math.ceil(1.05 * (options.count - len(frames)) / per_system) + 1
            wave = range(start, start + max(wanted, options.workers))
            for batch in (pool.imap(worker, wave, chunksize=2) if pool else map(worker, wave)):
                frames.extend(batch)
                if len(frames) >= options.count:
                    break
            start = wave.stop
    finally:
        if pool is not None:
            pool.terminate()
    return frames[: options.count]


def write_frames(path: str | Path, frames: list[Atoms], overwrite: bool = False) -> None:
    """extxyz with the labels in the calculator results, written atomically."""
    from trainer import aseio

    from trainer.contract.atomicio import atomic_output

    with atomic_output(path, overwrite=overwrite) as tmp:
        aseio.write(tmp, frames, format="extxyz")
