"""ENSEMBLE_DIR: the members' weights and the manifest that says what they are.

    ENSEMBLE_DIR/manifest.json       what the ensemble is (this module's schema)
    ENSEMBLE_DIR/members/<name>.pt   each member's best.pt, copied byte for byte

The manifest is the only thing prediction trusts: it names every member file
with its SHA-256, so a file changed after the ensemble was built (a byte
flipped on disk, a checkpoint of another run dropped in its place) is refused
by name instead of being evaluated. Checkpoints are read with
`torch.load(weights_only=True)`: a file that is a pickle of arbitrary objects
is never executed.

Cut-off radius, neighbour cap and the elements known to the members are taken
from the members' own data statistics when the manifest is written, and must
agree between members: a prediction builds its graphs once for all of them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer.contract import typed
from trainer.contract.atomicio import atomic_write_bytes, atomic_write_json
from trainer.contract.errors import UserError, load_refusal
from trainer.contract.typed import Invalid
from trainer.ensemble.calibration import Calibration, StdMap, upgrade_v1
from trainer.ensemble.membercheck import check_member

FORMAT_VERSION = 2   # 2: a calibration map per quantity (calibration.py), members' seed and data
READABLE_VERSIONS = (1, 2)
MANIFEST_FILE = "manifest.json"
MEMBERS_DIR = "members"
UNITS = {"energy": "eV", "forces": "eV/Angstrom", "positions": "Angstrom"}
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


class EnsembleError(UserError):
    """A missing, malformed or tampered ensemble directory."""


@dataclass(frozen=True)
class TrainedMember:
    """One trained configuration that becomes a member: its best.pt and where it came from."""
    name: str
    best_checkpoint_path: str | Path
    params: dict[str, Any]
    trial_id: int | None = None        # the member's own training run (a trial of the ensemble phase)
    hpo_trial_id: int | None = None    # the HPO trial whose configuration it retrains


@dataclass(frozen=True)
class MemberEntry:
    name: str
    checkpoint: str                 # path relative to ENSEMBLE_DIR
    sha256: str
    params: dict[str, Any]          # the hyperparameters of the configuration
    trial_id: int | None            # "member trial": its own training run, a trial of the ensemble phase
    val_loss: float | None          # best validation loss (the epoch whose weights these are)
    epochs: int | None              # epoch at which these weights were saved
    hpo_trial_id: int | None = None  # "HPO trial": the search trial whose configuration it retrains
    seed: int | None = None         # training seed (initialisation, shuffling, resample); None: not recorded
    data: dict[str, Any] | None = None  # bootstrap (bool), train_samples, distinct_train_samples

    def check(self) -> None:
        if not _NAME.match(self.name):
            raise Invalid("name", f"{self.name!r} is not a plain file name")
        path = Path(self.checkpoint)
        if path.is_absolute() or ".." in path.parts:
            raise Invalid("checkpoint", f"{self.checkpoint!r} must be a path inside the ensemble directory")
        if not re.fullmatch(r"[0-9a-f]{64}", self.sha256):
            raise Invalid("sha256", "expected 64 lowercase hexadecimal digits")


@dataclass
class Manifest:
    radius: float
    max_neighbours: int | None
    elements: list[int]              # atomic numbers seen in training (all sources)
    source_elements: list[list[int]]  # per training source: the elements its reference table covers
    members: list[MemberEntry]
    calibration: Calibration = field(default_factory=Calibration)
    run_dir: str | None = None
    created_at: str = ""
    units: dict[str, str] = field(default_factory=lambda: dict(UNITS))
    format_version: int = FORMAT_VERSION
    # Filled by load_manifest (never written): the ensemble directory and each member's verified checkpoint.
    directory: Path | None = field(default=None, init=False, repr=False, compare=False)
    checkpoints: list[dict[str, Any]] = field(default_factory=list, init=False, repr=False, compare=False)

    def check(self) -> None:
        if self.format_version not in READABLE_VERSIONS:
            raise Invalid("format_version", f"{self.format_version}; this program reads "
                          f"{', '.join(map(str, READABLE_VERSIONS))}")
        if not self.members:
            raise Invalid("members", "an ensemble needs at least one member")
        names = [m.name for m in self.members]
        if len(set(names)) != len(names):
            raise Invalid("members", f"member names repeat: {', '.join(sorted(names))}")
        offsets = self.calibration.energy_offsets
        if offsets is not None and len(offsets) != len(self.members):
            raise Invalid("calibration", f"{len(offsets)} energy offsets for {len(self.members)} members")

    def to_json(self) -> dict[str, Any]:
        return {f.name: typed.to_dict(getattr(self, f.name)) for f in dataclasses.fields(self) if f.init}

    def path_of(self, member: MemberEntry) -> Path:
        return Path(self.directory or ".") / member.checkpoint

    @property
    def best_member(self) -> int:
        """Index of the member with the lowest validation loss (the best single model)."""
        losses = [(m.val_loss if m.val_loss is not None else float("inf"), k) for k, m in enumerate(self.members)]
        return min(losses)[1]


def write_manifest(ensemble_dir: str | Path, members: list[TrainedMember], run_dir: str | None,
                   max_neighbours: int | None) -> Manifest:
    """Copy each member's best.pt into ENSEMBLE_DIR/members, hash it, and write manifest.json.

    The manifest is written last and atomically: if anything fails before, an
    earlier manifest stays in place and still refuses any member file it does
    not recognise by hash.
    """
    ensemble_dir = Path(ensemble_dir)
    if not members:
        raise EnsembleError(f"{ensemble_dir}: no members to write")
    entries, stats, contents = [], [], []
    for source in members:
        if not _NAME.match(source.name):
            raise EnsembleError(f"member name {source.name!r}: use letters, digits, '_', '.', '-'")
        data = _read_bytes(Path(source.best_checkpoint_path))
        contents.append(data)
        state = parse_checkpoint(data, Path(source.best_checkpoint_path))
        stats.append((Path(source.best_checkpoint_path), state["stats"]))
        relative = f"{MEMBERS_DIR}/{source.name}.pt"
        entries.append(MemberEntry(
            name=source.name, checkpoint=relative, sha256=hashlib.sha256(data).hexdigest(),
            params=dict(source.params), trial_id=source.trial_id, hpo_trial_id=source.hpo_trial_id,
            val_loss=_float_or_none(state.get("val_loss")), epochs=_int_or_none(state.get("epoch")),
            **trained_on(state)))
    radius, elements, source_elements = _agreed_data(stats)
    manifest = Manifest(radius=radius, max_neighbours=max_neighbours, elements=elements,
                        source_elements=source_elements, members=entries,
                        run_dir=None if run_dir is None else str(run_dir),
                        created_at=time.strftime("%Y-%m-%dT%H:%M:%S%z"))
    manifest = typed.build(Manifest, manifest.to_json(), origin=str(ensemble_dir / MANIFEST_FILE))
    (ensemble_dir / MEMBERS_DIR).mkdir(parents=True, exist_ok=True)
    for entry, data in zip(entries, contents):
        # The bytes written are the bytes hashed and checked above, whatever happens to the source.
        atomic_write_bytes(ensemble_dir / entry.checkpoint, data)
    atomic_write_json(ensemble_dir / MANIFEST_FILE, manifest.to_json())
    manifest.directory = ensemble_dir
    return manifest


def read_manifest(ensemble_dir: str | Path) -> Manifest:
    """manifest.json, validated; member files are not opened (see load_manifest)."""
    ensemble_dir = Path(ensemble_dir)
    path = ensemble_dir / MANIFEST_FILE
    if not ensemble_dir.is_dir():
        raise EnsembleError(f"{ensemble_dir}: no such ensemble directory")
    if not path.is_file():
        raise EnsembleError(f"{path}: no manifest (not an ensemble directory written by gfm-ensemble train)")
    try:
        data = json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise EnsembleError(f"{path}: not a readable manifest ({type(err).__name__}: {err})") from None
    if isinstance(data, dict) and data.get("format_version") == 1:
        # Format 1 stored one factor per quantity: read it as scalar maps, and write format 2 from now on.
        data = {**data, "format_version": FORMAT_VERSION, "calibration": upgrade_v1(data.get("calibration"))}
    manifest = typed.build(Manifest, data, origin=str(path))
    manifest.directory = ensemble_dir
    return manifest


def load_manifest(ensemble_dir: str | Path) -> Manifest:
    """The manifest with every member checkpoint verified (SHA-256) and loaded (weights only)."""
    manifest = read_manifest(ensemble_dir)
    for member in manifest.members:
        path = manifest.path_of(member)
        data = _read_bytes(path)
        if hashlib.sha256(data).hexdigest() != member.sha256:
            raise EnsembleError(f"{path}: SHA-256 does not match the manifest (the file was changed or "
                                "replaced after the ensemble was written); refusing to use it")
        state = parse_checkpoint(data, path)
        stats = state["stats"]
        if float(stats["radius"]) != manifest.radius or sorted(stats["elements"]) != manifest.elements:
            raise EnsembleError(f"{path}: its radius/elements disagree with {MANIFEST_FILE}")
        check_member(member, state, path, str(manifest.directory / MANIFEST_FILE), EnsembleError)
        manifest.checkpoints.append(state)
    return manifest


def set_calibration(ensemble_dir: str | Path, energy: StdMap | float, forces: StdMap | float,
                    fitted_on: dict[str, Any] | None = None, energy_offsets: list[float] | None = None) -> Manifest:
    """Store the calibration maps (a number: the scalar map std -> number * std) in the manifest, atomically."""
    manifest = read_manifest(ensemble_dir)
    maps = [typed.to_dict(m) if isinstance(m, StdMap) else upgrade_v1({"energy": m})["energy"]
            for m in (energy, forces)]
    manifest.calibration = typed.build(Calibration, {"energy": maps[0], "forces": maps[1], "fitted_on": fitted_on,
                                                     "energy_offsets": energy_offsets}, origin="calibration")
    manifest.check()
    atomic_write_json(Path(ensemble_dir) / MANIFEST_FILE, manifest.to_json())
    return manifest


def trained_on(state: dict[str, Any]) -> dict[str, Any]:
    """A best.pt's record of its training seed and data, as MemberEntry fields (none in older best.pt)."""
    training = state.get("training")
    if not isinstance(training, dict):
        return {"seed": None, "data": None}
    data = {key: training[key] for key in ("bootstrap", "train_samples", "distinct_train_samples")
            if key in training}
    return {"seed": _int_or_none(training.get("seed")), "data": data or None}


