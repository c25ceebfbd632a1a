"""The from-scratch recipe's config options: data.hflip, data.crop_scale, classifier.width,
mask.width, classifier.schedule.

Each is validated with an error naming the field, does what it says, leaves every default
(and so every existing classifier key) as it was, and the schedule resumes exactly.
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from tests.run_configs import tiny_run_config
from wsol.checkpoint import (
    CheckpointError,
    load_classifier,
    load_classifier_state,
    save_classifier,
)
from wsol.compute import make_lr_schedule
from wsol.config import (
    ConfigError,
    DataConfig,
    RunConfig,
    classifier_key,
    config_from_dict,
    load_config,
)
from wsol.data import build_transform, make_dataset, read_training_splits
from wsol.data.transforms import WsolTransform, mask_bounding_box
from wsol.loop import train_classifier
from wsol.models import Classifier, EmbeddingNet

REPO = Path(__file__).resolve().parents[1]

# ------------------------------------------------------------------ validation


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        ({"data": {"hflip": "sometimes"}}, "data.hflip"),
        ({"data": {"crop_scale": [0.8]}}, "data.crop_scale"),
        ({"data": {"crop_scale": [1.0, 0.5]}}, "data.crop_scale"),
        ({"data": {"crop_scale": [0.0, 1.0]}}, "data.crop_scale"),
        ({"data": {"resize": 72, "crop": 64, "crop_scale": [0.8, 1.2]}}, "exceeds data.resize 72"),
        ({"classifier": {"pretrained": False, "width": 0}}, "classifier.width"),
        ({"classifier": {"pretrained": False, "width": 5}}, "classifier.width"),
        ({"classifier": {"schedule": "linear"}}, "classifier.schedule"),
        ({"mask": {"pretrained": False, "width": -1}}, "mask.width"),
    ],
)
def test_bad_values_are_refused_naming_the_field(raw: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        config_from_dict(raw)


def test_a_width_other_than_one_is_refused_with_pretrained_weights() -> None:
    with pytest.raises(ConfigError, match=r"classifier.*width=0.5.*pretrained: true"):
        config_from_dict({"classifier": {"width": 0.5}})  # pretrained defaults to true
    with pytest.raises(ConfigError, match=r"width=0.5.*weights_path"):
        config_from_dict(
            {"classifier": {"width": 0.5, "pretrained": False, "weights_path": "w.pth"}}
        )
    config = config_from_dict({"classifier": {"width": 0.5, "pretrained": False}})
    assert config.classifier.width == 0.5


def test_a_mask_width_other_than_one_is_refused_with_pretrained_weights() -> None:
    with pytest.raises(ConfigError, match=r"mask.*width=0.5.*g's encoder.*mask.pretrained"):
        config_from_dict({"mask": {"width": 0.5}})  # pretrained defaults to true
    with pytest.raises(ConfigError, match=r"width=0.5.*weights_path"):
        config_from_dict({"mask": {"width": 0.5, "pretrained": False, "weights_path": "w.pth"}})
    assert config_from_dict({"mask": {"width": 0.5, "pretrained": False}}).mask.width == 0.5


def test_defaults_are_the_papers_settings() -> None:
    config = RunConfig()
    assert config.data.hflip is True
    assert config.data.crop_scale == (1.0, 1.0)
    assert config.classifier.width == 1.0
    assert config.classifier.schedule == "step"
    assert config.mask.width == 1.0
    assert config.mask.final_norm is True


# ------------------------------------------------------------------ classifier key

#: classifier_key before these fields existed (commit 40ce5cd): stored f's are found by it.
KEYS_BEFORE = {
    "default": "d0a167db28a71dbd",
    "method2": "e3a08d4bf3901581",
    "configs/synthetic_cpu.yaml": "0104500493d2117f",
}


def test_configs_that_leave_the_new_fields_at_default_keep_their_classifier_key() -> None:
    assert classifier_key(RunConfig()) == KEYS_BEFORE["default"]
    assert classifier_key(config_from_dict({"mask": {"method": 2}})) == KEYS_BEFORE["method2"]
    cpu = load_config(REPO / "configs" / "synthetic_cpu.yaml")
    assert classifier_key(cpu) == KEYS_BEFORE["configs/synthetic_cpu.yaml"]
    spelled_out = load_config(
        REPO / "configs" / "synthetic_cpu.yaml",
        [
            "data.hflip=true",
            "data.crop_scale=[1, 1]",
            "classifier.width=1",
            "classifier.schedule=step",
        ],
    )
    assert classifier_key(spelled_out) == KEYS_BEFORE["configs/synthetic_cpu.yaml"]


def test_each_non_default_value_gives_f_its_own_key() -> None:
    path = REPO / "configs" / "synthetic_cpu.yaml"
    variants = [
        [],
        ["data.hflip=false"],
        ["data.crop_scale=[0.75, 1]"],
        ["classifier.width=0.5"],
        ["classifier.width=0.75"],
        ["classifier.schedule=cosine"],
        ["classifier.schedule=onecycle"],
        ["classifier.schedule=onecycle", "classifier.width=0.5", "data.hflip=false"],
    ]
    keys = [classifier_key(load_config(path, overrides)) for overrides in variants]
    assert len(set(keys)) == len(variants)


# ------------------------------------------------------------------ data.hflip


def _asymmetric_image(size: int) -> np.ndarray:
    image = np.zeros((size, size, 3), np.uint8)
    image[:, : size // 4] = 255  # a bright left edge: a flip moves it to the right
    return image


@pytest.mark.parametrize("hflip", [True, False])
def test_hflip_false_never_flips_and_keeps_the_same_crops(hflip: bool) -> None:
    image = _asymmetric_image(40)  # every 32 px crop has a bright left and a dark right edge
    transform = build_transform(DataConfig(resize=40, crop=32, hflip=hflip), train=True)
    with_flips = WsolTransform(40, 32, train=True, hflip=True)
    flips = 0
    for seed in range(40):
        out, _, _ = transform(image, np.zeros((0, 4)), None, np.random.default_rng(seed))
        reference, _, _ = with_flips(image, np.zeros((0, 4)), None, np.random.default_rng(seed))
        flipped = bool(reference[:, -1].mean() > reference[:, 0].mean())
        flips += flipped
        if hflip:
            np.testing.assert_array_equal(out, reference)
        else:  # the same crop, never mirrored
            np.testing.assert_array_equal(out, reference[:, ::-1] if flipped else reference)
    assert 10 <= flips <= 30


def test_hflip_false_turns_off_flips_in_the_training_dataset(synthetic_root: Path) -> None:
    config = DataConfig(root=synthetic_root, resize=64, crop=64, hflip=False)
    samples = read_training_splits(config).train[:6]
    plain = make_dataset(samples, config, train=False, seed=0)
    training = make_dataset(samples, config, train=True, seed=0)
    flipping = make_dataset(samples, config.model_copy(update={"hflip": True}), train=True, seed=0)
    differs = 0
    for epoch in range(3):
        training.set_epoch(epoch)
        flipping.set_epoch(epoch)
        for index in range(len(samples)):  # resize == crop: only a flip could differ
            assert torch.equal(training[index]["image"], plain[index]["image"])
            differs += not torch.equal(flipping[index]["image"], plain[index]["image"])
    assert differs > 0


# ------------------------------------------------------------------ data.crop_scale


def test_crop_scale_one_is_the_papers_crop_draw_for_draw() -> None:
    rng = np.random.default_rng(3)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    paper = WsolTransform(40, 32, train=True)
    spelled_out = build_transform(DataConfig(resize=40, crop=32, crop_scale=(1, 1)), train=True)
    for seed in range(10):
        first, _, _ = paper(image, np.zeros((0, 4)), None, np.random.default_rng(seed))
        second, _, _ = spelled_out(image, np.zeros((0, 4)), None, np.random.default_rng(seed))
        np.testing.assert_array_equal(first, second)


def _dilated(mask: np.ndarray) -> np.ndarray:
    padded = np.pad(mask, 1)
    return np.any(
        [
            padded[1 + dy : 1 + dy + mask.shape[0], 1 + dx : 1 + dx + mask.shape[1]]
            for dy in (-1, 0, 1)
            for dx in (-1, 0, 1)
        ],
        axis=0,
    )


def _eroded(mask: np.ndarray) -> np.ndarray:
    return ~_dilated(~mask)


def test_crop_scale_zooms_and_keeps_box_and_mask_exactly_aligned() -> None:
    """An object of known size: the window's side varies within crop_scale, so the object's
    size in the crop varies inversely, and the box is always the mask's bounding box."""
    size, crop = 72, 32
    image = np.zeros((size, size, 3), np.uint8)
    mask = np.zeros((size, size), bool)
    mask[30:42, 20:50] = True  # a 30 x 12 px object, kept inside every window's reach
    image[mask] = 255
    box = np.array([[20, 30, 49, 41]])
    transform = WsolTransform(size, crop, train=True, hflip=False, crop_scale=(0.75, 2.25))
    object_widths = set()
    for seed in range(40):
        out, boxes, out_mask = transform(image, box, mask, np.random.default_rng(seed))
        assert out.shape == (crop, crop, 3) and out_mask.shape == (crop, crop)
        if out_mask.any():
            assert tuple(boxes[0]) == mask_bounding_box(out_mask)
            # Bilinear image, nearest mask: they may differ only on the object's rim.
            disagree = (out[..., 0] > 127) != out_mask
            rim = _dilated(out_mask) & ~_eroded(out_mask)
            assert not (disagree & ~rim).any()
            object_widths.add(int(out_mask.any(axis=0).sum()))
    # 30 px seen through windows of 24 to 72 px, at 32 px: from ~13 to 32 px wide.
    assert min(object_widths) <= 16 and max(object_widths) >= 28


