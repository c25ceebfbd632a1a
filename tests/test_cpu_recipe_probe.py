"""benchmarks/cpu_recipe_probe.py: f alone (``--no-g``) for both methods' classifiers. An
embedding f (Method II) has no CAM, so its test top-1 comes from a whole-image map."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.run_configs import tiny_run_config
from tests.scripts import load_benchmark
from wsol.checkpoint import load_classifier
from wsol.config import config_to_yaml
from wsol.data import read_test_split
from wsol.evaluate import evaluate_maps


@pytest.fixture(scope="module")
def probe():
    return load_benchmark("cpu_recipe_probe")


def _random_maps(images: torch.Tensor, class_indices: torch.Tensor) -> torch.Tensor:
    del class_indices
    generator = torch.Generator().manual_seed(0)
    return torch.rand(images.shape[0], *images.shape[-2:], generator=generator)


@pytest.mark.parametrize("method", [1, 2])
def test_f_only_probe_records_f_test_top1_for_both_methods_and_cam_only_for_method_i(
    probe, synthetic_root: Path, tmp_path: Path, method: int
) -> None:
    classifier = {"epochs": 1}
    if method == 2:
        classifier["embedding_loss"] = "normalized_softmax"
    config = tiny_run_config(synthetic_root, classifier=classifier, mask={"method": method})
    config_path = tmp_path / "config.yaml"
    config_path.write_text(config_to_yaml(config))
    results = tmp_path / "probes.jsonl"
    argv = ["--config", str(config_path), "--out", str(tmp_path / "out"), "--no-g"]
    assert probe.main([*argv, "--results", str(results)]) == 0
    (record,) = [json.loads(line) for line in results.read_text().splitlines()]
    if method == 1:
        assert 0.0 <= record["cam_gt_known"] <= 100.0
    else:
        assert record["cam_gt_known"] is None
    # f's top-1 does not depend on the map it was scored with.
    saved, _ = load_classifier(tmp_path / "out" / "classifier.pt", "cpu")
    test = read_test_split(config.data)
    other = evaluate_maps(_random_maps, saved, test, config, "cpu").metrics["top1_cls"]
    assert record["f_test_top1"] == pytest.approx(other)
    assert "full" not in record and "no-reg" not in record
