"""Show that Method I works: train f and g on the synthetic dataset, then test once.

    python benchmarks/method1_synthetic.py [--out runs/bench-method1] [--force] [--smoke]
                                           [--set KEY=VALUE ...]

Steps (the run logs are printed as they go, and copied to <out>/log.txt):

1. f once, and g for Method I (mask.reg=true), with ``wsol.local_run.run_local`` into
   <out>/full; the epoch of g is selected by the validation S-score and our guard
   (selected.pt, selection.json).
2. g for Method I without the regularizer (mask.reg=false, the paper's Fig. 8
   ablation) into <out>/no_reg, reusing f from step 1 (classifier.checkpoint).
3. The final step, and the only place the test split is read: Method I, Method I
   reg:false (each its selected g) and CAM with the same f, scored on the test split
   with ``wsol.evaluate.evaluate_maps``. The table goes to stdout, <out>/results.md and
   <out>/results.json; example maps to <out>/examples.png.

Data: data/synthetic (written as ``wsol synth data/synthetic`` does if missing) with
configs/synthetic_cpu.yaml. ``--smoke`` instead writes a tiny dataset into <out> and
trains 1 + 2 epochs on 32 px crops: seconds, to check the plumbing only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

# Run this checkout's code, whatever `wsol` the interpreter has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches as patches
import matplotlib.pyplot as plt

from study.tables import markdown_table
from wsol.checkpoint import load_classifier, load_mask_generator
from wsol.compute import resolve_device
from wsol.config import RunConfig, load_config
from wsol.data import read_test_split
from wsol.data.synthetic import synthesize_cub
from wsol.evaluate import (
    MapFunction,
    TestEvaluation,
    cam_maps,
    evaluate_maps,
    mask_generator_maps,
)
from wsol.local_run import LocalRunResult, run_local

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "synthetic_cpu.yaml"
DEFAULT_DATA = Path("data/synthetic")
DEFAULT_OUT = Path("runs/bench-method1")
# What this script writes under --out; --force removes exactly these first.
OUTPUTS = ("full", "no_reg", "smoke-data", "results.md", "results.json", "examples.png", "log.txt")
SMOKE_OVERRIDES = [
    "data.resize=40",
    "data.crop=32",
    "classifier.epochs=1",
    "classifier.batch_size=16",
    "mask.epochs=2",
    "mask.batch_size=8",
    "selection.num_visualized=2",
]
COLUMNS = (
    ("GT-known loc", "gt_known_loc"),
    ("Top-1 loc", "top1_loc"),
    ("Top-1 cls", "top1_cls"),
    ("PxAP", "pxap"),
    ("MaxBoxAccV2", "maxboxacc_v2"),
)

Log = Callable[[str], None]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Train f, Method I g and its reg:false ablation on the synthetic dataset, "
        "select each g by validation S-score, then evaluate them and CAM on the test split."
    )
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help=f"default {DEFAULT_OUT}")
    parser.add_argument(
        "--force", action="store_true", help="overwrite this script's outputs in a non-empty --out"
    )
    parser.add_argument(
        "--smoke", action="store_true", help="tiny data, 1 f epoch, 2 g epochs: seconds"
    )
    parser.add_argument("--config", type=Path, default=DEFAULT_CONFIG, help="run config YAML")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help=f"dataset folder (default {DEFAULT_DATA})"
    )
    parser.add_argument("--no-progress", action="store_true", help="no per-batch progress bars")
    parser.add_argument(
        "--set",
        dest="overrides",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="config override for every run, e.g. --set compute.precision=bf16 (repeatable)",
    )
    return parser.parse_args(argv)


def prepare_out(out: Path, force: bool) -> None:
    """Refuse a non-empty ``out`` unless ``force``; then clear only this script's outputs."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise FileExistsError(f"output folder {out} is not empty; pass --force or use --out")
        for name in OUTPUTS:
            path = out / name
            if path.is_dir():
                shutil.rmtree(path)
            elif path.exists():
                path.unlink()
    out.mkdir(parents=True, exist_ok=True)


def make_logger(path: Path) -> Log:
    def log(message: str) -> None:
        print(message, flush=True)
        with path.open("a") as handle:
            handle.write(message + "\n")

    return log