def test_crop_scale_leaves_evaluation_transforms_alone() -> None:
    rng = np.random.default_rng(0)
    image = rng.integers(0, 256, (40, 40, 3), dtype=np.uint8)
    scaled = build_transform(DataConfig(resize=40, crop=32, crop_scale=(0.5, 1.25)), train=False)
    plain = build_transform(DataConfig(resize=40, crop=32), train=False)
    first, _, _ = scaled(image, np.zeros((0, 4)), None, rng)
    second, _, _ = plain(image, np.zeros((0, 4)), None, rng)
    np.testing.assert_array_equal(first, second)


# ------------------------------------------------------------------ classifier.width


def _parameters(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("backbone", ["resnet18", "resnet50"])
def test_half_width_has_fewer_parameters_and_trains_without_nans(backbone: str) -> None:
    torch.manual_seed(0)
    full = Classifier(3, backbone, small_input_stem=True)
    half = Classifier(3, backbone, small_input_stem=True, width=0.5)
    assert _parameters(half) < 0.3 * _parameters(full)
    assert half.feature_dim == full.feature_dim // 2
    images = torch.randn(2, 3, 32, 32)
    loss = torch.nn.functional.cross_entropy(half(images), torch.tensor([0, 2]))
    loss.backward()
    assert math.isfinite(loss.item())
    assert all(torch.isfinite(p.grad).all() for p in half.parameters() if p.grad is not None)


def test_width_reaches_both_methods_f_and_survives_a_checkpoint(tmp_path: Path) -> None:
    from wsol.methods import method_of

    config = tiny_run_config(tmp_path, classifier={"width": 0.5})
    f = method_of(config).build_f(config.classifier, 3)
    assert f.stem[0].out_channels == 32 and f.feature_dim == 256
    method2 = tiny_run_config(tmp_path, classifier={"width": 0.5}, mask={"method": 2})
    embedding = method_of(method2).build_f(method2.classifier, 3)
    assert isinstance(embedding, EmbeddingNet) and embedding.feature_dim == 256
    save_classifier(tmp_path / "classifier.pt", f, config, ["a", "b", "c"], [])
    loaded, _ = load_classifier(tmp_path / "classifier.pt")
    images = torch.randn(2, 3, 32, 32)
    f.eval()
    torch.testing.assert_close(loaded(images), f(images))


# ------------------------------------------------------------------ mask.width


@pytest.mark.parametrize("width", [0.25, 0.5, 1.0])
def test_mask_width_scales_encoder_and_decoder_and_keeps_a_unit_range_mask(width: float) -> None:
    from wsol.models.mask_generator import DECODER_CHANNELS, MaskGenerator

    torch.manual_seed(0)
    generator = MaskGenerator("resnet18", width=width)
    assert generator.stem[0].out_channels == round(64 * width)
    outputs = [block.conv2.out_channels for block in generator.decoder]
    assert outputs == [round(c * width) for c in DECODER_CHANNELS[:-1]] + [1]
    images = torch.randn(2, 3, 32, 64, requires_grad=True)
    masks = generator(images)
    assert masks.shape == (2, 1, 32, 64) and masks.min() >= 0 and masks.max() <= 1
    masks.mean().backward()
    assert torch.isfinite(images.grad).all()
    if width < 1:
        assert _parameters(generator) < 0.3 * _parameters(MaskGenerator("resnet18"))


def test_final_norm_false_drops_only_the_last_blocks_batch_norm(tmp_path: Path) -> None:
    from wsol.checkpoint import load_mask_generator, save_mask_weights
    from wsol.methods import build_mask_generator

    config = tiny_run_config(tmp_path, mask={"final_norm": False, "width": 0.25})
    generator = build_mask_generator(config.mask).eval()
    norms = [type(block.norm).__name__ for block in generator.decoder]
    assert norms == ["BatchNorm2d"] * 4 + ["Identity"]
    images = torch.randn(2, 3, 32, 32)
    # Without the norm the last convolution's bias moves the whole map: +10 saturates it.
    with torch.no_grad():
        generator.decoder[-1].conv2.bias += 10.0
    assert generator(images).min() > 0.99
    save_mask_weights(tmp_path / "g.pt", generator, 1, config, [])
    torch.testing.assert_close(load_mask_generator(tmp_path / "g.pt")(images), generator(images))
    paper = build_mask_generator(tiny_run_config(tmp_path).mask)
    assert type(paper.decoder[-1].norm).__name__ == "BatchNorm2d"


def test_mask_width_reaches_g_and_survives_its_checkpoint(tmp_path: Path) -> None:
    from wsol.checkpoint import load_mask_generator, save_mask_weights
    from wsol.methods import build_mask_generator

    config = tiny_run_config(tmp_path, mask={"width": 0.25})
    generator = build_mask_generator(config.mask).eval()
    assert generator.stem[0].out_channels == 16
    save_mask_weights(tmp_path / "g.pt", generator, 1, config, [])
    images = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(load_mask_generator(tmp_path / "g.pt")(images), generator(images))


# ------------------------------------------------------------------ classifier.schedule


def _lr_sequence(name: str, epochs: int = 3, steps: int = 4) -> list[float]:
    """The lr of every optimizer step of a run, as the f loop steps the schedule."""
    optimizer = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=0.1, momentum=0.9)
    schedule = make_lr_schedule(
        optimizer, name, epochs=epochs, steps_per_epoch=steps, lr_step=1, lr_gamma=0.5
    )
    rates = []
    for _ in range(epochs):
        for _ in range(steps):
            rates.append(optimizer.param_groups[0]["lr"])
            optimizer.step()
            schedule.after_step()
        schedule.after_epoch()
    assert optimizer.param_groups[0]["momentum"] == 0.9  # onecycle leaves momentum alone
    return rates


