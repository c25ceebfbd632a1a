"""Method II's from-scratch f options: ``classifier.triplet_sampling: batch_hard`` (P x K
batches, each anchor's hardest triplet) and ``classifier.embedding_batchnorm``.

Each is validated with an error naming the field, reaches f, survives a checkpoint, leaves
the defaults' classifier keys as they were, and trains end to end with seeded batches.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from tests.run_configs import tiny_run_config
from wsol.checkpoint import load_classifier, save_classifier
from wsol.config import ConfigError, classifier_key, config_from_dict
from wsol.data import make_dataset, read_training_splits
from wsol.loop import train_classifier
from wsol.methods import method_of
from wsol.models import EmbeddingNet

BATCH_HARD = {"triplet_sampling": "batch_hard", "batch_size": 8, "triplet_images_per_class": 4}


@pytest.mark.parametrize(
    ("classifier", "message"),
    [
        ({"triplet_sampling": "hardest"}, "classifier.triplet_sampling"),
        ({**BATCH_HARD, "batch_size": 10}, r"batch_size=10 must be a multiple of 4"),
        ({**BATCH_HARD, "batch_size": 4}, r"at least 8"),
        ({**BATCH_HARD, "triplet_images_per_class": 1}, "classifier.triplet_images_per_class"),
        ({**BATCH_HARD, "triplets_per_anchor": 2}, "read by triplet_sampling 'random' only"),
        ({"embedding_batchnorm": "maybe"}, "classifier.embedding_batchnorm"),
    ],
)
def test_bad_batch_hard_settings_are_refused_naming_the_field(
    classifier: dict, message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"classifier": classifier, "mask": {"method": 2}})


def test_new_fields_at_default_keep_method2_keys_and_non_defaults_get_their_own() -> None:
    method2 = {"mask": {"method": 2}}
    default = classifier_key(config_from_dict(method2))
    spelled_out = config_from_dict(
        {
            "classifier": {"triplet_images_per_class": 4, "embedding_batchnorm": False},
            **method2,
        }
    )
    assert classifier_key(spelled_out) == default
    variants = [
        {"triplet_sampling": "batch_hard"},
        {"triplet_sampling": "batch_hard", "triplet_images_per_class": 8},
        {"embedding_batchnorm": True},
    ]
    keys = {classifier_key(config_from_dict({"classifier": c, **method2})) for c in variants}
    assert len(keys) == len(variants) and default not in keys
    # A softmax f does not read them: Method I keys ignore them.
    method1 = classifier_key(config_from_dict({}))
    assert classifier_key(config_from_dict({"classifier": {"embedding_batchnorm": True}})) == (
        method1
    )


def test_embedding_batchnorm_standardises_the_batch_in_training_and_is_off_by_default() -> None:
    torch.manual_seed(0)
    plain = EmbeddingNet(3, embedding_dim=16, width=0.25, small_input_stem=True)
    assert plain.embedding_norm is None
    assert not any(key.startswith("embedding_norm") for key in plain.state_dict())

    net = EmbeddingNet(3, embedding_dim=16, width=0.25, small_input_stem=True, batchnorm=True)
    images = torch.rand(12, 3, 32, 32)
    embeddings = net.train()(images)
    torch.testing.assert_close(embeddings.mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    torch.testing.assert_close(embeddings.var(0, unbiased=False), torch.ones(16), atol=1e-2, rtol=0)

    # Without it, an untrained f's embeddings share one dominant direction: the batch mean
    # is most of each embedding (what the triplet loss then collapses onto).
    def shared_part(batch: torch.Tensor) -> float:
        return (batch.mean(0).norm() / batch.norm(dim=1).mean()).item()

    assert shared_part(plain.train()(images)) > 0.5
    assert shared_part(embeddings) < 1e-4


def test_embedding_batchnorm_reaches_f_and_survives_a_checkpoint(tmp_path: Path) -> None:
    config = tiny_run_config(
        tmp_path,
        classifier={"embedding_batchnorm": True, "normalize_embedding": True},
        mask={"method": 2},
    )
    f = method_of(config).build_f(config.classifier, 3)
    assert isinstance(f.embedding_norm, torch.nn.BatchNorm1d)
    f.train()(torch.randn(6, 3, 32, 32))  # moves the running statistics off their init
    f.eval()
    save_classifier(tmp_path / "classifier.pt", f, config, ["a", "b", "c"], [])
    loaded, _ = load_classifier(tmp_path / "classifier.pt")
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(images), f(images))
    torch.testing.assert_close(loaded(images).norm(dim=1), torch.ones(2))


@pytest.fixture(scope="module")
def batch_hard_run(synthetic_root: Path):
    torch.set_num_threads(2)
    config = tiny_run_config(
        synthetic_root,
        name="tiny-batch-hard",
        classifier={"embedding_dim": 16, "embedding_batchnorm": True, **BATCH_HARD},
        mask={"method": 2},
    )
    splits = read_training_splits(config.data)
    return config, splits, train_classifier(config, splits)


def test_batch_hard_f_trains_on_class_balanced_batches(batch_hard_run) -> None:
    config, splits, (network, history) = batch_hard_run
    method = method_of(config, splits)
    train_set = make_dataset(splits.train, config.data, train=True, seed=config.classifier.seed)
    loader = method.f_batches(train_set, 1, torch.device("cpu"))
    assert len(loader) == len(splits.train) // 8
    for batch in loader:
        labels = batch["label"].reshape(2, 4)
        assert (labels == labels[:, :1]).all() and labels[0, 0] != labels[1, 0]
    assert [row["epoch"] for row in history] == [1, 2]
    for row in history:
        assert torch.isfinite(torch.tensor(row["train_loss"])) and row["train_loss"] >= 0
        assert 0 <= row["val_top1_cls"] <= 100
    assert isinstance(network, EmbeddingNet) and network.has_class_means


def test_batch_hard_f_is_reproducible_from_its_seed(batch_hard_run) -> None:
    config, splits, (_, history) = batch_hard_run
    _, again = train_classifier(config, splits)
    assert [row["train_loss"] for row in again] == [row["train_loss"] for row in history]