def dataset_root(args: argparse.Namespace, log: Log) -> Path:
    if args.smoke:
        root = args.out / "smoke-data"
        log(f"smoke: writing a tiny synthetic dataset to {root}")
        return synthesize_cub(
            root, num_classes=3, train_per_class=8, test_per_class=3, image_size=48, seed=0
        )
    root = args.data
    if not (root / "images.txt").is_file():
        from study.cli import main as wsol_main

        log(f"{root} is missing: writing it as `wsol synth {root} --seed 0` does")
        if wsol_main(["synth", str(root), "--seed", "0"]) != 0:
            raise RuntimeError(f"could not write the synthetic dataset to {root}")
    return root


def config_for(args: argparse.Namespace, root: Path, extra: Sequence[str]) -> RunConfig:
    overrides = [f"data.root={root}"]
    if args.smoke:
        overrides += SMOKE_OVERRIDES
    return load_config(args.config, [*overrides, *getattr(args, "overrides", []), *extra])


def train_runs(
    args: argparse.Namespace, root: Path, log: Log
) -> tuple[dict[str, LocalRunResult], RunConfig]:
    """Step 1 and 2: f + Method I g, then Method I reg:false g with the same f."""
    progress = not args.no_progress
    log("== step 1: f and Method I g (mask.reg=true)")
    config = config_for(args, root, ["name=method1", "mask.reg=true"])
    full = run_local(config, args.out / "full", progress=progress, log=log)
    log("== step 2: Method I g without the regularizer (mask.reg=false), same f")
    no_reg_config = config_for(
        args,
        root,
        ["name=method1-no-reg", "mask.reg=false", f"classifier.checkpoint={full.classifier_path}"],
    )
    no_reg = run_local(no_reg_config, args.out / "no_reg", progress=progress, log=log)
    return {"Method I": full, "Method I, reg:false": no_reg}, config


def evaluate_on_test(
    runs: dict[str, LocalRunResult], config: RunConfig, args: argparse.Namespace, log: Log
) -> dict[str, TestEvaluation]:
    """Step 3, the only reader of the test split: selected g's and CAM with the same f."""
    log("== step 3: final evaluation on the test split (read here and only here)")
    device = resolve_device(config.device)
    test_samples = read_test_split(config.data)
    log(f"test split: {len(test_samples)} images from {config.data.root}")
    classifier_path = runs["Method I"].classifier_path
    classifier, _ = load_classifier(classifier_path, device)
    methods: dict[str, MapFunction] = {}
    for name, run in runs.items():
        selected = run.out_dir / "selected.pt"
        methods[name] = mask_generator_maps(load_mask_generator(selected, device))
    methods["CAM"] = cam_maps(classifier)
    results = {}
    for name, map_fn in methods.items():
        started = time.perf_counter()
        results[name] = evaluate_maps(
            map_fn, classifier, test_samples, config, device, progress=not args.no_progress
        )
        metrics = results[name].metrics
        log(
            f"{name}: GT-known loc {metrics['gt_known_loc']:.1f}%, "
            f"MaxBoxAccV2 {metrics['maxboxacc_v2']:.1f}% "
            f"({time.perf_counter() - started:.1f}s)"
        )
    return results


def _selected_epoch(run: LocalRunResult | None) -> str:
    if run is None:
        return "—"
    text = str(run.selection.epoch)
    return text + " (fallback: all degenerate)" if run.selection.fallback else text


def results_table(results: dict[str, TestEvaluation], runs: dict[str, LocalRunResult]) -> str:
    """A Markdown table: method, selected epoch, the metrics in percent, mean mask value."""
    header = ["Method", "Selected epoch", *(title for title, _ in COLUMNS), "Mean mask value"]
    rows = []
    for name, result in results.items():
        metrics = result.metrics
        cells = [name, _selected_epoch(runs.get(name))]
        cells += [f"{metrics[key]:.1f}" if key in metrics else "n/a" for _, key in COLUMNS]
        cells.append(f"{metrics['mask_mean']:.3f}")
        rows.append(cells)
    return markdown_table(header, rows).rstrip("\n")


