"""Method I end to end on a tiny synthetic dataset: f, then g, with S-score selection."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_configs import tiny_run_config

from study.cli import main as wsol_main
from wsol.data import read_training_splits
from wsol.local_run import run_local
from wsol.train import (
    load_mask_state,
    select_epoch,
    train_classifier,
    train_mask,
)


@pytest.fixture(scope="module")
def trained_classifier(synthetic_root: Path):
    torch.set_num_threads(2)
    config = tiny_run_config(synthetic_root)
    splits = read_training_splits(config.data)
    classifier, history = train_classifier(config, splits)
    return config, splits, classifier, history


def test_classifier_reports_validation_accuracy_every_epoch(trained_classifier) -> None:
    _, _, classifier, history = trained_classifier
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(0 <= row["val_top1_cls"] <= 100 for row in history)
    assert not classifier.training
    assert not any(p.requires_grad for p in classifier.parameters())


def test_mask_training_reports_s_score_first_every_epoch_and_keeps_the_max_s_checkpoint(
    trained_classifier, tmp_path: Path
) -> None:
    config, splits, classifier, _ = trained_classifier
    reports, saved = [], {}
    best = -2.0

    def on_epoch(report, save) -> None:
        nonlocal best
        reports.append(report)
        assert next(iter(report.metrics)) == "val_s_score"
        if report.metrics["selection_score"] > best:
            best = report.metrics["selection_score"]
            save(tmp_path / "selected.pt")
            saved["epoch"] = report.epoch

    result = train_mask(config, classifier, splits, on_epoch)
    assert [r.epoch for r in reports] == [1, 2, 3]
    for report in reports:
        assert 0.0 <= report.metrics["val_s_score"] <= 1.0
        assert {"val_ce", "val_reg", "val_mask_mean", "val_gt_known_loc"} <= set(report.metrics)
        assert report.visual_maps.shape[0] == 2
    expected = select_epoch(result.history)
    assert result.selection.epoch == expected.epoch == saved["epoch"]
    assert load_mask_state(tmp_path / "selected.pt")["epoch"] == expected.epoch
    selectable = [r for r in result.history if not r["excluded_reason"]]
    if selectable:
        assert expected.s_score == max(r["val_s_score"] for r in selectable)


def test_same_seed_gives_the_same_s_scores_and_resume_matches_uninterrupted(
    trained_classifier, tmp_path: Path
) -> None:
    config, splits, classifier, _ = trained_classifier
    config = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 2})})
    full = train_mask(config, classifier, splits)
    again = train_mask(config, classifier, splits)
    assert [r["val_s_score"] for r in full.history] == [r["val_s_score"] for r in again.history]

    first = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 1})})
    train_mask(first, classifier, splits, lambda report, save: save(tmp_path / "last.pt"))
    resumed = train_mask(
        config, classifier, splits, resume_state=load_mask_state(tmp_path / "last.pt")
    )
    assert [r["val_s_score"] for r in resumed.history] == [r["val_s_score"] for r in full.history]


def test_both_loss_terms_off_is_refused(trained_classifier) -> None:
    config, splits, classifier, _ = trained_classifier
    config = config.model_copy(
        update={"mask": config.mask.model_copy(update={"ce": False, "reg": False})}
    )
    with pytest.raises(ValueError, match="nothing to minimise"):
        train_mask(config, classifier, splits)


def test_train_command_writes_the_run_folder(synthetic_root: Path, tmp_path: Path) -> None:
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(tiny_run_config(synthetic_root).model_dump_json())
    out = tmp_path / "run"
    code = wsol_main(
        [
            "train",
            "--config",
            str(config_path),
            "--out",
            str(out),
            "--no-progress",
            "--mask-epochs",
            "2",
            "--set",
            "classifier.epochs=1",
        ]
    )
    assert code == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "selected.pt",
        "last.pt",
        "selection.json",
        "weight_maps.png",
        "classifier/classifier.pt",
        "classifier/metrics.jsonl",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    selection = json.loads((out / "selection.json").read_text())
    assert selection["epoch"] == select_epoch(rows).epoch
    assert load_mask_state(out / "selected.pt")["epoch"] == selection["epoch"]
    # A second run into the same folder must not silently overwrite it.
    again = ["train", "--config", str(config_path), "--out", str(out), "--no-progress"]
    assert wsol_main(again) == 2


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
    result = run_local(config, tmp_path / "run", progress=False, log=lambda _: None)
    assert result.selection.epoch == 1
