"""Files written by `gfm-ensemble predict`, chosen by the output's suffix; each written atomically.

  .extxyz/.xyz  the input structures with, per structure (atoms.info):
                energy_mean, energy_std, energy_std_raw (eV), energy_unit, forces_unit, ensemble;
                per atom (atoms.arrays): forces_mean, forces_std, forces_std_raw (eV/Å, per component);
                with --members: info member_energies [K] and arrays member_forces [n, 3K]
                (member k in columns 3k..3k+2, members in manifest order, info member_names).
                Reference labels of the input (its calculator) are not carried over.
  .csv          one row per structure; the unit is in every column name.
  .json         everything, per structure, with the units stated once.
The "std" columns are calibrated (the manifest's maps); "std_raw" are the members' spread.
"""
from __future__ import annotations

import csv
import io
import json
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Sequence

import numpy as np
from ase import Atoms

from trainer.contract import typed
from trainer.contract.atomicio import atomic_output, atomic_write_text
from trainer.contract.errors import UserError
from trainer.contract.text import table

if TYPE_CHECKING:
    from trainer.ensemble.predict import Prediction

ENERGY_UNIT, FORCES_UNIT = "eV", "eV/Angstrom"
_COMPRESSED = (".xz", ".gz", ".bz2", ".lzma")
Writer = Callable[[Path, Sequence[Atoms], "Prediction", str], None]


def default_output(structures: Path) -> Path:
    """STRUCTURES' directory / <name without format and compression suffixes>.pred.extxyz."""
    name = structures.name
    for suffix in _COMPRESSED:
        name = name.removesuffix(suffix)
    stem = name.rsplit(".", 1)[0] if "." in name else name
    return structures.with_name(f"{stem}.pred.extxyz")


def writer_for(output: Path) -> Writer:
    writers = {".extxyz": write_extxyz, ".xyz": write_extxyz, ".csv": write_csv, ".json": write_json}
    writer = writers.get(output.suffix.lower())
    if writer is None:
        raise UserError(f"-o {output}: unknown output format (use a .extxyz, .xyz, .csv or .json name)")
    if not output.parent.is_dir():
        raise UserError(f"-o {output}: directory {output.parent} does not exist")
    return writer


def write_extxyz(path: Path, structures: Sequence[Atoms], pred: "Prediction", ensemble: str) -> None:
    from trainer import aseio

    frames = []
    for index, source in enumerate(structures):
        atoms = source.copy()   # a copy has no calculator: the input's reference labels are not mixed in
        rows = pred.atoms_of(index)
        atoms.info.update(energy_mean=float(pred.energy_mean[index]), energy_std=float(pred.energy_std[index]),
                          energy_std_raw=float(pred.energy_std_raw[index]), energy_unit=ENERGY_UNIT,
                          forces_unit=FORCES_UNIT, ensemble=ensemble)
        atoms.arrays["forces_mean"] = pred.forces_mean[rows]
        atoms.arrays["forces_std"] = pred.forces_std[rows]
        atoms.arrays["forces_std_raw"] = pred.forces_std_raw[rows]
        if pred.member_energy is not None:
            atoms.info["member_energies"] = pred.member_energy[:, index].copy()
            atoms.info["member_names"] = " ".join(pred.member_names)
            atoms.arrays["member_forces"] = pred.member_forces[:, rows].transpose(1, 0, 2).reshape(len(atoms), -1)
        frames.append(atoms)
    with atomic_output(path) as tmp:
        aseio.write(str(tmp), frames, format="extxyz")


