"""The ``wsol`` command.

    wsol synth OUT                      write a synthetic dataset in the CUB-200-2011 layout
    wsol train --config FILE [--set k=v]  single-run local mode: train f and g, select by S
    wsol study SPEC [--set k=v] [--address ADDR] [--resume] [--name NAME]
                                        a grid or Optuna study on Ray Tune, logged to MLflow
    wsol evaluate STUDY [--set k=v] [--force] [--epoch-curve]
                                        score the selected checkpoints on the test split
    wsol report STUDY [--set k=v]       the tables again, and a self-contained HTML page
    wsol data check ROOT --format NAME  validate a dataset folder in seconds (study/data_cli.py)
    wsol --version                      the package version and the code version (git)

Ray, Optuna and MLflow are imported only by the commands that need them, so the
single-run mode starts fast and works without a cluster.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path

from study import data_cli
from wsol.config import ConfigError, RunConfig, apply_overrides, config_from_dict, load_config

# wsol.data.synthetic.SYNTHETIC_KINDS, default first, spelled out so that building the
# parser imports no torch (tests/test_data_synthetic.py keeps the two equal).
SYNTH_KINDS = ("stripes", "shapes", "fragments", "scale", "hard")

# Flags for the common fields; each is sugar for one --set override.
TRAIN_FLAGS: dict[str, tuple[str, type, str]] = {
    "data_root": ("data.root", str, "dataset folder (data.root)"),
    "seed": ("seed", int, "run seed: data order, augmentation, init (seed)"),
    "device": ("device", str, "auto | cpu | cuda (device)"),
    "lam": ("mask.lam", float, "lambda of the L1 regularizer (mask.lam)"),
    "no_reg": ("mask.reg", bool, "drop the regularizer R: the Fig. 8 ablation (mask.reg=false)"),
    "mask_epochs": ("mask.epochs", int, "epochs of g (mask.epochs)"),
    "classifier_epochs": ("classifier.epochs", int, "epochs of f (classifier.epochs)"),
    "classifier": ("classifier.checkpoint", str, "a trained classifier.pt to reuse"),
    "crop": ("data.crop", int, "crop size in px, a multiple of 32 (data.crop)"),
}


class _VersionAction(argparse.Action):
    """``--version``: print the package and code versions, exit 0. Computed only when
    asked (the code version runs git), not each time the parser is built."""

    def __init__(self, option_strings: Sequence[str], dest: str, **kwargs: object) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: object) -> None:
        print(version_text())
        parser.exit()


def version_text() -> str:
    """``wsol-study <package version> (code <git describe>)``, what ``--version`` prints."""
    import importlib.metadata

    from study.version import code_version

    try:
        package = importlib.metadata.version("wsol-study")
    except importlib.metadata.PackageNotFoundError:
        package = "unknown (not installed)"
    return f"wsol-study {package} (code {code_version()})"


def _add_spec_overrides(parser: argparse.ArgumentParser, applies_to: str) -> None:
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help=f"override a field of {applies_to} by dotted path, e.g. --set base.mask.lam=0.5, "
        "--set search.num_samples=4, --set storage=runs/x (repeatable; VALUE is YAML)",
    )


def build_parser() -> argparse.ArgumentParser:
    """The documented argument parser of every ``wsol`` subcommand."""
    parser = argparse.ArgumentParser(
        prog="wsol",
        description="Learning a weight map for weakly-supervised localization: "
        "single runs, studies and their evaluation.",
    )
    parser.add_argument(
        "--version",
        action=_VersionAction,
        help="print the package version and the code version (git describe), then exit",
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    synth = commands.add_parser(
        "synth",
        help="write a synthetic dataset in the CUB-200-2011 layout",
        description="Write a seeded synthetic WSOL dataset (images, boxes, masks) in exactly "
        "the CUB-200-2011 directory format. Class identity is visible only on the object.",
    )
    synth.add_argument("out", type=Path, help="output folder (created)")
    synth.add_argument("--classes", type=int, default=4, help="number of classes (default 4)")
    synth.add_argument("--train-per-class", type=int, default=120, help="default 120")
    synth.add_argument("--test-per-class", type=int, default=40, help="default 40")
    synth.add_argument("--size", type=int, default=96, help="image side in px (default 96)")
    synth.add_argument("--seed", type=int, default=0, help="default 0")
    synth.add_argument(
        "--kind",
        choices=SYNTH_KINDS,
        default=SYNTH_KINDS[0],
        help="what carries the class and what varies (default stripes, the original "
        "set): stripes (stripe orientation on the object), shapes (a mirror-asymmetric "
        "shape per class, random colour and texture), fragments (shapes among fragments of "
        "other classes' shapes), scale (shapes at 10-60%% of the side), hard (all of these)",
    )

    train = commands.add_parser(
        "train",
        help="single-run local mode: train f and g, keep the max-S checkpoint",
        description="Train the classifier f (or load --classifier), train the mask generator "
        "g with Eq. 1, validate every epoch and keep the checkpoint of the selectable epoch "
        "with maximal validation S-score. Never reads the test split.",
    )
    train.add_argument("--config", type=Path, help="YAML config (default: the paper's settings)")
    train.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="override a config field by dotted path, e.g. --set mask.lam=0.5 (repeatable)",
    )
    train.add_argument("--out", type=Path, help="run folder (default: runs/<name>)")
    train.add_argument("--resume", action="store_true", help="continue the run in --out")
    train.add_argument("--no-progress", action="store_true", help="no per-batch progress bars")
    for flag, (_, kind, text) in TRAIN_FLAGS.items():
        option = "--" + flag.replace("_", "-")
        if kind is bool:
            train.add_argument(option, action="store_true", help=text)
        else:
            train.add_argument(option, type=kind, help=text)

    study = commands.add_parser(
        "study",
        help="run a study spec (grid or Optuna) on Ray Tune, logged to MLflow",
        description="Run the trials of a study spec on a local Ray (default) or a Ray cluster "
        "(--address): the classifier stage, then one mask trial per config, each reporting "
        "its validation S-score every epoch. Writes <storage>/<name>/ and logs to MLflow. "
        "Never reads the test split: score the selected checkpoints with `wsol evaluate`.",
    )
    study.add_argument("spec", type=Path, help="study spec YAML (see ablations/)")
    _add_spec_overrides(study, "the spec")
    study.add_argument(
        "--address",
        help="Ray cluster to join: 'auto' (on a cluster node) or 'ray://HOST:10001'; "
        "default: start a local Ray on this machine",
    )
    study.add_argument(
        "--resume", action="store_true", help="finish an interrupted study (finished trials stay)"
    )
    study.add_argument("--name", help="study name (default: the spec's name)")
    study.add_argument(
        "--skip-resource-check",
        action="store_true",
        help="start even if no current node fits one trial (an autoscaler will add one)",
    )
    for command, text, description in (
        (
            "evaluate",
            "score a study's (or run's) selected checkpoints on the test split",
            "The final test evaluation, its own step and the only code that reads a test "
            "split: for every trial of STUDY, the checkpoint its validation S-score selected "
            "(and the CAM baseline of each f) is scored: GT-known loc, Top-1 loc, Top-1 cls, "
            "PxAP (with masks), MaxBoxAccV2. Writes tables, figures and test.* MLflow metrics.",
        ),
        (
            "report",
            "print the evaluation tables and write a self-contained HTML page",
            "Print the tables `wsol evaluate` wrote and write report.html beside them.",
        ),
    ):
        sub = commands.add_parser(command, help=text, description=description)
        sub.add_argument(
            "target",
            metavar="STUDY",
            help="a study folder (<storage>/<name>), its spec YAML, a study name under "
            "--storage, or a `wsol train` run folder",
        )
        sub.add_argument("--storage", default="studies", help="where study names are looked up")
        _add_spec_overrides(sub, "STUDY when it is a spec YAML (the --set its study ran with)")
        sub.add_argument(
            "--out", type=Path, help="output folder (default: <study folder>/evaluation)"
        )
        if command == "evaluate":
            sub.add_argument("--force", action="store_true", help="re-score trials scored before")
            sub.add_argument(
                "--epoch-curve",
                action="store_true",
                help="DIAGNOSTIC: also score every kept epoch on the test split and plot it "
                "against the validation S-score (needs keep_all_checkpoints: true); never "
                "used for selection",
            )
            sub.add_argument(
                "--allow-incomplete",
                action="store_true",
                help="also score trials that did not finish (an interrupted study): what "
                "they selected so far, labelled INCOMPLETE or ERROR in every output",
            )
            sub.add_argument("--device", default="auto", help="auto | cpu | cuda")
            sub.add_argument("--no-progress", action="store_true", help="no progress bars")
    data_cli.add_parser(commands)
    return parser


def train_config(args: argparse.Namespace) -> RunConfig:
    """The run's config: file (or defaults), then --set overrides, then flags."""
    overrides = list(args.overrides)
    for flag, (path, kind, _) in TRAIN_FLAGS.items():
        value = getattr(args, flag)
        if kind is bool:
            if value:
                overrides.append(f"{path}=false")
        elif value is not None:
            overrides.append(f"{path}={value}")
    if args.config is not None:
        return load_config(args.config, overrides)
    return config_from_dict(apply_overrides({}, overrides), source="defaults")


