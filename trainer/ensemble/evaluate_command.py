"""`gfm-ensemble evaluate` and the text that `evaluate` and `calibrate` print.

    gfm-ensemble evaluate ENSEMBLE_DIR|TRIAL_DIR LABELLED [--against SHIFTED] [-o OUTDIR] [--split testset]

ENSEMBLE_DIR: metrics of the mean and the best member, uncertainty raw and
calibrated. TRIAL_DIR (a trained trial with best.pt): the one model's errors,
no uncertainty, and it says so. --against SHIFTED: the same on a second
labelled set, written to OUTDIR/against, and the distribution-shift check
(mean std and errors on SHIFTED over those on LABELLED) in OUTDIR/metrics.json
under "shift". Imports torch only inside `run`.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from trainer.contract.errors import UserError
from trainer.ensemble.calibration import Calibration


def run(args: argparse.Namespace, progress_bar) -> int:
    """The evaluate command; `progress_bar(total, batch_size)` makes a bar with __call__ and close."""
    from trainer.ensemble.single import is_trial

    if args.batch_size < 1:
        raise UserError(f"--batch-size: must be at least 1, got {args.batch_size}")
    single = is_trial(args.ensemble)
    if not single:
        from trainer.ensemble.manifest import read_manifest

        read_manifest(args.ensemble)   # cheap checks first: a missing ensemble fails before torch loads
    from trainer.ensemble.evaluate import evaluate, read_labelled, shift, write_report

    # --split picks the split of whichever set is a .bp dataset (a test split against a shifted
    # ASE file is the usual check); an ASE file is used whole, and --split alone with no .bp errs.
    given = [Path(p) for p in (args.labelled, args.against) if p]
    any_dataset = any(p.suffix == ".bp" for p in given)

    def split_of(path: Path) -> str | None:
        return args.split if path.suffix == ".bp" or not any_dataset else None

    labelled = read_labelled(args.labelled, split_of(Path(args.labelled)), "testset")
    against = read_labelled(args.against, split_of(Path(args.against)), "testset") if args.against else None
    from trainer.ensemble.predict import Ensemble

    if single:
        from trainer.ensemble.single import trial_manifest

        model = Ensemble.from_manifest(trial_manifest(args.ensemble), args.device)
    else:
        model = Ensemble.load(args.ensemble, args.device)
    outdir = args.output or args.ensemble / "evaluations" / _name(args.labelled, labelled)
    results = []
    for data in [labelled] + ([against] if against is not None else []):
        bar = progress_bar(len(data.structures), args.batch_size)
        try:
            results.append(evaluate(model, data, args.batch_size, args.source, bar))
        finally:
            bar.close()
    metrics, pred = results[0]
    if against is not None:
        metrics["shift"] = shift(metrics, results[1][0])
        write_report(outdir / "against", *results[1], against)
    write_report(outdir, metrics, pred, labelled)
    print(summary(metrics))
    if against is not None:
        print(f"\nshifted: {summary(results[1][0])}\n")
        print(shift_table(metrics["shift"]))
    print(f"metrics and figures in {outdir}" + (f" (shifted set: {outdir / 'against'})" if against else ""))
    return 0


def _name(path: Path, labelled) -> str:
    return path.name.split(".")[0] + (f"-{labelled.origin['split']}" if labelled.origin["split"] else "")


def summary(metrics: dict) -> str:
    """What evaluate prints for one labelled set."""
    from trainer.ensemble.prediction_files import metrics_table

    if metrics["uncertainty"] is not None:
        forces = {kind: metrics["uncertainty"][kind]["forces"]["spearman_per_atom_norm"]
                  for kind in ("raw", "calibrated")}
        return (metrics_table(metrics) + f"\nforces per atom: spearman(|std|, |error|) raw {forces['raw']:.3f}, "
                f"calibrated {forces['calibrated']:.3f}")
    data, model = metrics["data"], metrics["accuracy"]["model"]
    return "\n".join([
        f"{data['structures']} structures, {data['atoms']} atoms "
        f"({data['file']}{', ' + data['split'] if data['split'] else ''})",
        f"{'':<22}{'E MAE meV/atom':>16}{'E RMSE meV/atom':>17}{'F MAE eV/Å':>12}{'F RMSE eV/Å':>13}",
        f"{'model ' + model['name']:<22}{model['energy_mae_meV_per_atom']:>16.2f}"
        f"{model['energy_rmse_meV_per_atom']:>17.2f}{model['forces_mae_eV_per_A']:>12.4f}"
        f"{model['forces_rmse_eV_per_A']:>13.4f}",
        f"{metrics['note']}"])


def shift_table(shift: dict) -> str:
    """The distribution-shift check as a small table: in distribution, shifted, ratio."""
    a, b = shift["accuracy"]["in_distribution"], shift["accuracy"]["shifted"]
    rows = [("energy MAE (eV)", a["energy_mae_eV"], b["energy_mae_eV"], shift["error_ratio"]["energy_mae"]),
            ("forces MAE (eV/Å)", a["forces_mae_eV_per_A"], b["forces_mae_eV_per_A"],
             shift["error_ratio"]["forces_mae"])]
    lines = [f"distribution shift: {shift['shifted']['file']} against {shift['in_distribution']['file']}",
             f"{'':<36}{'in distribution':>16}{'shifted':>12}{'ratio':>8}"]
    lines += [f"{label:<36}{x:>16.4f}{y:>12.4f}{r:>8.2f}" for label, x, y, r in rows]
    if "mean_std_ratio" in shift:
        mean, ratio = shift["mean_std"], shift["mean_std_ratio"]
        for kind in ("raw", "calibrated"):
            for quantity, unit in (("energy", "eV"), ("forces", "eV/Å")):
                lines.append(f"{f'mean {quantity} std, {kind} ({unit})':<36}"
                             f"{mean['in_distribution'][kind][quantity]:>16.4f}"
                             f"{mean['shifted'][kind][quantity]:>12.4f}{ratio[kind][quantity]:>8.2f}")
    else:
        lines.append(shift["note"])
    return "\n".join(lines)


def calibration_summary(calibration: Calibration) -> str:
    """One line per quantity: the map, the held-out areas it was chosen by, and why."""
    lines = []
    for quantity in ("energy", "forces"):
        mapping = getattr(calibration, quantity)
        fit = mapping.fit or {}
        line = f"  {quantity}: {mapping.describe()}"
        if "held_out_area" in fit:
            areas = ", ".join(f"{'raw' if form == 'identity' else form} {area:.3f}"
                              for form, area in fit["held_out_area"].items())
            line += f"; held-out miscalibration area: {areas}"
        if "area" in fit:
            line += f"; on the fitting data {fit['area']['raw']:.3f} -> {fit['area']['calibrated']:.3f}"
        if fit.get("note"):
            line += f" ({fit['note']})"
        lines.append(line)
    if calibration.energy_offsets is not None:
        offsets = ", ".join(f"{1000 * o:+.2f}" for o in calibration.energy_offsets)
        lines.append(f"  energy offsets of the members, removed before their spread (meV/atom): {offsets}")
    return "\n".join(lines)