def summary_rows(structures: Sequence[Atoms], pred: "Prediction") -> tuple[list[str], list[list]]:
    """(header, rows): one row per structure, the unit in each column name."""
    header = ["index", "formula", "num_atoms", "energy_mean_eV", "energy_std_eV", "energy_std_raw_eV",
              "energy_mean_per_atom_eV", "max_atom_force_std_eV_per_A", "mean_atom_force_std_eV_per_A"]
    if pred.member_energy is not None:
        header += [f"energy_{name}_eV" for name in pred.member_names]
    atom_std = np.linalg.norm(pred.forces_std, axis=1)   # |std vector| per atom
    rows = []
    for index, atoms in enumerate(structures):
        per_atom = atom_std[pred.atoms_of(index)]
        row = [index, atoms.get_chemical_formula(), len(atoms), pred.energy_mean[index], pred.energy_std[index],
               pred.energy_std_raw[index], pred.energy_mean[index] / len(atoms), per_atom.max(), per_atom.mean()]
        if pred.member_energy is not None:
            row += list(pred.member_energy[:, index])
        rows.append([float(v) if isinstance(v, np.floating) else v for v in row])
    return header, rows


def write_csv(path: Path, structures: Sequence[Atoms], pred: "Prediction", ensemble: str) -> None:
    header, rows = summary_rows(structures, pred)
    text = io.StringIO()
    table = csv.writer(text)
    table.writerow(header)
    table.writerows([[repr(v) if isinstance(v, float) else v for v in row] for row in rows])
    atomic_write_text(path, text.getvalue())


def write_json(path: Path, structures: Sequence[Atoms], pred: "Prediction", ensemble: str) -> None:
    records = []
    for index, atoms in enumerate(structures):
        rows = pred.atoms_of(index)
        record = {"index": index, "formula": atoms.get_chemical_formula(), "num_atoms": len(atoms),
                  "energy_mean": float(pred.energy_mean[index]), "energy_std": float(pred.energy_std[index]),
                  "energy_std_raw": float(pred.energy_std_raw[index]),
                  "forces_mean": pred.forces_mean[rows].tolist(), "forces_std": pred.forces_std[rows].tolist(),
                  "forces_std_raw": pred.forces_std_raw[rows].tolist()}
        if pred.member_energy is not None:
            record["member_energies"] = pred.member_energy[:, index].tolist()
            record["member_forces"] = pred.member_forces[:, rows].tolist()
        records.append(record)
    document = {"units": {"energy": ENERGY_UNIT, "forces": FORCES_UNIT}, "ensemble": ensemble,
                "members": pred.member_names,
                "calibration": {"energy": typed.to_dict(pred.energy_calibration),
                                "forces": typed.to_dict(pred.forces_calibration)},
                "structures": records}
    atomic_write_text(path, json.dumps(document) + "\n")


def metrics_table(metrics: dict) -> str:
    """The headline numbers of `evaluate`, for a terminal: two aligned tables, accuracy then uncertainty."""
    acc, unc, data = metrics["accuracy"], metrics["uncertainty"], metrics["data"]
    lines = [f"{data['structures']} structures, {data['atoms']} atoms "
             f"({data['file']}{', ' + data['split'] if data['split'] else ''})"]
    rows = [[label, f"{row['energy_mae_meV_per_atom']:.2f}", f"{row['energy_rmse_meV_per_atom']:.2f}",
             f"{row['forces_mae_eV_per_A']:.4f}", f"{row['forces_rmse_eV_per_A']:.4f}"]
            for label, row in (("ensemble mean", acc["ensemble_mean"]),
                               (f"best member ({acc['best_member']['name']})", acc["best_member"]))]
    lines += table(["", "E MAE meV/atom", "E RMSE meV/atom", "F MAE eV/Å", "F RMSE eV/Å"], rows, "lrrrr")
    rows = [[f"{quantity} {kind}", f"{u['spearman_std_vs_abs_error']:.3f}", f"{100 * u['coverage_1sigma']:.1f}%",
             f"{100 * u['coverage_2sigma']:.1f}%", f"{u['miscalibration_area']:.3f}"]
            for kind in ("raw", "calibrated") for quantity in ("energy", "forces")
            for u in (unc[kind][quantity],)]
    lines += [""] + table(["uncertainty", "spearman", "±1σ", "±2σ", "miscal. area"], rows, "lrrrr")
    return "\n".join(lines)
