"""benchmarks/eq1_mask_costs.py: the share of images whose empty mask is cheaper under
Eq. 1, on hand-made costs, and the per-image costs of an (untrained) f on tiny data."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.run_configs import tiny_run_config
from tests.scripts import load_benchmark
from wsol.checkpoint import save_classifier
from wsol.data import read_training_splits
from wsol.methods import method_of


@pytest.fixture(scope="module")
def costs_module():
    return load_benchmark("eq1_mask_costs")


def test_the_empty_mask_is_cheaper_exactly_where_lambda_times_area_exceeds_the_ce_gap(
    costs_module,
) -> None:
    # Image 1: gap CE(empty) - CE(GT) = 1.0 over area 0.1 -> empty cheaper for lambda > 10.
    # Image 2: gap 1.0 over area 0.5 -> for lambda > 2. Image 3: f is better on the empty
    # image than on the object (gap -0.5): the empty mask is cheaper for every lambda.
    costs = {"area": [0.1, 0.5, 0.2], "ce_gt": [0.0, 0.5, 1.0], "ce_empty": [1.0, 1.5, 0.5]}
    row = costs_module.summarize("hand-made", costs, [0.0, 1.0, 4.0, 20.0])
    assert row["images"] == 3 and row["median_area"] == 0.2 and row["max_area"] == 0.5
    assert row["median_ce_gt"] == 0.5 and row["median_ce_empty"] == 1.0
    shares = [row[f"empty_cheaper_lam{lam:g}"] for lam in (0.0, 1.0, 4.0, 20.0)]
    assert shares == pytest.approx([100 / 3, 100 / 3, 200 / 3, 100.0])


def test_costs_of_a_saved_f_cover_every_validation_image_with_the_segmentation_area(
    costs_module, synthetic_root: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    config = tiny_run_config(synthetic_root)
    f = method_of(config).build_f(config.classifier, 3)
    save_classifier(tmp_path / "classifier.pt", f, config, ["a", "b", "c"], [])
    costs = costs_module.mask_costs(tmp_path / "classifier.pt", synthetic_root, batch_size=4)
    validation = read_training_splits(config.data).val
    assert len(costs["area"]) == len(costs["ce_gt"]) == len(costs["ce_empty"]) == len(validation)
    assert all(0.0 < area < 1.0 for area in costs["area"])  # every synthetic image has a mask
    assert all(ce >= 0.0 for ce in costs["ce_gt"] + costs["ce_empty"])
    # The empty mask gives f one and the same (all-zero) input for every image; the GT
    # mask shows it the object, so the two costs differ.
    assert costs["ce_gt"] != costs["ce_empty"]
