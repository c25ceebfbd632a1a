"""Checkpoints are data, not code: loading a planted or foreign file runs nothing and
fails with a message that names the file."""

from __future__ import annotations

import builtins
from pathlib import Path

import pytest
import torch
from run_configs import tiny_run_config

from study.cli import main as wsol_main
from wsol.checkpoint import (
    CheckpointError,
    load_classifier,
    load_mask_generator_state,
    load_mask_state,
    save_classifier,
    save_mask_state,
)
from wsol.compute import make_optimizer
from wsol.methods import build_mask_generator, method_of


class _Planted:
    """Unpickling this object runs code: it creates ``marker``."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (builtins.exec, (f"open({str(self.marker)!r}, 'w').close()",))


def _plant(path: Path, kind: str, marker: Path) -> Path:
    torch.save({"format": 1, "kind": kind, "model": {}, "payload": _Planted(marker)}, path)
    return path


@pytest.mark.parametrize(
    "load, kind",
    [(load_classifier, "classifier"), (load_mask_state, "mask_generator")],
    ids=["classifier", "mask_generator"],
)
def test_a_planted_pickle_runs_nothing_and_is_refused_by_name(load, kind, tmp_path: Path) -> None:
    marker = tmp_path / "pwned"
    path = _plant(tmp_path / "planted.pt", kind, marker)
    with pytest.raises(CheckpointError, match=r"planted\.pt"):
        load(path)
    assert not marker.exists()


def test_train_with_a_planted_classifier_exits_2_and_runs_nothing(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    marker = tmp_path / "pwned"
    planted = _plant(tmp_path / "classifier.pt", "classifier", marker)
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_run_config(synthetic_root).model_dump_json())
    code = wsol_main(
        [
            "train",
            "--config",
            str(config),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--classifier",
            str(planted),
        ]
    )
    assert code == 2 and not marker.exists()
    assert "classifier.pt" in capsys.readouterr().err


def test_a_g_checkpoint_given_as_classifier_is_refused_with_exit_2(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tiny_run_config(synthetic_root)
    generator = build_mask_generator(config.mask.model_copy(update={"pretrained": False}))
    optimizer = make_optimizer(generator.parameters(), "adam", 1e-3, 0.9, 0.0)
    save_mask_state(tmp_path / "mask.pt", generator, optimizer, 1, config, [], [])
    path = tmp_path / "tiny.yaml"
    path.write_text(config.model_dump_json())
    code = wsol_main(
        [
            "train",
            "--config",
            str(path),
            "--out",
            str(tmp_path / "run"),
            "--no-progress",
            "--classifier",
            str(tmp_path / "mask.pt"),
        ]
    )
    assert code == 2
    assert "not a classifier checkpoint" in capsys.readouterr().err


def test_checkpoints_round_trip_under_weights_only_loading(
    synthetic_root: Path, tmp_path: Path
) -> None:
    import numpy as np

    config = tiny_run_config(synthetic_root)
    f = method_of(config).build_f(config.classifier, 3)
    save_classifier(tmp_path / "classifier.pt", f, config, ["a", "b", "c"], [{"epoch": 1}])
    loaded, state = load_classifier(tmp_path / "classifier.pt")
    assert state["class_names"] == ["a", "b", "c"]
    assert all(
        torch.equal(a, b)
        for a, b in zip(loaded.state_dict().values(), f.state_dict().values(), strict=True)
    )

    generator = build_mask_generator(config.mask.model_copy(update={"pretrained": False}))
    optimizer = make_optimizer(generator.parameters(), "adam", 1e-3, 0.9, 0.0)
    maps = np.arange(2 * 4 * 4, dtype=np.uint8).reshape(2, 4, 4)
    visuals = [{"epoch": 1, "maps": maps, "boxes": [(0, 0, 3, 3), (1, 1, 2, 2)]}]
    history = [{"epoch": 1, "val_s_score": 0.5, "excluded_reason": None}]
    save_mask_state(tmp_path / "mask.pt", generator, optimizer, 1, config, history, visuals)
    _, state = load_mask_generator_state(tmp_path / "mask.pt")
    assert state["history"] == history
    (visual,) = state["visuals"]
    assert isinstance(visual["maps"], np.ndarray) and np.array_equal(visual["maps"], maps)
    assert visual["boxes"] == [(0, 0, 3, 3), (1, 1, 2, 2)]
