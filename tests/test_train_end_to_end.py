"""Method I end to end on a tiny synthetic dataset: f, then g, with S-score selection."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_configs import tiny_run_config

from wsol.data import read_training_splits
from wsol.local_run import run_local
from wsol.loop import train_classifier, train_mask


@pytest.fixture(scope="module")
def trained_classifier(synthetic_root: Path):
    torch.set_num_threads(2)
    config = tiny_run_config(synthetic_root)
    splits = read_training_splits(config.data)
    classifier, history = train_classifier(config, splits)
    return config, splits, classifier, history


def test_both_loss_terms_off_is_refused(trained_classifier) -> None:
    config, splits, classifier, _ = trained_classifier
    config = config.model_copy(
        update={"mask": config.mask.model_copy(update={"ce": False, "reg": False})}
    )
    with pytest.raises(ValueError, match="nothing to minimise"):
        train_mask(config, classifier, splits)


def test_run_never_reads_the_test_split(synthetic_root: Path, tmp_path: Path) -> None:
    import shutil

    root = tmp_path / "cub"
    shutil.copytree(synthetic_root, root)
    split = dict(line.split() for line in (root / "train_test_split.txt").read_text().splitlines())
    paths = dict(line.split() for line in (root / "images.txt").read_text().splitlines())
    for image_id, is_train in split.items():
        if is_train == "0":
            (root / "images" / paths[image_id]).unlink()
    config = tiny_run_config(root).model_copy(
        update={"mask": tiny_run_config(root).mask.model_copy(update={"epochs": 1})}
    )
    config = config.model_copy(
        update={"classifier": config.classifier.model_copy(update={"epochs": 1})}
    )
    printed: list[str] = []
    result = run_local(config, tmp_path / "run", progress=False, log=printed.append)
    assert result.selection.epoch == 1
    # The diagnostics come from validation numbers alone (the test images are gone).
    import json

    written = json.loads((tmp_path / "run" / "diagnostics.json").read_text())
    assert written["num_classes"] == 3 and written["f_val_top1"] is not None
    assert written == result.diagnostics.to_dict()
    assert any(
        line.startswith("diagnostics (validation only): f validation top-1") for line in printed
    )
