"""An Optuna study keeps its trials in an RDB storage beside the MLflow store (what
optuna-dashboard opens): every finished trial is there with the objective the manifest
records, and ``--resume`` reopens the same Optuna study instead of making another."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import optuna
import pytest
import ray
from ray import tune
from studies import tiny_study

from study.runner import run_study
from study.spec import Study


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _optuna_study(data: Path, storage: Path) -> Study:
    return tiny_study(
        data,
        storage,
        **{
            "rows": {"full": {}},
            "search_space": {"mask.lam": {"loguniform": [0.1, 10.0]}},
            "search": {"algorithm": "optuna", "num_samples": 2, "seed": 3},
            "max_concurrent_trials": 1,
            "base.mask.epochs": 1,
        },
    )


class _InterruptAfterFirstTrial(tune.Callback):
    """Ctrl-C, as a user would press it, once the first trial has finished. Only once:
    Tune pickles its callbacks with the experiment and restores them on --resume."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        if not self.marker.exists():
            self.marker.touch()
            os.kill(os.getpid(), signal.SIGINT)


def _quiet(_: str) -> None:
    pass


def _manifest(storage: Path, name: str) -> dict:
    return json.loads((storage / name / "study.json").read_text())


def test_an_interrupted_then_resumed_optuna_study_has_each_trial_once_in_its_storage(
    synthetic_root: Path, tmp_path: Path
) -> None:
    storage = tmp_path / "studies"
    study = _optuna_study(synthetic_root, storage)
    assert study.optuna_storage() == f"sqlite:///{storage.resolve()}/optuna.db"

    first = run_study(
        study, callbacks=[_InterruptAfterFirstTrial(tmp_path / "interrupted")], log=_quiet
    )
    assert first.interrupted_by == "SIGINT"
    so_far = optuna.load_study(study_name="tiny", storage=study.optuna_storage()).trials
    # Written as trials end, so optuna-dashboard can watch a running study.
    assert [t.state for t in so_far].count(optuna.trial.TrialState.COMPLETE) == 1
    resumed = run_study(study, resume=True, log=_quiet)
    assert resumed.interrupted_by is None

    manifest = _manifest(storage, "tiny")
    assert [t["status"] for t in manifest["trials"]] == ["COMPLETE", "COMPLETE"]
    stored = optuna.load_study(study_name="tiny", storage=study.optuna_storage())
    assert optuna.study.get_all_study_names(study.optuna_storage()) == ["tiny"]
    assert [t.state for t in stored.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    # Each Optuna trial names its Tune trial, with the params and objective of the manifest.
    assert {t.user_attrs["trial_id"]: (t.params, t.value) for t in stored.trials} == {
        t["trial_id"]: (t["params"], t["objective"]) for t in manifest["trials"]
    }
