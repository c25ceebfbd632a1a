"""Method II end to end on the tiny synthetic dataset (CPU, 32 px): the Siamese embedding
f with Eq. 2, then g with L_inner + L_outer + lambda * R, validated by S-score every epoch
and selected by it, through the same entry points and run folder as Method I."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_configs import tiny_run_config

from wsol.config import RunConfig
from wsol.data import read_training_splits
from wsol.loop import train_classifier, train_mask
from wsol.models import EmbeddingNet


def tiny_method2_config(root: Path) -> RunConfig:
    return tiny_run_config(
        root,
        name="tiny-method2",
        classifier={"embedding_dim": 32},
        mask={"method": 2},
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