def test_step_schedule_multiplies_by_gamma_every_lr_step_epochs() -> None:
    assert _lr_sequence("step") == pytest.approx([0.1] * 4 + [0.05] * 4 + [0.025] * 4)


def test_cosine_schedule_anneals_every_step_from_lr_to_zero() -> None:
    expected = [0.1 * (1 + math.cos(math.pi * t / 12)) / 2 for t in range(12)]
    assert _lr_sequence("cosine") == pytest.approx(expected)


def test_onecycle_schedule_warms_up_to_lr_then_anneals_far_below_it() -> None:
    rates = _lr_sequence("onecycle", epochs=5, steps=4)
    peak = int(np.argmax(rates))
    assert rates[0] == pytest.approx(0.1 / 25)
    assert max(rates) == pytest.approx(0.1, rel=1e-3)
    assert 4 <= peak <= 6  # 30 % of 20 steps
    assert all(a < b for a, b in itertools.pairwise(rates[: peak + 1]))
    assert all(a > b for a, b in itertools.pairwise(rates[peak:]))
    assert rates[-1] < 1e-3 * 0.1


def test_f_resumed_from_an_epoch_checkpoint_matches_an_uninterrupted_run(
    synthetic_root: Path, tmp_path: Path
) -> None:
    config = tiny_run_config(
        synthetic_root,
        classifier={"epochs": 2, "schedule": "onecycle", "batch_size": 4, "width": 0.25},
    )
    full = read_training_splits(config.data)
    # Two steps per epoch: the schedule's state is mid-run at the checkpoint.
    splits = dataclasses.replace(full, train=full.train[::3][:8], val=full.val[:3])
    saved = tmp_path / "epoch1.pt"

    def keep_first(report, save) -> None:
        if report.epoch == 1:
            save(saved)

    uninterrupted, history = train_classifier(config, splits, keep_first)
    state = load_classifier_state(saved)
    assert state["epoch"] == 1 and state["lr_scheduler"]["last_epoch"] == 2
    resumed, resumed_history = train_classifier(config, splits, resume_state=state)
    assert resumed_history == history
    assert history[1]["lr"] != history[0]["lr"]
    theirs = uninterrupted.state_dict()
    for name, mine in resumed.state_dict().items():
        torch.testing.assert_close(mine, theirs[name], msg=name)


