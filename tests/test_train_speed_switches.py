"""The speed switches in the training loops: what they change and what they must not."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from run_configs import tiny_run_config

from study.spec import classifier_key
from wsol.compute import Runtime, make_optimizer
from wsol.config import ConfigError, RunConfig, config_from_dict
from wsol.data import make_dataset, read_training_splits
from wsol.data.transforms import normalize
from wsol.loop import train_classifier, train_mask
from wsol.losses import method1_loss
from wsol.methods import classifier_train_step, method1_train_step, method2_train_step
from wsol.models import Classifier, EmbeddingNet, MaskGenerator


def tiny(root: Path, **sections: dict) -> RunConfig:
    """The shared tiny config, one f epoch and two g epochs: these tests compare runs."""
    sections.setdefault("classifier", {})
    sections.setdefault("mask", {})
    sections["classifier"] = {"epochs": 1, **sections["classifier"]}
    sections["mask"] = {"epochs": 2, **sections["mask"]}
    return tiny_run_config(root, **sections)


@pytest.fixture(scope="module")
def classifier_and_splits(synthetic_root: Path):
    torch.set_num_threads(2)
    config = tiny(synthetic_root)
    splits = read_training_splits(config.data)
    classifier, _ = train_classifier(config, splits)
    return classifier, splits


def nets(seed: int = 0) -> tuple[Classifier, MaskGenerator]:
    torch.manual_seed(seed)
    return Classifier(3, small_input_stem=True), MaskGenerator("resnet18")


# --------------------------------------------------------------------------- config


def test_compute_section_is_validated_and_names_the_field() -> None:
    config = config_from_dict({"compute": {"precision": "bf16", "channels_last": True}})
    assert config.compute.precision == "bf16" and config.compute.channels_last
    assert RunConfig().compute.precision == "fp32"
    with pytest.raises(ConfigError, match=r"compute\.precision"):
        config_from_dict({"compute": {"precision": "fp16"}})
    with pytest.raises(ConfigError, match=r"compute\.speed"):
        config_from_dict({"compute": {"speed": "max"}})
    # torch.compile measured 1.03x on the g step (benchmarks/speed.py --compile): not a switch.
    with pytest.raises(ConfigError, match=r"compute\.compile"):
        config_from_dict({"compute": {"compile": True}})


@pytest.mark.parametrize("value", [-1, "many", True, 1.5])
def test_num_workers_is_a_count_or_auto(value) -> None:
    assert config_from_dict({"data": {"num_workers": "auto"}}).data.num_workers == "auto"
    assert config_from_dict({"data": {"num_workers": 2}}).data.num_workers == 2
    with pytest.raises(ConfigError, match=r"data\.num_workers"):
        config_from_dict({"data": {"num_workers": value}})


def test_classifier_key_follows_precision_only() -> None:
    plain = RunConfig()
    placed = config_from_dict(
        {
            "data": {"num_workers": 3, "cache": True, "cache_dir": "/somewhere"},
            "compute": {"channels_last": True, "cudnn_benchmark": False},
        }
    )
    assert classifier_key(placed) == classifier_key(plain)
    bf16 = config_from_dict({"compute": {"precision": "bf16"}})
    assert classifier_key(bf16) != classifier_key(plain)


# --------------------------------------------------------------------------- the g step


def test_g_step_freezes_f_and_takes_the_target_without_gradients() -> None:
    classifier, mask_generator = nets()
    config = RunConfig.model_validate(
        {"data": {"crop": 32, "resize": 40, "normalization": "per_image"}}
    )
    runtime = Runtime(torch.device("cpu"))
    classifier = runtime.frozen(classifier)
    grad_modes: list[bool] = []
    classifier.register_forward_hook(lambda *_: grad_modes.append(torch.is_grad_enabled()))
    optimizer = make_optimizer(mask_generator.parameters(), "adam", 1e-3, 0.9, 0.0)
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    terms = method1_train_step(classifier, mask_generator, optimizer, images, config, runtime)
    assert grad_modes == [False, True]  # f(I) under no_grad, then f(I*M) with gradients
    assert all(p.grad is None and not p.requires_grad for p in classifier.parameters())
    assert all(p.grad is not None for p in mask_generator.parameters())
    assert not terms.total.requires_grad and torch.isfinite(terms.total)


def test_method2_g_step_freezes_f_and_embeds_the_anchors_once_without_gradients() -> None:
    torch.manual_seed(0)
    embedding = EmbeddingNet(3, embedding_dim=16, small_input_stem=True)
    mask_generator = MaskGenerator("resnet18")
    config = RunConfig.model_validate(
        {
            "data": {"crop": 32, "resize": 40, "normalization": "per_image"},
            "mask": {"method": 2},
        }
    )
    runtime = Runtime(torch.device("cpu"))
    embedding = runtime.frozen(embedding)
    calls: list[tuple[bool, int]] = []
    embedding.register_forward_hook(
        lambda _m, inputs, _o: calls.append((torch.is_grad_enabled(), len(inputs[0])))
    )
    optimizer = make_optimizer(mask_generator.parameters(), "adam", 1e-3, 0.9, 0.0)
    generator = torch.Generator().manual_seed(0)
    triplet = tuple(torch.rand(4, 3, 32, 32, generator=generator) for _ in range(3))
    before = [p.detach().clone() for p in mask_generator.parameters()]
    terms = method2_train_step(embedding, mask_generator, optimizer, triplet, config, runtime)
    # The 4 anchors under no_grad for the target, then every masked image with gradients.
    assert calls[0] == (False, 4) and all(grad for grad, _ in calls[1:])
    assert all(p.grad is None and not p.requires_grad for p in embedding.parameters())
    assert any(
        not torch.equal(b, p) for b, p in zip(before, mask_generator.parameters(), strict=True)
    )
    for term in (terms.total, terms.inner, terms.outer, terms.reg):
        assert not term.requires_grad and torch.isfinite(term)


@pytest.mark.parametrize("normalization", ["per_image", "imagenet"])
def test_reusing_the_normalised_batch_gives_the_same_loss_bit_for_bit(normalization) -> None:
    classifier, mask_generator = nets()
    classifier.eval()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    normalized = normalize(images, normalization)
    masks = mask_generator(normalized)
    target = classifier(normalized).detach()
    kwargs = dict(
        lam=0.5, use_ce=True, use_reg=True, normalization=normalization, apply_to="normalized"
    )
    again = method1_loss(classifier, images, masks, target, **kwargs)
    reused = method1_loss(classifier, images, masks, target, normalized=normalized, **kwargs)
    assert torch.equal(again.total, reused.total) and torch.equal(again.ce, reused.ce)


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_frozen_f_is_placed_in_eval_mode_without_parameter_gradients(precision: str) -> None:
    classifier, _ = nets()
    runtime = Runtime(torch.device("cpu"), precision, channels_last=True)
    frozen = runtime.frozen(classifier)
    assert not frozen.training
    assert not any(p.requires_grad for p in frozen.parameters())
    assert frozen.stem[0].weight.is_contiguous(memory_format=torch.channels_last)
    images = torch.rand(2, 3, 32, 32, requires_grad=True)
    with runtime.autocast():
        frozen(images).float().sum().backward()
    assert images.grad is not None  # gradients still reach the input
    if precision == "fp32":
        assert frozen is classifier
    else:  # weights cast once: a bf16 copy, the caller's f untouched in fp32
        assert frozen is not classifier
        assert {p.dtype for p in frozen.parameters()} == {torch.bfloat16}
        assert {p.dtype for p in classifier.parameters()} == {torch.float32}


def test_a_bf16_copy_of_f_gives_the_outputs_autocast_gives_within_bf16_precision() -> None:
    classifier, _ = nets()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    outputs = {}
    for cast in (False, True):
        runtime = Runtime(torch.device("cpu"), "bf16", cast_frozen=cast)
        frozen = runtime.frozen(classifier)
        with torch.no_grad(), runtime.autocast():
            outputs[cast] = frozen(images).float()
    scale = outputs[False].abs().max().item()
    assert (outputs[True] - outputs[False]).abs().max().item() <= 0.05 * scale


def test_channels_last_step_matches_nchw_step() -> None:
    config = RunConfig.model_validate(
        {"data": {"crop": 32, "resize": 40, "normalization": "per_image"}}
    )
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(3))
    losses = []
    for channels_last in (False, True):
        classifier, mask_generator = nets()
        runtime = Runtime(torch.device("cpu"), channels_last=channels_last)
        classifier = runtime.frozen(classifier)
        mask_generator = runtime.module(mask_generator)
        optimizer = make_optimizer(mask_generator.parameters(), "adam", 1e-3, 0.9, 0.0)
        losses.append(
            [
                method1_train_step(
                    classifier, mask_generator, optimizer, images, config, runtime
                ).total.item()
                for _ in range(2)
            ]
        )
    assert losses[0] == pytest.approx(losses[1], rel=1e-4)


def test_f_step_reports_a_detached_loss_and_trains_f() -> None:
    classifier, _ = nets()
    runtime = Runtime(torch.device("cpu"), "bf16")
    optimizer = make_optimizer(classifier.parameters(), "adam", 1e-3, 0.9, 0.0)
    before = classifier.fc.weight.detach().clone()
    images = torch.rand(4, 3, 32, 32, generator=torch.Generator().manual_seed(4))
    loss = classifier_train_step(
        classifier, optimizer, images, torch.tensor([0, 1, 2, 0]), "per_image", runtime
    )
    assert loss.dtype == torch.float32 and not loss.requires_grad
    assert not torch.equal(before, classifier.fc.weight)


def test_optimizers_are_fused_on_cpu() -> None:
    _, mask_generator = nets()
    for name in ("adam", "sgd"):
        optimizer = make_optimizer(mask_generator.parameters(), name, 1e-3, 0.9, 0.0)
        assert optimizer.param_groups[0]["fused"] is True


# --------------------------------------------------------------------------- whole loops


def test_the_decoded_image_cache_changes_nothing_in_training(
    classifier_and_splits, synthetic_root: Path, tmp_path: Path
) -> None:
    classifier, splits = classifier_and_splits
    histories = []
    for cache in (False, True):
        config = tiny(synthetic_root, data={"cache": cache, "cache_dir": str(tmp_path)})
        histories.append(train_mask(config, classifier, splits).history)
    assert histories[0] == histories[1]
    assert [p for p in tmp_path.iterdir() if p.is_dir()]  # the cache was built and used


def test_make_dataset_serves_cached_items(synthetic_root: Path, tmp_path: Path) -> None:
    config = tiny(synthetic_root, data={"cache": True, "cache_dir": str(tmp_path)})
    splits = read_training_splits(config.data)
    cached = make_dataset(splits.val, config.data, train=False, seed=0)
    plain = make_dataset(
        splits.val, config.data.model_copy(update={"cache": False}), train=False, seed=0
    )
    assert cached.cache is not None and plain.cache is None
    assert torch.equal(cached[0]["image"], plain[0]["image"])


def _conv_output_dtypes(run) -> tuple[set[torch.dtype], object]:
    """The dtypes every Conv2d produced while ``run()`` trained (f's and g's convolutions)."""
    dtypes: set[torch.dtype] = set()

    def record(module, _inputs, output) -> None:
        if isinstance(module, torch.nn.Conv2d):
            dtypes.add(output.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(record)
    try:
        result = run()
    finally:
        handle.remove()
    return dtypes, result


def test_bf16_computes_in_bf16_and_reports_fp32_metrics(
    classifier_and_splits, synthetic_root: Path
) -> None:
    classifier, splits = classifier_and_splits
    fp32 = tiny(synthetic_root)
    bf16 = tiny(synthetic_root, compute={"precision": "bf16", "channels_last": True})
    fp32_dtypes, fp32_result = _conv_output_dtypes(lambda: train_mask(fp32, classifier, splits))
    bf16_dtypes, bf16_result = _conv_output_dtypes(lambda: train_mask(bf16, classifier, splits))
    assert fp32_dtypes == {torch.float32}
    assert bf16_dtypes == {torch.bfloat16}  # every convolution ran under autocast
    for row in bf16_result.history:
        for key in ("val_s_score", "val_loss", "train_loss", "val_mask_mean"):
            assert isinstance(row[key], float) and row[key] == row[key], key
    # The arithmetic changed, so the numbers did (not a switch that is silently ignored).
    assert [r["train_loss"] for r in bf16_result.history] != [
        r["train_loss"] for r in fp32_result.history
    ]
    f_dtypes, (trained, history) = _conv_output_dtypes(
        lambda: train_classifier(tiny(synthetic_root, compute={"precision": "bf16"}), splits)
    )
    assert f_dtypes == {torch.bfloat16}
    assert trained.fc.weight.dtype == torch.float32  # weights stay fp32; autocast casts
    assert 0 <= history[-1]["val_top1_cls"] <= 100
