"""The embedded default (`scripts/demo.sh`): a complete small campaign on this machine.

Real data when it is there (ethanol DFT frames from ../shared/data), otherwise
ethanol frames generated with ASE's EMT calculator (molecular dynamics), so a fresh clone works anywhere:
  data -> HPO (local site, 2 slices, 2-epoch fidelity) -> top-3 ensemble ->
  predict held-out structures (mean ± std) -> evaluate uncertainty -> report PNGs.
Every step is the real console command, printed before it runs, so the
output shows what to type on a supercomputer.
"""
from __future__ import annotations

import argparse
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Sequence

from trainer.contract import locations
from trainer.contract.errors import UserError, run_cli

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared" / "data" / "molecules"
BIN = Path(sys.executable).parent


def step(title: str, *command: str | Path) -> None:
    argv = [str(c) for c in command]
    shown = shlex.join([Path(argv[0]).name, *argv[1:]])
    print(f"\n== {title}\n$ {shown}", flush=True)
    started = time.time()
    if subprocess.run([str(BIN / argv[0]) if "/" not in argv[0] else argv[0], *argv[1:]]).returncode != 0:
        raise UserError(f"the step '{title}' failed (command: {shown})")
    print(f"   ({time.time() - started:.0f} s)", flush=True)


def prepare_data(data_dir: Path, train_frames: int, held_out: int) -> tuple[Path, Path, str]:
    """(training structures, held-out structures, description); real ethanol, else EMT ethanol."""
    data_dir.mkdir(parents=True, exist_ok=True)
    train, test = data_dir / "train.extxyz", data_dir / "held_out.extxyz"
    if (SHARED / "ethanol_train.xyz.xz").exists():
        from trainer import aseio
        from trainer.data.structures import read_structures

        aseio.write(train, read_structures(SHARED / "ethanol_train.xyz.xz")[:train_frames])
        aseio.write(test, read_structures(SHARED / "ethanol_test.xyz.xz")[:held_out])
        return train, test, f"ethanol DFT frames from {SHARED} ({train_frames} + {held_out} held out)"
    # The same molecule along EMT molecular dynamics; the held-out frames come from runs of their own seed.
    for path, count, seed in ((train, train_frames, 0), (test, held_out, 1)):
        step(f"generate EMT ethanol frames, seed {seed} (no ../shared/data here)", "gfm-data", "generate",
             "--kind", "molecules", "--molecule", "CH3CH2OH", "--count", str(count), "--seed", str(seed),
             "--output", path)
    return train, test, f"EMT ethanol frames generated here ({train_frames} + {held_out} held out)"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="demo", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, help="campaign directory (default: demo/campaign-<time>)")
    # 12 trials on 2 slices with the demo space's 4 random initial points: 5 random, 7 from the surrogate.
    parser.add_argument("--trials", type=int, default=12, help="HPO trials [12]")
    parser.add_argument("--members", type=int, default=3, help="ensemble members [3]")
    args = parser.parse_args(argv)
    out = (args.out or locations.new_demo_campaign()).resolve()
    if out.exists() and any(out.iterdir()):
        raise UserError(f"{out}: already exists and is not empty; choose another --out")
    started = time.time()
    train, held_out, description = prepare_data(out / "data", 600, 200)
    print(f"data: {description}")
    dataset = out / "data" / "train.bp"
    run = out / locations.DEMO_RUN
    step("convert to an ADIOS2 dataset (clean, split 80/10/10, neighbour lists)", "gfm-data", "convert",
         "--name", "demo", "--output", dataset, train)
    step("asynchronous Bayesian HPO on 2 local slices, 2-epoch fidelity (DeepHyper CBO: random configurations "
         "until 4 trials have completed, then its surrogate's proposals)", "gfm-hpo", "launch",
         "--site", "local", "--nodes", "2", "--max-evals", str(args.trials), "--epochs", "2",
         "--space", "demo", "--data", dataset, "--run-dir", run, "--set", "training.batch_size=16")
    step("where the search stands", "gfm-hpo", "status", run)
    step(f"train the top {args.members} configurations to convergence: the deep ensemble", "gfm-ensemble",
         "train", run, "--top-k", str(args.members), "--max-epochs", "20", "--patience", "5",
         "--min-steps", "0")  # explicit small budgets: the demo stays within a couple of minutes
    predictions = out / "predictions.extxyz"
    step("predict held-out structures: energy and forces as mean ± std", "gfm-ensemble", "predict", held_out,
         "-e", run / "ensemble", "-o", predictions)
    step("how good are the predictions and their uncertainty", "gfm-ensemble", "evaluate", run / "ensemble",
         held_out, "-o", out / "evaluation")
    step("figures of the search", "gfm-hpo", "report", run, "-o", out / "report")
    print(f"\ncampaign done in {(time.time() - started) / 60:.1f} min; artefacts in {out}:")
    for label, path in [("trial database (open with orchestrator.trialdb.load_trials)", run / "trials.db"),
                        ("ensemble (manifest + members)", run / "ensemble"),
                        ("predictions (energy_mean/std, forces_mean/std)", predictions),
                        ("uncertainty evaluation (metrics.json, PNGs)", out / "evaluation"),
                        ("search figures (PNGs)", out / "report"),
                        ("notebook to inspect the trials", REPO / "notebooks" / "inspect_trials.ipynb")]:
        print(f"  {label}: {path}")
    print("\n" + how_to_run_commands(run))
    return 0


def how_to_run_commands(run: Path) -> str:
    """The demo's last words: how to type the gfm-* commands yourself. scripts/demo.sh installs them
    into .venv/bin, which a fresh shell does not have on its PATH, and nothing else would say so."""
    from trainer.ensemble.cli import find_ensemble

    def shown(path: Path) -> str:  # relative to the repository (where scripts/demo.sh runs) when inside it
        return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)

    try:
        found = find_ensemble(REPO).resolve() == (run / locations.ENSEMBLE_DIR).resolve()
    except UserError:
        found = False
    info = "gfm-ensemble info" + ("" if found else f" {shown(run / locations.ENSEMBLE_DIR)}")
    commands = [f"gfm-hpo status {shown(run)}", info]
    on_path = shutil.which("gfm-hpo")
    if on_path and Path(on_path).resolve() == (BIN / "gfm-hpo").resolve():
        return "\n".join(["Next, for example:", *(f"  {c}" for c in commands)])
    venv = shown(BIN.parent)
    return "\n".join([
        f"The gfm-* commands are in {shown(BIN)}, which is not on your PATH. From {REPO}, either activate it:",
        f"  source {venv}/bin/activate", *(f"  {c}" for c in commands),
        "or call them by path:", *(f"  {shown(BIN)}/{c}" for c in commands)])


if __name__ == "__main__":
    run_cli(main, "demo")
