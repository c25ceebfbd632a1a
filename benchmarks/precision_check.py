"""Does bf16 change conclusions? Method I's g in fp32 and in bf16 autocast, same f, same seeds.

    python benchmarks/precision_check.py [--out runs/bench-precision] [--seeds 0 1 2]
                                         [--classifier PATH] [--force] [--smoke]

1. f once in fp32 with configs/synthetic_cpu.yaml (or ``--classifier``: an f saved by
   ``wsol train`` / ``run_local``), so both precisions localise with the same classifier.
2. For every seed, g for Method I with ``compute.precision=fp32`` and with
   ``compute.precision=bf16`` (both ``compute.channels_last=true``, a placement-only
   switch), each into its own run folder; each g's epoch is selected by the validation
   S-score as in every run.
3. The final step, and the only reader of the test split: every selected g scored on the
   test split (GT-known loc, MaxBoxAccV2). Per seed and on average, bf16 minus fp32.

The table goes to stdout and <out>/results.md, everything to <out>/results.json.
``--smoke``: tiny data, 1 f epoch, 2 g epochs, one seed: seconds, plumbing only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from wsol.checkpoint import load_classifier, load_mask_generator
from wsol.compute import resolve_device
from wsol.config import load_config
from wsol.data import read_test_split
from wsol.data.synthetic import synthesize_cub
from wsol.evaluate import evaluate_maps, mask_generator_maps
from wsol.local_run import run_local

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_CONFIG = REPO_ROOT / "configs" / "synthetic_cpu.yaml"
DEFAULT_DATA = Path("data/synthetic")
PRECISIONS = ("fp32", "bf16")
SMOKE_OVERRIDES = [
    "data.resize=40",
    "data.crop=32",
    "classifier.epochs=1",
    "classifier.batch_size=8",
    "mask.epochs=2",
    "mask.batch_size=4",
    "data.cache=false",
]


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description="Method I's g in fp32 and bf16 autocast with the same f and seeds; "
        "test GT-known loc and MaxBoxAccV2 of each S-selected g."
    )
    parser.add_argument("--out", type=Path, default=Path("runs/bench-precision"))
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--classifier", type=Path, help="an f checkpoint to reuse (fp32)")
    parser.add_argument("--data", type=Path, default=DEFAULT_DATA)
    parser.add_argument("--force", action="store_true", help="clear a non-empty --out")
    parser.add_argument("--smoke", action="store_true", help="tiny data and epochs")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    out: Path = args.out
    if out.exists() and any(out.iterdir()):
        if not args.force:
            print(f"error: {out} is not empty; pass --force or choose --out", file=sys.stderr)
            return 2
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)
    started = time.perf_counter()
    overrides: list[str] = []
    if args.smoke:
        root = synthesize_cub(
            out / "data", num_classes=3, train_per_class=8, test_per_class=3, image_size=48
        )
        overrides += SMOKE_OVERRIDES
        seeds = args.seeds[:1]
    else:
        root = args.data
        if not (root / "images.txt").is_file():
            print(f"{root} is missing: writing it as `wsol synth {root}` does", flush=True)
            synthesize_cub(root, seed=0)
        seeds = args.seeds
    overrides += [f"data.root={root}", "compute.channels_last=true", "mask.reg=true"]

    classifier_path = args.classifier
    if classifier_path is None:
        print("== f in fp32, shared by every g", flush=True)
        config = load_config(DEFAULT_CONFIG, [*overrides, "name=f", "compute.precision=fp32"])
        classifier_path = run_local(config, out / "f", progress=False).classifier_path

    runs: list[dict[str, Any]] = []
    for seed in seeds:
        for precision in PRECISIONS:
            name = f"seed{seed}-{precision}"
            print(f"== g, seed {seed}, {precision}", flush=True)
            config = load_config(
                DEFAULT_CONFIG,
                [
                    *overrides,
                    f"name={name}",
                    f"seed={seed}",
                    f"compute.precision={precision}",
                    f"classifier.checkpoint={classifier_path}",
                ],
            )
            began = time.perf_counter()
            result = run_local(config, out / name, progress=False)
            runs.append(
                {
                    "seed": seed,
                    "precision": precision,
                    "config": config,
                    "selected_epoch": result.selection.epoch,
                    "train_s": time.perf_counter() - began,
                    "selected_path": result.out_dir / "selected.pt",
                }
            )

    print("== test split (read here and only here)", flush=True)
    config = runs[0]["config"]
    device = resolve_device(config.device)
    classifier, _ = load_classifier(classifier_path, device)
    test_samples = read_test_split(config.data)
    for run in runs:
        generator = load_mask_generator(run["selected_path"], device)
        metrics = evaluate_maps(
            mask_generator_maps(generator), classifier, test_samples, run["config"], device
        ).metrics
        run["gt_known_loc"] = metrics["gt_known_loc"]
        run["maxboxacc_v2"] = metrics["maxboxacc_v2"]

    table = results_table(runs, len(test_samples))
    print("\n" + table)
    payload = {
        "classifier": str(classifier_path),
        "test_images": len(test_samples),
        "runs": [
            {k: (str(v) if isinstance(v, Path) else v) for k, v in run.items() if k != "config"}
            for run in runs
        ],
        "wall_s": time.perf_counter() - started,
    }
    (out / "results.json").write_text(json.dumps(payload, indent=2) + "\n")
    (out / "results.md").write_text(table + "\n")
    print(f"wall time {payload['wall_s']:.0f}s; results in {out}/results.md")
    return 0


def results_table(runs: list[dict[str, Any]], test_images: int) -> str:
    by_seed: dict[int, dict[str, dict[str, Any]]] = {}
    for run in runs:
        by_seed.setdefault(run["seed"], {})[run["precision"]] = run
    lines = [
        f"Method I, same fp32 f, {test_images} test images; each g at its S-selected epoch.",
        "",
        "| seed | fp32 epoch | bf16 epoch | fp32 GT-known | bf16 GT-known | diff | "
        "fp32 MaxBoxAccV2 | bf16 MaxBoxAccV2 | diff | fp32 train s | bf16 train s |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    diffs: dict[str, list[float]] = {"gt_known_loc": [], "maxboxacc_v2": []}
    for seed, pair in sorted(by_seed.items()):
        full, half = pair["fp32"], pair["bf16"]
        for key in diffs:
            diffs[key].append(half[key] - full[key])
        lines.append(
            f"| {seed} | {full['selected_epoch']} | {half['selected_epoch']} | "
            f"{full['gt_known_loc']:.1f} | {half['gt_known_loc']:.1f} | "
            f"{diffs['gt_known_loc'][-1]:+.1f} | {full['maxboxacc_v2']:.1f} | "
            f"{half['maxboxacc_v2']:.1f} | {diffs['maxboxacc_v2'][-1]:+.1f} | "
            f"{full['train_s']:.0f} | {half['train_s']:.0f} |"
        )

    def mean(precision: str, key: str) -> float:
        return statistics.fmean(pair[precision][key] for pair in by_seed.values())

    lines.append(
        f"| mean | | | {mean('fp32', 'gt_known_loc'):.1f} | {mean('bf16', 'gt_known_loc'):.1f} | "
        f"{statistics.fmean(diffs['gt_known_loc']):+.1f} | {mean('fp32', 'maxboxacc_v2'):.1f} | "
        f"{mean('bf16', 'maxboxacc_v2'):.1f} | {statistics.fmean(diffs['maxboxacc_v2']):+.1f} | "
        f"{mean('fp32', 'train_s'):.0f} | {mean('bf16', 'train_s'):.0f} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main(parse_args()))
