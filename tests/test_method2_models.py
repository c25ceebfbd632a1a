"""Method II's embedding network f and its config: the 512 -> 200 projection, nearest
class-mean classification, the checkpoint round trip, the method/network validation, and
the classifier key that tells a Siamese embedding from a softmax classifier."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from study.spec import classifier_key
from wsol.checkpoint import load_classifier, save_classifier
from wsol.config import ConfigError, RunConfig, apply_overrides, config_from_dict
from wsol.loop import train_mask
from wsol.methods import method_of
from wsol.models import (
    Classifier,
    ClassMeansMissingError,
    EmbeddingNet,
    top1_classes,
)

METHOD2 = {"mask": {"method": 2}}


def test_embedding_projects_the_pooled_512_features_to_embedding_dim() -> None:
    torch.manual_seed(0)
    network = EmbeddingNet(4, backbone="resnet18", small_input_stem=True)
    assert network.feature_dim == 512 and network.projection.in_features == 512
    assert network(torch.randn(2, 3, 32, 32)).shape == (2, 200)
    assert EmbeddingNet(4, embedding_dim=16, small_input_stem=True).embed(
        torch.randn(1, 3, 32, 32)
    ).shape == (1, 16)


def test_classification_is_by_the_nearest_class_mean() -> None:
    network = EmbeddingNet(3, embedding_dim=2, small_input_stem=True)
    embeddings = torch.tensor([[0.0, 0.0], [2.0, 0.0], [10.0, 0.0], [10.0, 2.0]])
    network.set_class_means(embeddings, torch.tensor([0, 0, 2, 2]))  # class 1: no image
    assert network.class_means.tolist() == [[1.0, 0.0], [0.0, 0.0], [10.0, 1.0]]
    assert network.class_counts.tolist() == [2, 0, 2]
    queries = torch.tensor([[0.0, 0.0], [7.0, 0.0]])
    logits = network.logits_from_embeddings(queries)
    # Minus the distances; a class without training images is never predicted.
    assert logits[0, 0].item() == pytest.approx(-1.0)
    assert logits[1, 2].item() == pytest.approx(-((9.0 + 1.0) ** 0.5))
    assert logits[:, 1].tolist() == [float("-inf")] * 2
    assert logits.argmax(1).tolist() == [0, 2]


def test_predict_without_class_means_says_how_to_get_them() -> None:
    network = EmbeddingNet(3, embedding_dim=4, small_input_stem=True).eval()
    with pytest.raises(ClassMeansMissingError, match="class means"):
        network.predict(torch.randn(1, 3, 32, 32))


def test_top1_classes_asks_either_kind_of_network() -> None:
    torch.manual_seed(0)
    images = torch.randn(3, 3, 32, 32)
    classifier = Classifier(4, small_input_stem=True).eval()
    assert top1_classes(classifier, images).tolist() == classifier(images).argmax(1).tolist()
    network = EmbeddingNet(4, embedding_dim=8, small_input_stem=True).eval()
    with torch.no_grad():
        embeddings = network(images)
    network.set_class_means(embeddings, torch.tensor([2, 0, 3]))
    assert top1_classes(network, images).tolist() == [2, 0, 3]


def test_saved_embedding_network_loads_with_its_class_means(tmp_path: Path) -> None:
    config = config_from_dict(
        {
            "classifier": {
                "embedding_dim": 8,
                "pretrained": False,
                "small_input_stem": True,
            },
            "mask": {"method": 2},
        }
    )
    network = method_of(config).build_f(config.classifier, 3)
    assert isinstance(network, EmbeddingNet) and network.embedding_dim == 8
    network.set_class_means(torch.eye(3, 8), torch.tensor([0, 1, 2]))
    save_classifier(tmp_path / "classifier.pt", network, config, ["a", "b", "c"], [])

    loaded, state = load_classifier(tmp_path / "classifier.pt")

    assert isinstance(loaded, EmbeddingNet) and state["kind"] == "classifier"
    assert torch.equal(loaded.class_means, torch.eye(3, 8))
    assert not loaded.training and not any(p.requires_grad for p in loaded.parameters())
    images = torch.randn(2, 3, 32, 32)
    assert torch.equal(loaded.predict(images), network.eval().predict(images))


@pytest.mark.parametrize("method, kind", [(1, "softmax"), (2, "embedding")])
def test_the_kind_of_f_follows_mask_method(method: int, kind: str) -> None:
    config = config_from_dict({"mask": {"method": method}})
    assert config.classifier_kind == kind
    assert isinstance(
        method_of(config).build_f(config.classifier.model_copy(update={"pretrained": False}), 3),
        EmbeddingNet if method == 2 else Classifier,
    )


def test_classifier_kind_is_refused_and_the_error_points_at_mask_method() -> None:
    with pytest.raises(ConfigError) as error:
        config_from_dict({"classifier": {"kind": "embedding"}})
    assert "classifier.kind" in str(error.value) and "mask.method" in str(error.value)


def test_a_checkpoint_written_with_classifier_kind_still_loads(tmp_path: Path) -> None:
    config = config_from_dict({**METHOD2, "classifier": {"pretrained": False, "embedding_dim": 8}})
    network = method_of(config).build_f(config.classifier, 3)
    network.set_class_means(torch.eye(3, 8), torch.tensor([0, 1, 2]))
    save_classifier(tmp_path / "classifier.pt", network, config, ["a", "b", "c"], [])
    state = torch.load(tmp_path / "classifier.pt", weights_only=False)
    state["config"]["classifier"]["kind"] = "embedding"  # as written before mask.method decided
    torch.save(state, tmp_path / "classifier.pt")
    loaded, _ = load_classifier(tmp_path / "classifier.pt")
    assert isinstance(loaded, EmbeddingNet)


def test_method2_config_is_reachable_by_dotted_overrides() -> None:
    raw = apply_overrides(
        {},
        [
            "mask.method=2",
            "mask.inner=false",
            "classifier.embedding_dim=64",
        ],
    )
    config = config_from_dict(raw)
    assert config.mask.method == 2 and config.mask.inner is False and config.mask.outer
    assert config.classifier.embedding_dim == 64 and config.classifier.triplet_margin == 1.0


def test_training_g_against_the_wrong_kind_of_f_is_refused(synthetic_root: Path) -> None:
    config = config_from_dict({**METHOD2, "data": {"root": str(synthetic_root)}})
    with pytest.raises(ValueError, match=r"mask.method=2.*Classifier"):
        train_mask(config, Classifier(3, small_input_stem=True), splits=None)  # type: ignore[arg-type]


def test_classifier_key_tells_an_embedding_network_from_a_softmax_classifier() -> None:
    softmax = RunConfig()
    embedding = config_from_dict(METHOD2)
    assert classifier_key(embedding) != classifier_key(softmax)
    # Embedding-only fields change the Siamese f, and only it.
    wider = config_from_dict({**METHOD2, "classifier": {"embedding_dim": 128}})
    assert classifier_key(wider) != classifier_key(embedding)
    assert classifier_key(RunConfig(classifier={"embedding_dim": 128})) == classifier_key(softmax)
    # g's switches never change f.
    no_inner = config_from_dict({**METHOD2, "mask": {"method": 2, "inner": False}})
    assert classifier_key(no_inner) == classifier_key(embedding)
