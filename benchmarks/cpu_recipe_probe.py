"""One probe of a CPU recipe on one synthetic dataset: f, then Method I's g (full and/or
no-reg), scored on the test split; the tool behind ``configs/cpu_recipe.yaml``.

Selection is the library's own (the S-score over validation epochs, with the guard). The
test split is read only after training, and for the oracle-epoch diagnostic (every
epoch's g scored on test, never used to select anything).

    PYTHONPATH=$PWD OMP_NUM_THREADS=1 python benchmarks/cpu_recipe_probe.py \
        --config configs/cpu_recipe.yaml --set data.root=data/hard --out runs/probe \
        [--classifier runs/probe/classifier.pt] [--rows full,no-reg] [--no-g]

Appends one JSON line per probe to ``--results`` (default benchmarks/results/
cpu_recipe_probes.jsonl).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

from wsol.checkpoint import load_classifier, save_classifier
from wsol.config import RunConfig, load_config
from wsol.data import read_test_split, read_training_splits
from wsol.evaluate import cam_maps, evaluate_maps, mask_generator_maps
from wsol.loop import train_classifier, train_mask
from wsol.models import EmbeddingNet


def _whole_image_maps(images: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
    del class_indices
    return torch.ones(images.shape[0], *images.shape[-2:])


def _log(text: str) -> None:
    print(text, flush=True)


def train_f(config: RunConfig, splits, out: Path) -> tuple[torch.nn.Module, list[dict]]:
    started = time.perf_counter()

    def on_epoch(report, save) -> None:
        m = report.metrics
        _log(
            f"f {report.epoch:>2}  val top-1 {m['val_top1_cls']:5.1f}  "
            f"train loss {m['train_loss']:.3f}  lr {m['lr']:.2e}  "
            f"({time.perf_counter() - started:.0f}s)"
        )

    classifier, history = train_classifier(config, splits, on_epoch)
    out.mkdir(parents=True, exist_ok=True)
    save_classifier(out / "classifier.pt", classifier, config, splits.class_names, history)
    return classifier, history


def train_g(config: RunConfig, classifier, splits, test, oracle: bool) -> dict:
    started = time.perf_counter()
    per_epoch_test: dict[int, float] = {}

    def on_epoch(report, save) -> None:
        m = report.metrics
        line = (
            f"g {report.epoch:>2}  val S {m['val_s_score']:.3f}  "
            f"box frac {m.get('val_box_fraction', float('nan')):.2f}  "
            f"mask mean {m.get('val_mask_mean', float('nan')):.2f}"
        )
        if oracle:
            mask_generator = save._state[0]  # diagnostic only
            was_training = mask_generator.training
            scored = evaluate_maps(
                mask_generator_maps(mask_generator), classifier, test, config, "cpu"
            )
            mask_generator.train(was_training)
            per_epoch_test[report.epoch] = scored.metrics["gt_known_loc"]
            line += f"  [test GT-known {per_epoch_test[report.epoch]:.1f}]"
        note = f" [{report.excluded_reason}]" if report.excluded_reason else ""
        _log(f"{line}{note}  ({time.perf_counter() - started:.0f}s)")

    result = train_mask(config, classifier, splits, on_epoch)
    selected = result.selection.epoch
    row = {
        "selected_epoch": selected,
        "selection_fallback": result.selection.fallback,
        "excluded": sorted(result.selection.excluded),
        "history": [
            {k: v for k, v in h.items() if not isinstance(v, (list, dict))} for h in result.history
        ],
        "seconds": time.perf_counter() - started,
    }
    if oracle:
        row["test_gt_known_per_epoch"] = per_epoch_test
        row["gt_known_selected"] = per_epoch_test.get(selected) if selected else 0.0
        best = max(per_epoch_test, key=per_epoch_test.get)
        row["oracle_epoch"] = best
        row["gt_known_oracle"] = per_epoch_test[best]
        row["oracle_gap"] = row["gt_known_oracle"] - (row["gt_known_selected"] or 0.0)
    return row


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", required=True)
    parser.add_argument("--set", action="append", default=[], dest="overrides")
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--classifier", type=Path, default=None)
    parser.add_argument("--rows", default="full,no-reg")
    parser.add_argument("--no-g", action="store_true")
    parser.add_argument("--no-oracle", action="store_true")
    parser.add_argument("--tag", default="")
    parser.add_argument(
        "--results", type=Path, default=Path("benchmarks/results/cpu_recipe_probes.jsonl")
    )
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    config = load_config(args.config, args.overrides)
    splits = read_training_splits(config.data)
    test = read_test_split(config.data)
    record: dict = {
        "tag": args.tag,
        "config": args.config,
        "overrides": args.overrides,
        "data_root": str(config.data.root),
        "seed": config.seed,
        "classifier_seed": config.classifier.seed,
    }
    started = time.perf_counter()
    if args.classifier is not None:
        classifier, state = load_classifier(args.classifier)
        record["classifier"] = str(args.classifier)
        f_history = state.get("history", [])
    else:
        classifier, f_history = train_f(config, splits, args.out)
        record["classifier"] = str(args.out / "classifier.pt")
        record["f_seconds"] = time.perf_counter() - started
    record["f_val_top1"] = f_history[-1]["val_top1_cls"] if f_history else None
    if isinstance(classifier, EmbeddingNet):
        # An embedding has no class weights, so no CAM: the whole-image map scores f's top-1.
        whole = evaluate_maps(_whole_image_maps, classifier, test, config, "cpu")
        record["f_test_top1"] = whole.metrics["top1_cls"]
        record["cam_gt_known"] = None
        _log(f"f test top-1 {record['f_test_top1']:.1f}  (val {record['f_val_top1']})")
    else:
        cam = evaluate_maps(cam_maps(classifier), classifier, test, config, "cpu")
        record["f_test_top1"] = cam.metrics["top1_cls"]
        record["cam_gt_known"] = cam.metrics["gt_known_loc"]
        _log(
            f"f test top-1 {record['f_test_top1']:.1f}  (val {record['f_val_top1']})  "
            f"CAM GT-known {record['cam_gt_known']:.1f}"
        )
    if not args.no_g:
        for row_name in args.rows.split(","):
            row_config = config.model_copy(deep=True)
            if row_name == "no-reg":
                row_config.mask.reg = False
            _log(f"--- g row {row_name}")
            row = train_g(row_config, classifier, splits, test, oracle=not args.no_oracle)
            record[row_name] = row
            _log(
                f"{row_name}: selected epoch {row['selected_epoch']}  GT-known "
                f"{row.get('gt_known_selected')}  oracle {row.get('gt_known_oracle')} "
                f"(epoch {row.get('oracle_epoch')})"
            )
    record["seconds"] = time.perf_counter() - started
    args.results.parent.mkdir(parents=True, exist_ok=True)
    with args.results.open("a") as handle:
        handle.write(json.dumps(record, default=str) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