def cmd_train(args: argparse.Namespace) -> int:
    from wsol.local_run import run_local

    config = train_config(args)
    out_dir = args.out or Path("runs") / config.name
    run_local(config, out_dir, resume=args.resume, progress=not args.no_progress)
    return 0


def _synth_progress(started: float) -> Callable[[int, int], None]:
    """A progress callback for ``wsol synth`` that prints a line at every tenth of a set
    of 500 images or more (smaller sets take about a second)."""

    def report(done: int, total: int) -> None:
        if total >= 500 and (done % max(1, total // 10) == 0 or done == total):
            elapsed = time.perf_counter() - started
            print(f"  {done}/{total} images ({elapsed:.0f}s)", flush=True)

    return report


def cmd_synth(args: argparse.Namespace) -> int:
    from wsol.data.synthetic import synthesize_cub

    started = time.perf_counter()
    root = synthesize_cub(
        args.out,
        num_classes=args.classes,
        train_per_class=args.train_per_class,
        test_per_class=args.test_per_class,
        image_size=args.size,
        seed=args.seed,
        progress=_synth_progress(started),
        kind=args.kind,
    )
    total = args.classes * (args.train_per_class + args.test_per_class)
    print(
        f"wrote {total} images ({args.kind}, {args.classes} classes, {args.size}px) in the "
        f"CUB-200-2011 layout to {root} in {time.perf_counter() - started:.1f}s"
    )
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    """Exit status: 0 when every trial finished (or was stopped early by the spec's
    scheduler), 128 + the signal's number when SIGINT (130) or SIGTERM (143) stopped the
    study, 1 when a trial failed or did not finish."""
    import os
    import signal

    if args.address is None:
        # A local Ray listens on the loopback interface only (this must be set before Ray
        # is imported: Ray reads it at import to pick the node address it binds to).
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    from study.runner import StudyInterrupted, run_study
    from study.spec import load_spec

    try:
        outcome = run_study(
            load_spec(args.spec, args.overrides),
            address=args.address,
            resume=args.resume,
            name=args.name,
            check_cluster=not args.skip_resource_check,
        )
    except StudyInterrupted as interrupted:
        print(f"wsol study: {interrupted}", file=sys.stderr)
        return 128 + int(getattr(signal, interrupted.signal_name))
    if outcome.interrupted_by:
        return 128 + int(getattr(signal, outcome.interrupted_by))
    from study.manifest import EVALUABLE

    return 0 if all(s.status in EVALUABLE for s in outcome.summaries) else 1


def spec_target(target: str, overrides: Sequence[str]) -> str:
    """What ``evaluate``/``report`` look up: ``target`` itself, or with ``--set``
    overrides, the study folder of the spec YAML ``target`` with them applied
    (``<storage>/<name>``, so ``--set storage=runs/x`` finds the study it ran)."""
    if not overrides:
        return target
    if not target.endswith((".yaml", ".yml")) or not Path(target).is_file():
        raise ConfigError(
            f"--set applies to a spec YAML file, and {target!r} is not one; pass the spec "
            "the study was run from, or leave out --set"
        )
    from study import storage
    from study.spec import load_spec

    study = load_spec(target, overrides)
    return storage.join(study.storage_path(), study.name)


def cmd_evaluate(args: argparse.Namespace) -> int:
    from study.evaluation import evaluate

    evaluate(
        spec_target(args.target, args.overrides),
        storage_root=args.storage,
        out=args.out,
        force=args.force,
        epoch_curve=args.epoch_curve,
        allow_incomplete=args.allow_incomplete,
        device=args.device,
        progress=not args.no_progress,
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from study.report import report

    report(spec_target(args.target, args.overrides), storage_root=args.storage, out=args.out)
    return 0


COMMANDS = {
    "train": cmd_train,
    "synth": cmd_synth,
    "study": cmd_study,
    "evaluate": cmd_evaluate,
    "report": cmd_report,
    "data": data_cli.cmd_data,
}


def _expected_errors() -> tuple[type[BaseException], ...]:
    """Errors that are the user's to fix: printed as one message, exit status 2."""
    from study.errors import StudyError
    from wsol.checkpoint import CheckpointError
    from wsol.data import DatasetError
    from wsol.models.backbones import WeightsUnavailableError

    return (
        CheckpointError,
        ConfigError,
        FileExistsError,
        FileNotFoundError,
        DatasetError,
        WeightsUnavailableError,
        StudyError,
        # Training's own refusals (a loss that diverged names its epoch): a message, not a
        # traceback. ConfigError and DatasetError are ValueErrors too.
        FloatingPointError,
        ValueError,
    )


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except _expected_errors() as error:
        print(f"wsol {args.command}: error: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