# ------------------------------------------------------------------ mask.schedule


def _tiny_g_run(synthetic_root: Path, schedule: str):
    config = tiny_run_config(
        synthetic_root,
        classifier={"epochs": 1, "batch_size": 4, "width": 0.25},
        mask={"epochs": 2, "batch_size": 4, "width": 0.25, "schedule": schedule, "lr": 1e-2},
    )
    full = read_training_splits(config.data)
    splits = dataclasses.replace(full, train=full.train[::3][:8], val=full.val[:3])
    classifier, _ = train_classifier(config, splits)
    return config, splits, classifier


def test_mask_cosine_schedule_anneals_g_and_resumes_exactly(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from wsol.checkpoint import load_mask_state
    from wsol.loop import train_mask

    config, splits, classifier = _tiny_g_run(synthetic_root, "cosine")
    rates, saved = [], tmp_path / "epoch1.pt"

    def record(report, save) -> None:
        rates.append(save._state[1].param_groups[0]["lr"])  # the lr after the epoch
        if report.epoch == 1:
            save(saved)

    uninterrupted = train_mask(config, classifier, splits, record)
    # Two steps an epoch, four in all: cos(pi / 2) halfway, 0 at the end.
    assert rates == pytest.approx([0.5e-2, 0.0], abs=1e-12)
    resumed = train_mask(config, classifier, splits, resume_state=load_mask_state(saved))
    assert resumed.history == uninterrupted.history


def test_mask_constant_schedule_keeps_the_configured_lr(synthetic_root: Path) -> None:
    from wsol.loop import train_mask

    config, splits, classifier = _tiny_g_run(synthetic_root, "constant")
    rates = []
    train_mask(
        config, classifier, splits, lambda r, s: rates.append(s._state[1].param_groups[0]["lr"])
    )
    assert rates == [1e-2, 1e-2]


def test_a_final_classifier_checkpoint_is_not_resumable(tmp_path: Path) -> None:
    config = tiny_run_config(tmp_path)
    save_classifier(tmp_path / "c.pt", Classifier(2, small_input_stem=True), config, ["a", "b"], [])
    with pytest.raises(CheckpointError, match="weights only"):
        load_classifier_state(tmp_path / "c.pt")
