"""The f and g loops end to end, for every method: the same entry points, the same
reports, the same selection and resume behaviour, the same run folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_configs import tiny_run_config

from study.cli import main as wsol_main
from wsol.checkpoint import load_classifier, load_mask_state
from wsol.config import RunConfig
from wsol.data import read_training_splits
from wsol.loop import train_classifier, train_mask
from wsol.methods import METHODS
from wsol.models import Classifier, EmbeddingNet
from wsol.selection import select_epoch

# What g's validation reports, in order, per method: S-score first.
VALIDATION_METRICS = {
    1: (
        "val_s_score",
        "val_s_score_se",
        "val_loss",
        "val_ce",
        "val_reg",
        "val_mask_mean",
        "val_box_fraction",
    ),
    2: (
        "val_s_score",
        "val_s_score_se",
        "val_loss",
        "val_inner",
        "val_outer",
        "val_reg",
        "val_mask_mean",
        "val_box_fraction",
    ),
}
F_TYPES = {1: Classifier, 2: EmbeddingNet}


def method_config(root: Path, method: int, **mask: object) -> RunConfig:
    return tiny_run_config(root, name=f"tiny-m{method}", mask={"method": method, **mask})


@pytest.fixture(scope="module", params=sorted(METHODS), ids=lambda m: f"method{m}")
def trained_f(request, synthetic_root: Path):
    torch.set_num_threads(2)
    config = method_config(synthetic_root, request.param)
    splits = read_training_splits(config.data)
    f, history = train_classifier(config, splits)
    return request.param, config, splits, f, history


def test_f_is_the_methods_network_reports_every_epoch_and_comes_back_frozen(trained_f) -> None:
    method, _, _, f, history = trained_f
    assert isinstance(f, F_TYPES[method])
    assert [row["epoch"] for row in history] == [1, 2]
    assert all(0 <= row["val_top1_cls"] <= 100 and row["train_loss"] >= 0 for row in history)
    assert not f.training and not any(p.requires_grad for p in f.parameters())


def test_each_report_carries_the_selection_so_far_and_says_when_it_is_the_new_best(
    trained_f, tmp_path: Path
) -> None:
    method, config, splits, f, _ = trained_f
    reports, saved = [], []

    def on_epoch(report, save) -> None:
        reports.append(report)
        if report.is_best:
            save(tmp_path / "selected.pt")
            saved.append(report.epoch)

    result = train_mask(config, f, splits, on_epoch)

    assert [r.epoch for r in reports] == [1, 2, 3]
    for index, report in enumerate(reports):
        assert (
            tuple(report.metrics)[: len(VALIDATION_METRICS[method])] == (VALIDATION_METRICS[method])
        )
        assert 0.0 <= report.metrics["val_s_score"] <= 1.0
        reported = tuple(name for name in report.metrics if name.startswith("val_"))
        assert reported == METHODS[method].validation_metrics()
        assert report.visual_maps.shape[0] == 2 and len(report.visual_boxes) == 2
        so_far = list(report.history)
        assert [row["epoch"] for row in so_far] == list(range(1, index + 2))
        assert report.selection == select_epoch(so_far)
        moved = index == 0 or report.selection.epoch != reports[index - 1].selection.epoch
        assert report.is_best == moved
    assert result.selection == reports[-1].selection == select_epoch(result.history)
    assert saved[-1] == result.selection.epoch
    assert load_mask_state(tmp_path / "selected.pt")["epoch"] == result.selection.epoch


def test_same_seed_gives_the_same_history_and_resume_matches_uninterrupted(
    trained_f, tmp_path: Path
) -> None:
    _, config, splits, f, _ = trained_f
    config = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 2})})
    full = train_mask(config, f, splits)
    again = train_mask(config, f, splits)
    assert full.history == again.history

    first = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 1})})
    train_mask(first, f, splits, lambda report, save: save(tmp_path / "last.pt"))
    resumed = train_mask(config, f, splits, resume_state=load_mask_state(tmp_path / "last.pt"))
    assert resumed.history == full.history
    assert resumed.selection == full.selection


def test_training_g_against_the_other_methods_f_is_refused(trained_f) -> None:
    method, config, splits, f, _ = trained_f
    other = config.model_copy(
        update={"mask": config.mask.model_copy(update={"method": 3 - method})}
    )
    with pytest.raises(ValueError, match=rf"mask.method={3 - method}.*{type(f).__name__}"):
        train_mask(other, f, splits)


@pytest.mark.parametrize("method", sorted(METHODS), ids=lambda m: f"method{m}")
def test_train_command_writes_the_run_folder(
    method: int, synthetic_root: Path, tmp_path: Path
) -> None:
    config_path = tmp_path / "tiny.yaml"
    config_path.write_text(method_config(synthetic_root, method).model_dump_json())
    out = tmp_path / "run"
    arguments = ["train", "--config", str(config_path), "--out", str(out), "--no-progress"]
    code = wsol_main([*arguments, "--mask-epochs", "2", "--set", "classifier.epochs=1"])
    assert code == 0
    for name in (
        "config.yaml",
        "metrics.jsonl",
        "selected.pt",
        "last.pt",
        "selection.json",
        "diagnostics.json",
        "weight_maps.png",
        "classifier/classifier.pt",
        "classifier/metrics.jsonl",
    ):
        assert (out / name).is_file() and (out / name).stat().st_size > 0, name
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2]
    assert tuple(rows[0])[1 : 1 + len(VALIDATION_METRICS[method])] == VALIDATION_METRICS[method]
    selection = json.loads((out / "selection.json").read_text())
    assert selection == select_epoch(rows).to_dict()
    assert load_mask_state(out / "selected.pt")["epoch"] == selection["epoch"]
    f, _ = load_classifier(out / "classifier" / "classifier.pt")
    assert isinstance(f, F_TYPES[method])
    # A second run into the same folder must not silently overwrite it.
    assert wsol_main(arguments) == 2


@pytest.mark.parametrize("precision", ["fp32", "fp16"])
def test_a_lean_checkpoint_folder_resumes_to_the_same_result(
    trained_f, tmp_path: Path, precision: str
) -> None:
    from wsol.checkpoint import load_checkpoint_folder

    _, config, splits, f, _ = trained_f
    config = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 2})})
    full = train_mask(config, f, splits)
    first = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 1})})
    train_mask(first, f, splits, lambda report, save: save.folder(tmp_path, precision))
    assert (tmp_path / "mask.pt").stat().st_size < (tmp_path / "resume.pt").stat().st_size
    resumed = train_mask(config, f, splits, resume_state=load_checkpoint_folder(tmp_path))
    assert resumed.history == full.history


#: Largest difference of a weight map in [0, 1] between g loaded from fp32 and from fp16
#: weights (measured on tiny g: 4.5e-3 at most, 2.6e-5 on average; a box moves only where
#: a map crosses tau).
FP16_MAP_TOLERANCE = 1e-2


def test_fp16_kept_weights_load_in_fp32_and_give_the_same_maps_within_tolerance(
    trained_f, tmp_path: Path
) -> None:
    from wsol.checkpoint import load_mask_generator

    _, config, splits, f, _ = trained_f
    one = config.model_copy(update={"mask": config.mask.model_copy(update={"epochs": 1})})

    def keep_both(report, save) -> None:
        save.weights(tmp_path / "fp32.pt", "fp32")
        save.weights(tmp_path / "fp16.pt", "fp16")

    train_mask(one, f, splits, keep_both)
    assert (tmp_path / "fp16.pt").stat().st_size < 0.55 * (tmp_path / "fp32.pt").stat().st_size
    g32 = load_mask_generator(tmp_path / "fp32.pt")
    g16 = load_mask_generator(tmp_path / "fp16.pt")
    assert all(p.dtype == torch.float32 for p in g16.parameters())
    images = torch.rand(8, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        difference = (g32(images) - g16(images)).abs().max().item()
    assert 0 < difference <= FP16_MAP_TOLERANCE