def _draw_box(axis: Any, box: Sequence[int], color: str) -> None:
    x0, y0, x1, y1 = box
    axis.add_patch(
        patches.Rectangle(
            (x0 - 0.5, y0 - 0.5), x1 - x0 + 1, y1 - y0 + 1, fill=False, edgecolor=color, lw=1.2
        )
    )


def example_figure(path: Path, results: dict[str, TestEvaluation], count: int = 6) -> None:
    """Rows: test images; columns: the image with its GT box, each method's map with its
    predicted (red) and GT (green) boxes."""
    names = list(results)
    rows = min(count, *(len(result.examples) for result in results.values()))
    if rows == 0:
        return
    figure, axes = plt.subplots(
        rows, len(names) + 1, figsize=(2 * (len(names) + 1), 2 * rows), squeeze=False
    )
    for row in range(rows):
        first = results[names[0]].examples[row]
        axes[row, 0].imshow(first.image)
        for box in first.gt_boxes:
            _draw_box(axes[row, 0], box, "#00c000")
        for column, name in enumerate(names, start=1):
            example = results[name].examples[row]
            axes[row, column].imshow(example.score_map, cmap="jet", vmin=0, vmax=1)
            for box in example.gt_boxes:
                _draw_box(axes[row, column], box, "#00c000")
            _draw_box(axes[row, column], example.box, "#ff2020")
            if row == 0:
                axes[row, column].set_title(name, fontsize=8)
        if row == 0:
            axes[row, 0].set_title("test image", fontsize=8)
    for axis in axes.flat:
        axis.set_axis_off()
    figure.tight_layout()
    figure.savefig(path, dpi=110)
    plt.close(figure)


def write_results(
    out: Path,
    results: dict[str, TestEvaluation],
    runs: dict[str, LocalRunResult],
    table: str,
    timings: dict[str, float],
    smoke: bool,
) -> None:
    payload = {
        "smoke": smoke,
        "timings_s": timings,
        "methods": {
            name: {
                "selected_epoch": runs[name].selection.epoch if name in runs else None,
                "selection": runs[name].selection.to_dict() if name in runs else None,
                "run_dir": str(runs[name].out_dir) if name in runs else None,
                "metrics": result.metrics,
                "maxboxacc_best_thresholds": {
                    str(k): v for k, v in result.maxboxacc_thresholds.items()
                },
            }
            for name, result in results.items()
        },
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    count = int(next(iter(results.values())).metrics["count"])
    text = [
        "# Method I on the synthetic dataset" + (" (SMOKE RUN: plumbing only)" if smoke else ""),
        "",
        f"Test split: {count} images. Accuracies in %. GT-known / Top-1 loc box the map at "
        "the paper's fixed tau = 0.1 x max; MaxBoxAccV2 (mean of IoU 30/50/70, Choe et al., "
        "CVPR 2020) sweeps tau over min-max-normalised maps; PxAP is on the maps as output. "
        "Each g is the epoch of max validation S-score among epochs our guard allows "
        "(fallback: every epoch was degenerate, plain max-S); CAM uses the same f.",
        "",
        table,
        "",
        "MaxBoxAccV2 per IoU threshold: "
        + "; ".join(
            f"{name} "
            + "/".join(f"{result.metrics[f'maxboxacc_v2_iou{d}']:.1f}" for d in (30, 50, 70))
            for name, result in results.items()
        ),
        "",
        "Wall time: "
        + ", ".join(f"{stage} {seconds:.0f}s" for stage, seconds in timings.items())
        + ".",
        "",
    ]
    (out / "results.md").write_text("\n".join(text))


def main(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    try:
        prepare_out(args.out, args.force)
    except FileExistsError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    log = make_logger(args.out / "log.txt")
    root = dataset_root(args, log)
    runs, config = train_runs(args, root, log)
    trained = time.perf_counter()
    results = evaluate_on_test(runs, config, args, log)
    finished = time.perf_counter()
    timings = {
        "training": trained - started,
        "test evaluation": finished - trained,
        "total": finished - started,
    }
    table = results_table(results, runs)
    write_results(args.out, results, runs, table, timings, args.smoke)
    example_figure(args.out / "examples.png", results)
    log("")
    log(table)
    log("")
    log(f"wall time {timings['total']:.0f}s; results in {args.out}/results.md and results.json")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
