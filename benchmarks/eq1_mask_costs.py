"""Is the empty mask Eq. 1's optimum? Eq. 1's cost at the ground-truth mask and at the
empty mask, per validation image, for a trained f.

    python benchmarks/eq1_mask_costs.py --pair CLASSIFIER.pt DATA_ROOT [--pair ...]
                                        [--lambdas 1 2 4 8] [--out costs.json]

cost(M) = CE(f(I*M), f(I)) + lambda * mean(M) (:func:`wsol.losses.method1_loss`, with the
f checkpoint's own normalisation and ``mask.apply_to``). M = the ground-truth segmentation
(the box where an image has none) or 0. Where lambda * area + CE(GT) > CE(empty), a g that
empties the map has found a cheaper mask than the object: collapse is then what Eq. 1
asks for, not an optimisation failure. Validation images only (the split f and g select
on); the test split is never read.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from study.tables import markdown_table
from wsol.checkpoint import load_classifier, stored_config
from wsol.data import make_dataset, read_training_splits
from wsol.data.transforms import normalize
from wsol.loaders import make_eval_loader
from wsol.losses import method1_loss

DEFAULT_LAMBDAS = (1.0, 2.0, 4.0, 8.0)


def mask_costs(classifier_path: Path, data_root: Path, batch_size: int = 50) -> dict[str, list]:
    """Per validation image of ``data_root``: the ground-truth mask's area (mean, in [0,1])
    and Eq. 1's CE at the ground-truth and at the empty mask, under the f at
    ``classifier_path`` and the data settings it was trained with."""
    classifier, state = load_classifier(classifier_path)
    config = stored_config(state)
    data = config.data.model_copy(update={"root": Path(data_root), "cache": False})
    config = config.model_copy(update={"data": data})
    splits = read_training_splits(data)
    dataset = make_dataset(splits.val, data, train=False, seed=config.seed)
    costs: dict[str, list] = {"area": [], "ce_gt": [], "ce_empty": []}
    with torch.no_grad():
        for batch in make_eval_loader(dataset, batch_size, config, torch.device("cpu")):
            images, masks = batch["image"], batch["mask"].float().clone()
            for index in torch.nonzero(~batch["has_mask"]).flatten().tolist():
                for x0, y0, x1, y1 in batch["boxes"][index].tolist():
                    masks[index, :, y0 : y1 + 1, x0 : x1 + 1] = 1.0
            target = classifier(normalize(images, data.normalization))
            for key, mask in (("ce_gt", masks), ("ce_empty", torch.zeros_like(masks))):
                for index in range(len(images)):
                    terms = method1_loss(
                        classifier,
                        images[index : index + 1],
                        mask[index : index + 1],
                        target[index : index + 1],
                        lam=0.0,
                        use_ce=True,
                        use_reg=False,
                        normalization=data.normalization,
                        apply_to=config.mask.apply_to,
                    )
                    costs[key].append(terms.ce.item())
            costs["area"] += masks.mean(dim=(1, 2, 3)).tolist()
    return costs


def summarize(name: str, costs: dict[str, list], lambdas: Sequence[float]) -> dict[str, Any]:
    """Medians, the largest area, and per lambda the share (%) of images whose empty mask
    costs less than their ground-truth mask."""
    row: dict[str, Any] = {
        "dataset": name,
        "images": len(costs["area"]),
        "median_area": statistics.median(costs["area"]),
        "max_area": max(costs["area"]),
        "median_ce_gt": statistics.median(costs["ce_gt"]),
        "median_ce_empty": statistics.median(costs["ce_empty"]),
    }
    for lam in lambdas:
        cheaper = [
            lam * area + ce_gt > ce_empty
            for area, ce_gt, ce_empty in zip(
                costs["area"], costs["ce_gt"], costs["ce_empty"], strict=True
            )
        ]
        row[f"empty_cheaper_lam{lam:g}"] = 100.0 * sum(cheaper) / len(cheaper)
    return row


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--pair",
        nargs=2,
        action="append",
        required=True,
        metavar=("CLASSIFIER", "DATA_ROOT"),
        help="an f checkpoint and the dataset it was trained on (repeatable)",
    )
    parser.add_argument("--lambdas", nargs="+", type=float, default=list(DEFAULT_LAMBDAS))
    parser.add_argument("--out", type=Path, help="also write the rows as JSON here")
    return parser.parse_args(argv)


def main(args: argparse.Namespace) -> int:
    torch.set_num_threads(1)
    rows = []
    for classifier_path, data_root in args.pair:
        print(f"{classifier_path} on {data_root} (validation split)", flush=True)
        costs = mask_costs(Path(classifier_path), Path(data_root))
        rows.append(summarize(Path(data_root).name, costs, args.lambdas))
    header = ["dataset", "images", "median area", "max area", "median CE at GT", "median CE empty"]
    header += [f"empty cheaper, lambda {lam:g} (%)" for lam in args.lambdas]
    body = [
        [
            row["dataset"],
            row["images"],
            f"{row['median_area']:.3f}",
            f"{row['max_area']:.3f}",
            f"{row['median_ce_gt']:.3f}",
            f"{row['median_ce_empty']:.2f}",
            *(f"{row[f'empty_cheaper_lam{lam:g}']:.1f}" for lam in args.lambdas),
        ]
        for row in rows
    ]
    print(markdown_table(header, body))
    if args.out is not None:
        args.out.write_text(json.dumps(rows, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(parse_args()))
