"""timm-style: every backbone variant, forward, backward, shapes and NaNs on tiny inputs."""

from __future__ import annotations

import pytest
import torch

from wsol.models import BACKBONE_NAMES, Classifier, MaskGenerator, WeightsUnavailableError
from wsol.models.backbones import build_resnet


@pytest.mark.parametrize("encoder", BACKBONE_NAMES)
def test_mask_generator_outputs_input_size_in_unit_range_and_backpropagates(encoder: str) -> None:
    torch.manual_seed(0)
    generator = MaskGenerator(encoder)
    images = torch.randn(2, 3, 32, 64, requires_grad=True)
    masks = generator(images)
    assert masks.shape == (2, 1, 32, 64)
    assert torch.isfinite(masks).all()
    assert masks.min() >= 0 and masks.max() <= 1
    masks.mean().backward()
    assert images.grad is not None and torch.isfinite(images.grad).all()
    assert all(p.grad is not None for p in generator.decoder.parameters())


@pytest.mark.parametrize("size", [(32, 32), (64, 96), (96, 64)])
def test_mask_generator_keeps_any_size_divisible_by_32(size: tuple[int, int]) -> None:
    masks = MaskGenerator("resnet18").eval()(torch.randn(1, 3, *size))
    assert masks.shape[-2:] == size


def test_mask_generator_refuses_sizes_not_divisible_by_32() -> None:
    with pytest.raises(ValueError, match="divisible by 32"):
        MaskGenerator("resnet18")(torch.randn(1, 3, 48, 64))


def test_mask_generator_decoder_is_five_blocks_of_two_convs_bn_relu_then_sigmoid() -> None:
    generator = MaskGenerator("resnet18")
    assert len(generator.decoder) == 5
    activations = [type(block.activation).__name__ for block in generator.decoder]
    assert activations == ["ReLU"] * 4 + ["Sigmoid"]
    for block in generator.decoder:
        assert block.conv1.kernel_size == (3, 3) and block.conv1.padding == (1, 1)
        assert block.conv2.kernel_size == (3, 3) and block.conv2.padding == (1, 1)
        assert block.norm.num_features == block.conv2.out_channels
    assert generator.decoder[-1].conv2.out_channels == 1


@pytest.mark.parametrize("backbone", BACKBONE_NAMES)
@pytest.mark.parametrize("small_input_stem", [False, True])
def test_classifier_forward_backward_and_feature_map(backbone: str, small_input_stem: bool) -> None:
    torch.manual_seed(0)
    classifier = Classifier(5, backbone, small_input_stem=small_input_stem)
    images = torch.randn(2, 3, 64, 64)
    logits = classifier(images)
    assert logits.shape == (2, 5) and torch.isfinite(logits).all()
    logits.sum().backward()
    assert torch.isfinite(classifier.fc.weight.grad).all()
    features = classifier.features(images)
    # The small stem skips one stride-2 step and the max-pool: 4x the side.
    assert features.shape[-1] == (4 if small_input_stem else 2)
    assert features.shape[1] == classifier.fc.in_features


def test_pretrained_weights_unavailable_names_weights_and_cache(monkeypatch, tmp_path) -> None:
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch-home"))

    def offline(*args, **kwargs):
        raise OSError("network is unreachable")

    monkeypatch.setattr("torch.hub.load_state_dict_from_url", offline)
    with pytest.raises(WeightsUnavailableError) as error:
        build_resnet("resnet18", pretrained=True)
    message = str(error.value)
    assert "ResNet18_Weights.IMAGENET1K_V1" in message
    assert str(tmp_path / "torch-home" / "hub" / "checkpoints") in message


def test_weights_path_loads_a_local_state_dict(tmp_path) -> None:
    torch.manual_seed(1)
    source = build_resnet("resnet18")
    path = tmp_path / "r18.pth"
    torch.save(source.state_dict(), path)
    loaded = build_resnet("resnet18", weights_path=path)
    assert torch.equal(loaded.conv1.weight, source.conv1.weight)


def test_weights_path_missing_file_is_a_clear_error(tmp_path) -> None:
    with pytest.raises(WeightsUnavailableError, match="does not exist"):
        build_resnet("resnet18", weights_path=tmp_path / "nope.pth")
