"""`gfm-data`: convert structure files to datasets, summarise a dataset, generate EMT data."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Sequence

import numpy as np

from trainer.contract.atomicio import check_can_publish
from trainer.contract.errors import UserError, run_cli

PROG = "gfm-data"
GENERATE_KINDS = ("slabs", "bulk", "molecules")
GENERATE_MIN_ATOMS = {"slabs": 16, "bulk": 8, "molecules": 3}


class _Parser(argparse.ArgumentParser):
    """Flag mistakes are user errors too: one line, exit 2, same format as every other problem."""

    def error(self, message: str):
        raise UserError(message)


def _positive(kind):
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a {kind.__name__}, got {text!r}") from None
        if not value > 0:
            raise argparse.ArgumentTypeError(f"must be positive, got {text}")
        return value
    return parse


def _fraction(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0.0 <= value < 1.0:
        raise argparse.ArgumentTypeError(f"a fraction must be in [0, 1), got {text}")
    return value


def _split(text: str) -> tuple[str, Path]:
    from trainer.data.splitting import SPLIT_NAMES

    name, sep, path = text.partition("=")
    if not sep or name not in SPLIT_NAMES or not path:
        raise argparse.ArgumentTypeError(f"expected train=FILE, val=FILE or test=FILE, got {text!r}")
    return SPLIT_NAMES[name], Path(path)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog=PROG, description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND",
                                     help="what to do (gfm-data COMMAND --help for its options)")

    convert = commands.add_parser(
        "convert", help="structure files -> one ADIOS2 dataset (cleaned, split)",
        description="Read labelled structure files, drop the structures unfit to train on (no labels, "
                    "NaN, huge forces; the report counts each), split them into train/val/test, build "
                    "their neighbour graphs and write one dataset, with per-element reference energies "
                    "fitted on the training split.")
    convert.add_argument("inputs", nargs="*", type=Path, metavar="FILE",
                         help="structure files with energy and force labels, in any format ASE reads, "
                              "optionally .xz/.gz/.bz2-compressed; their structures are pooled and split "
                              "at random by --val/--test")
    convert.add_argument("--name", required=True,
                         help="name of this data source, stored in the dataset and shown by info")
    convert.add_argument("--output", "-o", required=True, type=Path, metavar="DATASET",
                         help="dataset to write, an ADIOS2 .bp directory; the cleaning report goes "
                              "beside it as DATASET.report.json")
    convert.add_argument("--split", action="append", type=_split, default=[], metavar="SPLIT=FILE",
                         help="put all of FILE into SPLIT (train, val or test); repeatable")
    convert.add_argument("--val", type=_fraction, default=None, metavar="FRACTION",
                         help="fraction of the inputs for validation (default 0.1, or 0 if --split val= is given)")
    convert.add_argument("--test", type=_fraction, default=None, metavar="FRACTION",
                         help="fraction of the inputs for testing (default 0.1, or 0 if --split test= is given)")
    convert.add_argument("--seed", type=int, default=0,
                         help="seed of the random split; the same seed and inputs give the same split (default 0)")
    convert.add_argument("--radius", type=_positive(float), default=5.0, metavar="R",
                         help="cut-off radius R of the neighbour graph, in Å (default 5)")
    convert.add_argument("--max-neighbours", type=int, default=50, metavar="K",
                         help="keep the nearest K neighbours per atom; 0: no cap (default 50)")
    convert.add_argument("--max-force", type=_positive(float), default=100.0, metavar="F",
                         help="drop structures with a per-atom force norm above F, in eV/Å (default 100)")
    convert.add_argument("--workers", type=_positive(int), default=1, metavar="N",
                         help="processes reading and graphing the inputs; xyz/extxyz files are cut into chunks (default 1)")
    convert.add_argument("--isolated-atoms", type=Path, metavar="FILE",
                         help="take the reference energies from the one-atom structures of FILE (each "
                              "element alone, computed like the data; other structures in FILE are not "
                              "used) instead of fitting them on the training split")
    convert.add_argument("--overwrite", action="store_true", help="replace an existing output")

    info = commands.add_parser("info", help="summary of a dataset file",
                               description="Samples per split, atom and edge counts, elements, reference "
                                           "energies and the conversion settings of a dataset.")
    info.add_argument("dataset", type=Path, metavar="DATASET", help="a dataset written by gfm-data convert (.bp)")
    info.add_argument("--json", action="store_true", help="print the summary, cleaning report included, as JSON")

    generate = commands.add_parser(
        "generate", help="EMT-labelled slabs, bulk alloys or molecules as extxyz (test and scaling data)",
        description="Label structures with ASE's EMT potential and write them as extxyz for `convert`.")
    # Spelled out, not imported: importing trainer.data.generate (ase.build) would add ~1 s to every
    # gfm-data command; tests/test_data_generate.py checks that these agree with the generator.
    generate.add_argument("--kind", choices=GENERATE_KINDS, required=True,
                          help="slabs: metal slabs with H/C/N/O adsorbates (OC20-like); bulk: strained fcc "
                               "alloy supercells (MPTrj-like); molecules: small H/C/N/O molecules along "
                               "short MD runs (MD17-like)")
    generate.add_argument("--count", type=_positive(int), required=True, help="number of structures")
    generate.add_argument("--seed", type=int, default=0,
                          help="seed of everything drawn; the same seed gives the same file for any "
                               "--workers (default 0)")
    generate.add_argument("--output", "-o", type=Path, required=True, help="extxyz file to write")
    generate.add_argument("--max-atoms", type=int, default=60,
                          help="largest structure; at least " + ", ".join(
                              f"{n} for {kind}" for kind, n in GENERATE_MIN_ATOMS.items()) + " (default 60)")
    generate.add_argument("--molecule", action="append", metavar="NAME",
                          help="--kind molecules: draw only this molecule (a g2 name such as CH3CH2OH, ethanol); "
                               "repeatable (default: a mix of 12 small H/C/N/O molecules, ethanol among them)")
    generate.add_argument("--workers", type=_positive(int), default=2, help="processes (default 2)")
    generate.add_argument("--overwrite", action="store_true", help="replace an existing output")
    return parser


def run_convert(args: argparse.Namespace) -> None:
    from trainer.data.cleaning import report_table
    from trainer.data.convert import RANDOM, ConvertOptions, Input, convert, report_path

    explicit = {split for split, _ in args.split}
    options = ConvertOptions(
        name=args.name, radius=args.radius, max_neighbours=args.max_neighbours or None,
        max_force=args.max_force, seed=args.seed, workers=args.workers, isolated_atoms=args.isolated_atoms,
        val=args.val if args.val is not None else (0.0 if "valset" in explicit else 0.1),
        test=args.test if args.test is not None else (0.0 if "testset" in explicit else 0.1))
    inputs = [Input(path, RANDOM) for path in args.inputs] + [Input(path, split) for split, path in args.split]
    info, report = convert(inputs, args.output, options, overwrite=args.overwrite)
    print(report_table(report))
    print(report["reference_energies"]["message"])
    print(_reference_values(report["reference_energies"]["energies_eV"]))
    counts = ", ".join(f"{split} {n}" for split, n in info.counts.items())
    print(f"wrote {args.output} ({counts}); report in {report_path(args.output)}")


def dataset_summary(path: Path) -> dict:
    """Samples per split, atom and edge statistics, elements and the conversion settings of a dataset."""
    from ase.data import chemical_symbols

    from trainer.data.adiosfile import SPLITS, DatasetReader

    with DatasetReader(path) as reader:
        info = reader.info
        sizes = {split: reader.sizes(split) for split in SPLITS}
    atoms = np.concatenate([a for a, _ in sizes.values()])
    edges = np.concatenate([e for _, e in sizes.values()])

    def stats(values: np.ndarray) -> dict:
        if len(values) == 0:
            return {"min": 0, "mean": 0.0, "max": 0, "total": 0}
        return {"min": int(values.min()), "mean": float(values.mean()), "max": int(values.max()),
                "total": int(values.sum())}

    return {
        "path": str(path), "name": info.name, "samples": dict(info.counts),
        "atoms_per_sample": stats(atoms), "edges_per_sample": stats(edges),
        "elements": [chemical_symbols[z] for z in info.elements],
        "reference_energies": {chemical_symbols[z]: e for z, e in info.reference_energies.items()},
        "radius": info.radius, "max_neighbours": info.max_neighbours,
        "degree_histogram": info.degree_histogram, "split_rule": info.split_rule,
        "cleaning_report": info.cleaning_report, "units": info.units,
    }


def _reference_values(energies: dict[str, float]) -> str:
    return "reference energies (eV per atom): " + ", ".join(f"{el} {e:.4f}" for el, e in energies.items())


def run_info(args: argparse.Namespace) -> None:
    from trainer.data.cleaning import report_table

    summary = dataset_summary(args.dataset)
    if args.json:
        print(json.dumps(summary, indent=2))
        return
    print(f"{summary['path']}: source '{summary['name']}'")
    print("samples:   " + ", ".join(f"{split} {n}" for split, n in summary["samples"].items()))
    for label, key in (("atoms:", "atoms_per_sample"), ("edges:", "edges_per_sample")):
        s = summary[key]
        print(f"{label:<10} min {s['min']}, mean {s['mean']:.1f}, max {s['max']} per sample; {s['total']} in all")
    print(f"elements:  {' '.join(summary['elements'])}")
    print(f"graph:     radius {summary['radius']:g} Å, max neighbours {summary['max_neighbours'] or 'unlimited'}")
    print(_reference_values(summary["reference_energies"]))
    fitted = summary["cleaning_report"].get("reference_energies")
    if fitted:  # datasets converted before the report said how they were fitted have no entry
        print(fitted["message"])
    if summary["cleaning_report"].get("sources"):
        print(report_table(summary["cleaning_report"]))


def run_generate(args: argparse.Namespace) -> None:
    from trainer.data.generate import GenerateOptions, generate, write_frames

    if args.output.exists() and not args.overwrite:
        raise UserError(f"{args.output}: already exists (pass --overwrite to replace it)")
    check_can_publish(args.output)  # before the structures are computed
    extra = {"molecules": tuple(args.molecule)} if args.molecule else {}
    options = GenerateOptions(kind=args.kind, count=args.count, seed=args.seed, max_atoms=args.max_atoms,
                              workers=args.workers, **extra)
    frames = generate(options)
    write_frames(args.output, frames, overwrite=args.overwrite)
    noun = {"slabs": "slab", "molecules": "molecule"}.get(args.kind, args.kind)  # "10 slab structures", not "10 slabs structures"
    print(f"wrote {len(frames)} {noun} structures to {args.output}")


def _main(argv: Sequence[str] | None) -> int:
    args = build_parser().parse_args(argv)
    {"convert": run_convert, "info": run_info, "generate": run_generate}[args.command](args)
    return 0


def main(argv: Sequence[str] | None = None) -> None:
    run_cli(_main, PROG, argv)


if __name__ == "__main__":
    main(sys.argv[1:])
