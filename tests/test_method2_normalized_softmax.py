"""Method II's ``classifier.embedding_loss: normalized_softmax``: f's embedding trained by a
cosine softmax over one learned proxy a class, instead of Eq. 2's triplets.

The loss is checked on hand-made embeddings; the option is validated naming the field,
builds the proxies only when asked, survives a checkpoint, leaves the defaults' classifier
keys as they were, and trains end to end, reproducibly, on shuffled batches.
"""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch

from tests.run_configs import tiny_run_config
from wsol.checkpoint import load_classifier, save_classifier
from wsol.config import ConfigError, classifier_key, config_from_dict
from wsol.data import make_dataset, read_training_splits
from wsol.loop import train_classifier
from wsol.losses import normalized_softmax_loss
from wsol.methods import method_of
from wsol.models import EmbeddingNet

SOFTMAX = {"embedding_loss": "normalized_softmax"}


def test_loss_is_the_cross_entropy_of_scaled_cosines_worked_by_hand() -> None:
    # Two proxies on the axes; the embedding (3, 4) has cosines 0.6 and 0.8 to them, and
    # its length does not matter.
    proxies = torch.tensor([[2.0, 0.0], [0.0, 5.0]])
    embeddings = torch.tensor([[3.0, 4.0], [0.6, 0.8]])
    labels = torch.tensor([0, 1])
    scale = 10.0
    first = -math.log(math.exp(6.0) / (math.exp(6.0) + math.exp(8.0)))
    second = -math.log(math.exp(8.0) / (math.exp(6.0) + math.exp(8.0)))
    loss = normalized_softmax_loss(embeddings, labels, proxies, scale)
    assert loss.item() == pytest.approx((first + second) / 2, rel=1e-6)


def test_loss_falls_as_the_embedding_turns_towards_its_proxy_and_has_gradients() -> None:
    proxies = torch.eye(3, 4)
    labels = torch.tensor([2])
    towards = torch.tensor([[0.1, 0.1, 1.0, 0.0]])
    away = torch.tensor([[1.0, 0.1, 0.1, 0.0]])
    assert normalized_softmax_loss(towards, labels, proxies, 16.0) < normalized_softmax_loss(
        away, labels, proxies, 16.0
    )
    embeddings = away.clone().requires_grad_(True)
    learned = proxies.clone().requires_grad_(True)
    normalized_softmax_loss(embeddings, labels, learned, 16.0).backward()
    for tensor in (embeddings, learned):
        assert tensor.grad is not None and torch.isfinite(tensor.grad).all()
        assert tensor.grad.abs().sum() > 0


@pytest.mark.parametrize(
    ("embeddings", "labels", "proxies", "message"),
    [
        (torch.zeros(4), torch.zeros(4, dtype=torch.long), torch.eye(2), r"\(N, D\)"),
        (torch.zeros(3, 2), torch.zeros(2, dtype=torch.long), torch.eye(2), "labels"),
        (torch.zeros(3, 2), torch.zeros(3, dtype=torch.long), torch.eye(3), r"\(C, 2\)"),
    ],
)
def test_loss_refuses_mismatched_shapes(embeddings, labels, proxies, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        normalized_softmax_loss(embeddings, labels, proxies, 16.0)


@pytest.mark.parametrize(
    ("classifier", "message"),
    [
        ({"embedding_loss": "arcface"}, "classifier.embedding_loss"),
        ({**SOFTMAX, "embedding_softmax_scale": 0}, "classifier.embedding_softmax_scale"),
        (
            {**SOFTMAX, "triplet_sampling": "batch_hard", "batch_size": 8},
            "read by embedding_loss 'triplet' only",
        ),
    ],
)
def test_bad_settings_are_refused_naming_the_field(classifier: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict({"classifier": classifier, "mask": {"method": 2}})


def test_fields_at_default_keep_method2_keys_and_non_defaults_get_their_own() -> None:
    method2 = {"mask": {"method": 2}}
    default = classifier_key(config_from_dict(method2))
    spelled_out = {"embedding_loss": "triplet", "embedding_softmax_scale": 16.0}
    assert classifier_key(config_from_dict({"classifier": spelled_out, **method2})) == default
    variants = [SOFTMAX, {**SOFTMAX, "embedding_softmax_scale": 30.0}]
    keys = {classifier_key(config_from_dict({"classifier": c, **method2})) for c in variants}
    assert len(keys) == len(variants) and default not in keys
    method1 = classifier_key(config_from_dict({}))
    assert classifier_key(config_from_dict({"classifier": SOFTMAX})) == method1


def test_proxies_exist_only_under_normalized_softmax_and_survive_a_checkpoint(
    tmp_path: Path,
) -> None:
    plain = EmbeddingNet(3, embedding_dim=8, width=0.25, small_input_stem=True)
    assert plain.class_proxies is None
    assert not any(key.startswith("class_proxies") for key in plain.state_dict())

    config = tiny_run_config(tmp_path, classifier=SOFTMAX, mask={"method": 2})
    f = method_of(config).build_f(config.classifier, 3)
    assert f.class_proxies.shape == (3, config.classifier.embedding_dim)
    f.set_class_means(torch.randn(3, config.classifier.embedding_dim), torch.arange(3))
    f.eval()
    save_classifier(tmp_path / "classifier.pt", f, config, ["a", "b", "c"], [])
    loaded, _ = load_classifier(tmp_path / "classifier.pt")
    torch.testing.assert_close(loaded.class_proxies, f.class_proxies)
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(loaded(images), f(images))


@pytest.fixture(scope="module")
def softmax_run(synthetic_root: Path):
    torch.set_num_threads(2)
    config = tiny_run_config(
        synthetic_root,
        name="tiny-normalized-softmax",
        classifier={"embedding_dim": 16, "batch_size": 8, **SOFTMAX},
        mask={"method": 2},
    )
    splits = read_training_splits(config.data)
    return config, splits, train_classifier(config, splits)


def test_softmax_f_trains_on_full_batches_of_batch_size_images(softmax_run) -> None:
    config, splits, (network, history) = softmax_run
    method = method_of(config, splits)
    train_set = make_dataset(splits.train, config.data, train=True, seed=config.classifier.seed)
    batches = list(method.f_batches(train_set, 1, torch.device("cpu")))
    # As a softmax classifier's loader: shuffled, the last partial batch dropped.
    assert len(batches) == len(splits.train) // 8
    assert {len(batch["label"]) for batch in batches} == {8}
    assert len({batch["label"].tolist().__repr__() for batch in batches}) > 1
    assert [row["epoch"] for row in history] == [1, 2]
    first_loss = history[0]["train_loss"]
    # At the proxies' random init the softmax is near uniform: about log(classes).
    assert 0 < first_loss < 2 * math.log(len(splits.class_names)) + 1
    for row in history:
        assert math.isfinite(row["train_loss"]) and 0 <= row["val_top1_cls"] <= 100
    assert isinstance(network, EmbeddingNet) and network.has_class_means


def test_softmax_f_is_reproducible_from_its_seed(softmax_run) -> None:
    config, splits, (_, history) = softmax_run
    _, again = train_classifier(config, splits)
    assert [row["train_loss"] for row in again] == [row["train_loss"] for row in history]
