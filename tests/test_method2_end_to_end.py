"""Method II end to end on the tiny synthetic dataset (CPU, 32 px): the Siamese embedding
f with Eq. 2, then g with L_inner + L_outer + lambda * R, validated by S-score every epoch
and selected by it, through the same entry points and run folder as Method I."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_configs import tiny_run_config

from study.cli import main as wsol_main
from wsol.config import RunConfig
from wsol.data import read_training_splits
from wsol.models import EmbeddingNet
from wsol.train import load_classifier, load_mask_state, select_epoch, train_classifier, train_mask


def tiny_method2_config(root: Path) -> RunConfig:
    return tiny_run_config(
        root,
        name="tiny-method2",
        classifier={"kind": "embedding", "embedding_dim": 32},
        mask={"method": 2},
    )


METHOD2_METRICS = (
    "val_s_score",
    "val_loss",
    "val_inner",
    "val_outer",
    "val_reg",
    "val_mask_mean",
    "val_box_fraction",
    "val_gt_known_loc",
)


@pytest.fixture(scope="module")
def trained_embedding(synthetic_root: Path):
    torch.set_num_threads(2)
    config = tiny_method2_config(synthetic_root)
    splits = read_training_splits(config.data)
    network, history = train_classifier(config, splits)
    return config, splits, network, history


def test_embedding_training_reports_nearest_mean_accuracy_and_keeps_class_means(
    trained_embedding,
) -> None:
    _, splits, network, history = trained_embedding
    assert isinstance(network, EmbeddingNet) and network.embedding_dim == 32
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert 0 <= row["val_top1_cls"] <= 100
        assert row["val_loss"] >= 0 and row["train_loss"] >= 0
    assert not network.training and not any(p.requires_grad for p in network.parameters())
    counts = [sum(s.label == label for s in splits.train) for label in range(3)]
    assert network.class_counts.tolist() == counts


def test_method2_reports_s_score_first_with_its_terms_every_epoch_and_selects_by_s(
    trained_embedding, tmp_path: Path
) -> None:
    config, splits, network, _ = trained_embedding
    reports, saved = [], {}
    best = -2.0

    def on_epoch(report, save) -> None:
        nonlocal best
        reports.append(report)
        if report.metrics["selection_score"] > best:
            best = report.metrics["selection_score"]
            save(tmp_path / "selected.pt")
            saved["epoch"] = report.epoch

    result = train_mask(config, network, splits, on_epoch)

    assert [r.epoch for r in reports] == [1, 2, 3]
    for report in reports:
        assert list(report.metrics)[: len(METHOD2_METRICS)] == list(METHOD2_METRICS)
        assert 0.0 <= report.metrics["val_s_score"] <= 1.0
        assert {"train_loss", "train_inner", "train_outer", "train_reg"} <= set(report.metrics)
        assert report.visual_maps.shape[0] == 2
    expected = select_epoch(result.history)
    assert result.selection.epoch == expected.epoch == saved["epoch"]
    assert load_mask_state(tmp_path / "selected.pt")["epoch"] == expected.epoch


def test_method2_same_seed_same_s_scores_and_resume_matches_uninterrupted(
    trained_embedding, tmp_path: Path
) -> None:
    config, splits, network, _ = trained_embedding
    config = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 2})})
    full = train_mask(config, network, splits)
    again = train_mask(config, network, splits)
    assert [r["val_s_score"] for r in full.history] == [r["val_s_score"] for r in again.history]

    first = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 1})})
    train_mask(first, network, splits, lambda report, save: save(tmp_path / "last.pt"))
    resumed = train_mask(
        config, network, splits, resume_state=load_mask_state(tmp_path / "last.pt")
    )
    assert [r["val_loss"] for r in resumed.history] == [r["val_loss"] for r in full.history]


def test_switched_off_terms_are_reported_and_all_off_is_refused(trained_embedding) -> None:
    config, splits, network, _ = trained_embedding
    without_outer = config.model_copy(
        update={"mask": config.mask.model_copy(update={"outer": False, "epochs": 1})}
    )
    (row,) = train_mask(without_outer, network, splits).history
    # val_loss sums the active terms only.
    assert row["val_loss"] == pytest.approx(row["val_inner"] + row["val_reg"])
    assert row["val_outer"] >= 0

    nothing = config.model_copy(
        update={
            "mask": config.mask.model_copy(update={"inner": False, "outer": False, "reg": False})
        }
    )
    with pytest.raises(ValueError, match=r"mask.inner, mask.outer and mask.reg"):
        train_mask(nothing, network, splits)


def test_train_command_runs_method2_into_the_same_run_folder(
    synthetic_root: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(tiny_method2_config(synthetic_root).model_dump_json())
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
    for name in ("metrics.jsonl", "selected.pt", "selection.json", "weight_maps.png"):
        assert (out / name).is_file(), name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert all("val_inner" in row and "val_outer" in row for row in rows)
    network, _ = load_classifier(out / "classifier" / "classifier.pt")
    assert isinstance(network, EmbeddingNet) and network.has_class_means


def test_test_evaluation_classifies_method2_images_by_the_nearest_class_mean(
    trained_embedding,
) -> None:
    from wsol.data import WsolDataset, build_transform, collate_samples, normalize, read_test_split
    from wsol.evaluate import evaluate_maps, mask_generator_maps
    from wsol.models import MaskGenerator

    config, _, network, _ = trained_embedding
    samples = read_test_split(config.data)
    torch.manual_seed(0)
    mask_generator = MaskGenerator("resnet18")
    result = evaluate_maps(mask_generator_maps(mask_generator), network, samples, config, "cpu")

    dataset = WsolDataset(samples, build_transform(config.data, train=False), config.seed)
    batch = collate_samples([dataset[i] for i in range(len(dataset))])
    with torch.no_grad():
        embeddings = network(normalize(batch["image"], config.data.normalization))
    nearest = torch.cdist(embeddings, network.class_means).argmin(dim=1)
    assert [r.predicted_label for r in result.records] == nearest.tolist()
    expected = 100.0 * (nearest == batch["label"]).float().mean().item()
    assert result.metrics["top1_cls"] == pytest.approx(expected)