def parse_checkpoint(data: bytes, path: Path) -> dict[str, Any]:
    """A best.pt's contents (weights only), checked to hold what a member needs."""
    import torch

    try:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as err:  # arbitrary bytes make the unpickler fail in arbitrary ways (KeyError, ...)
        raise EnsembleError(f"{path}: not a model checkpoint readable with weights_only "
                            f"({load_refusal(err)})") from None
    if not isinstance(state, dict) or not {"model", "model_config", "stats"} <= set(state):
        raise EnsembleError(f"{path}: not a best.pt of gfm-train (needs model, model_config and stats)")
    return state


def _agreed_data(stats: list[tuple[Path, dict]]) -> tuple[float, list[int], list[list[int]]]:
    """(radius, elements, elements per source), which every member must share."""
    def key(s: dict) -> tuple:
        return (float(s["radius"]), sorted(int(z) for z in s["elements"]),
                [sorted(int(z) for z in table) for table in s["reference_energies"]])

    first_path, first = stats[0]
    for path, other in stats[1:]:
        if key(other) != key(first):
            (r0, e0, s0), (r1, e1, s1) = key(first), key(other)
            raise EnsembleError(
                f"{path}: trained on different data than {first_path} (radius {r1} vs {r0} Å, elements "
                f"{e1} vs {e0}, per-source elements {s1} vs {s0}); ensemble members must share their data")
    return key(first)


def _read_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise EnsembleError(f"{path}: no such member checkpoint") from None
    except OSError as err:
        raise EnsembleError(f"{path}: cannot read ({err.strerror or err})") from None


def _float_or_none(value: Any) -> float | None:
    return None if value is None else float(value)


def _int_or_none(value: Any) -> int | None:
    return None if value is None else int(value)
