"""study.tracking: the driver-side MLflow callback, against real Ray Tune runs and a real
`mlflow server` (conftest.mlflow_server) or a local SQLite database."""

from __future__ import annotations

import json
import logging
import socket
import struct
import sys
import tempfile
import time
import zlib
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
import ray
import ray.cloudpickle
from mlflow.tracking import MlflowClient
from ray import tune

from study.preflight import TrackingUnavailableError, check_tracking_uri
from study.tracking import (
    PARENT_RUN_COLOR,
    MlflowStudyCallback,
    StudyInfo,
    TrialInfo,
    run_color,
    study_metrics,
    tag_trials,
)
from study.version import code_version

# Per-row validation S-scores of the toy trainable, epochs 1..3.
S_SCORES = {"full": [0.50, 0.80, 0.70], "no-reg": [0.40, 0.60, 0.90]}
SELECTED_EPOCH = {"full": 2, "no-reg": 3}
PNG_SIZE = (6, 4)  # width, height of the toy weight_maps.png


# ---- the toy study ---------------------------------------------------------------------


def write_png(path: Path, width: int, height: int) -> None:
    """A real 8-bit grayscale PNG (a horizontal ramp), no imaging library needed."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        body = kind + data
        return struct.pack(">I", len(data)) + body + struct.pack(">I", zlib.crc32(body))

    rows = b"".join(
        b"\x00" + bytes(x * 255 // (width - 1) for x in range(width)) for _ in range(height)
    )
    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(rows))
        + chunk(b"IEND", b"")
    )


def toy_trainable(config: dict[str, Any]) -> None:
    """Reports 3 epochs of the study's metrics, each with a checkpoint (mask.pt + figure).

    `fail_after_epoch` + `failures[row]`: raise after that epoch unless the row's marker
    file exists; with `once`, the first failure creates it (a flaky worker), without,
    the trial fails until the test creates it (a bug fixed before a restore).
    A (re)started trial always starts from epoch 1, ignoring its checkpoint, so Tune
    replays epochs the callback has already logged.
    """
    row = config["row"]
    best_epoch, best_score = 0, float("-inf")
    for epoch in (1, 2, 3):
        s_score = S_SCORES[row][epoch - 1]
        if s_score > best_score:
            best_epoch, best_score = epoch, s_score
        metrics = {
            "epoch": epoch,
            "val_s_score": s_score,
            "val_loss": 1.0 / epoch,
            "val_ce": 0.5 / epoch,
            "val_reg": config["model"]["lambda_reg"] * 0.1,
            "val_mask_mean": 0.3,
            "val_box_fraction": 0.4,
            "selection_score": s_score,
            "train_loss": 1.5 / epoch,
            "train_ce": 1.0 / epoch,
            "train_reg": 0.1,
            "excluded_reason": None,
            "selected_epoch": best_epoch,
            "selected_val_s_score": best_score,
            "objective": best_score,
            "note": "not a metric",
        }
        with tempfile.TemporaryDirectory() as checkpoint_dir:
            Path(checkpoint_dir, "mask.pt").write_bytes(b"mask of epoch %d" % epoch)
            write_png(Path(checkpoint_dir, "weight_maps.png"), *PNG_SIZE)
            tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(checkpoint_dir))
        if epoch == config.get("fail_after_epoch"):
            failure = config["failures"][row]
            marker = Path(failure["marker"])
            if not marker.exists():
                if failure["once"]:
                    marker.touch()
                raise RuntimeError(f"injected failure after epoch {epoch}")


def describe_trial(config: dict[str, Any]) -> TrialInfo:
    return TrialInfo(
        row=config["row"],
        params={
            "model.lambda_reg": config["model"]["lambda_reg"],
            "model.encoder": config["model"]["encoder"],
        },
        tags={"spec": "toy.yaml"},
    )


def run_toy_study(
    tmp_path: Path,
    callback: MlflowStudyCallback,
    param_space: dict[str, Any],
    *,
    max_failures: int = 0,
) -> tune.ResultGrid:
    tuner = tune.Tuner(
        toy_trainable,
        param_space=param_space,
        run_config=tune.RunConfig(
            name="toy",
            storage_path=str(tmp_path / "ray_results"),
            callbacks=[callback],
            checkpoint_config=tune.CheckpointConfig(
                num_to_keep=1,
                checkpoint_score_attribute="selection_score",
                checkpoint_score_order="max",
            ),
            failure_config=tune.FailureConfig(max_failures=max_failures),
            verbose=0,
        ),
    )
    return tuner.fit()


def grid_over_rows(**extra: Any) -> dict[str, Any]:
    return {
        "row": tune.grid_search(["full", "no-reg"]),
        "model": {"lambda_reg": 0.5, "encoder": "resnet18"},
        **extra,
    }


@pytest.fixture(scope="module")
def ray_local():
    # Workers cannot import this test module: ship its functions by value.
    module = sys.modules[__name__]
    ray.cloudpickle.register_pickle_by_value(module)
    # address="local": a new instance even if another process's Ray cluster runs here.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield
    finally:
        ray.shutdown()
        ray.cloudpickle.unregister_pickle_by_value(module)


@pytest.fixture(scope="module")
def sqlite_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    """One local SQLite database (in a folder that does not exist yet) for the module;
    tests use distinct experiments. Creating the schema takes seconds, so share it."""
    return f"sqlite:///{tmp_path_factory.mktemp('sqlite') / 'mlruns' / 'mlflow.db'}"


# ---- reading MLflow back ---------------------------------------------------------------


def study_runs(client: MlflowClient, experiment: str) -> tuple[Any, dict[str, Any]]:
    """(the parent run, {row: child run}); asserts there is exactly one parent."""
    experiment_id = client.get_experiment_by_name(experiment).experiment_id
    runs = client.search_runs([experiment_id], max_results=100)
    parents = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(parents) == 1, [run.info.run_name for run in runs]
    by_row = {run.data.tags["row"]: run for run in children}
    assert len(by_row) == len(children), [run.info.run_name for run in children]
    return parents[0], by_row


def metric_steps(client: MlflowClient, run_id: str, key: str) -> list[int]:
    return sorted(metric.step for metric in client.get_metric_history(run_id, key))


# ---- end-to-end with Ray Tune ----------------------------------------------------------


def test_tune_study_on_live_server_logs_parent_runs_metrics_checkpoint_and_figure(
    ray_local: None, mlflow_server: str, tmp_path: Path
) -> None:
    spec_file = tmp_path / "toy.yaml"
    spec_file.write_text("name: toy-study\n")
    callback = MlflowStudyCallback(
        tracking_uri=mlflow_server,
        experiment="wsol-e2e",
        study_name="toy-study",
        state_file=tmp_path / "tracking_state.json",
        describe_trial=describe_trial,
        code_version="test-version",
        study_info=StudyInfo(
            description="Toy: regularizer on/off",
            params={"mask.lam": 1.0, "data.crop": 32},
            files=(str(spec_file),),
            source="wsol study toy.yaml",
        ),
    )
    results = run_toy_study(tmp_path, callback, grid_over_rows())
    assert not results.errors

    client = MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("wsol-e2e")
    # Opens as a model-training experiment (not MLflow 3's GenAI overview), described.
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"
    assert experiment.tags["mlflow.note.content"] == "Toy: regularizer on/off"
    parent, children = study_runs(client, "wsol-e2e")
    assert parent.info.status == "FINISHED"
    assert parent.data.tags["study"] == "toy-study"
    assert parent.data.tags["code_version"] == "test-version"
    assert parent.data.tags["mlflow.note.content"] == "Toy: regularizer on/off"
    assert parent.data.tags["mlflow.runColor"] == PARENT_RUN_COLOR
    assert parent.info.run_name == "toy-study"
    assert parent.data.params == {"mask.lam": "1.0", "data.crop": "32"}
    spec_artifacts = [info.path for info in client.list_artifacts(parent.info.run_id, "spec")]
    assert spec_artifacts == ["spec/toy.yaml"]
    assert set(children) == {"full", "no-reg"}
    # One colour per row, distinct here, and the same in every study (a label's hash).
    colours = {row: run.data.tags["mlflow.runColor"] for row, run in children.items()}
    assert colours == {row: run_color(row) for row in children}
    assert len(set(colours.values())) == 2 and PARENT_RUN_COLOR not in colours.values()
    # The UI's Source column names the spec, on the parent and every trial.
    for run in [parent, *children.values()]:
        assert run.data.tags["mlflow.source.name"] == "wsol study toy.yaml"

    by_row = {result.config["row"]: result for result in results}
    trial_ids = {row: result.metrics["trial_id"] for row, result in by_row.items()}
    for row, run in children.items():
        tags = run.data.tags
        assert tags["mlflow.parentRunId"] == parent.info.run_id
        assert tags["trial_id"] == trial_ids[row]
        assert tags["study"] == "toy-study"
        assert tags["code_version"] == "test-version"
        assert tags["spec"] == "toy.yaml"
        assert run.info.run_name == f"{row}_{trial_ids[row]}"  # as its folder is named
        assert run.info.status == "FINISHED"
        assert run.data.params == {"model.lambda_reg": "0.5", "model.encoder": "resnet18"}

        history = client.get_metric_history(run.info.run_id, "val_s_score")
        assert sorted((m.step, m.value) for m in history) == list(
            zip([1, 2, 3], S_SCORES[row], strict=True)
        )
        for key in ("val_loss", "train_loss", "selection_score", "epoch_seconds"):
            assert metric_steps(client, run.info.run_id, key) == [1, 2, 3], key
        assert "note" not in run.data.metrics
        assert "training_iteration" not in run.data.metrics
        # The runs table shows a metric's latest value: selected.* are the selected
        # epoch's, val_s_score the last epoch's.
        assert run.data.metrics["selected.epoch"] == SELECTED_EPOCH[row]
        assert run.data.metrics["selected.val_s_score"] == max(S_SCORES[row])
        assert run.data.metrics["val_s_score"] == S_SCORES[row][-1]
        assert "selected_epoch" not in run.data.metrics
        assert metric_steps(client, run.info.run_id, "selected.epoch") == [1, 2, 3]

        assert "selected_checkpoint" not in tags  # the manifest's to set, after the run

        # The weight-map figure of the latest checkpoint is downloadable from the server.
        artifacts = [info.path for info in client.list_artifacts(run.info.run_id)]
        assert artifacts == ["weight_maps.png"]  # at the root, where compare views look
        downloaded = Path(
            client.download_artifacts(run.info.run_id, "weight_maps.png", str(tmp_path))
        )
        expected = tmp_path / "expected.png"
        write_png(expected, *PNG_SIZE)
        assert downloaded.read_bytes() == expected.read_bytes()

    state = json.loads((tmp_path / "tracking_state.json").read_text())
    assert state["parent_run_id"] == parent.info.run_id
    assert {trial_id: entry["last_epoch"] for trial_id, entry in state["trials"].items()} == {
        trial_ids["full"]: 3,
        trial_ids["no-reg"]: 3,
    }

    # What the study's manifest names is what the runs are tagged with.
    tags = {trial_ids["full"]: {"selected_checkpoint": "/somewhere/checkpoint_000001"}}
    tag_trials(mlflow_server, tmp_path / "tracking_state.json", {**tags, trial_ids["no-reg"]: {}})
    _, children = study_runs(client, "wsol-e2e")
    assert children["full"].data.tags["selected_checkpoint"] == "/somewhere/checkpoint_000001"
    assert "selected_checkpoint" not in children["no-reg"].data.tags


def test_retry_and_driver_restore_reuse_runs_and_skip_replayed_epochs_with_sqlite(
    ray_local: None, sqlite_uri: str, tmp_path: Path
) -> None:
    """Default local SQLite URI. 'full' fails once after epoch 2 and is retried
    (max_failures=1); 'no-reg' fails after epoch 2 every time, so it errors. Then the
    driver is restored (Tuner.restore, resume_errored: same trial ids) with 'no-reg'
    fixed. Both restarts replay epochs 1-2 from scratch; nothing may be logged twice."""
    tracking_uri = sqlite_uri
    state_file = tmp_path / "tracking_state.json"
    marker = {"full": tmp_path / "full.failed", "no-reg": tmp_path / "no-reg.fixed"}
    callback = MlflowStudyCallback(
        tracking_uri=tracking_uri,
        experiment="wsol-retries",
        study_name="flaky-study",
        state_file=state_file,
        describe_trial=describe_trial,
    )
    param_space = grid_over_rows(
        fail_after_epoch=2,
        failures={
            "full": {"marker": str(marker["full"]), "once": True},
            "no-reg": {"marker": str(marker["no-reg"]), "once": False},
        },
    )
    results = run_toy_study(tmp_path, callback, param_space, max_failures=1)
    assert [result.config["row"] for result in results if result.error] == ["no-reg"]

    client = MlflowClient(tracking_uri)
    parent, children = study_runs(client, "wsol-retries")
    assert parent.info.status == "FAILED"
    assert parent.data.tags["code_version"] == code_version()
    flaky, broken = children["full"], children["no-reg"]
    assert flaky.info.status == "FINISHED"
    assert flaky.data.tags["retries"] == "1"
    assert metric_steps(client, flaky.info.run_id, "val_s_score") == [1, 2, 3]
    assert broken.info.status == "FAILED"
    assert broken.data.tags["retries"] == "1"
    assert broken.data.tags["error"] == "RuntimeError: injected failure after epoch 2"
    assert metric_steps(client, broken.info.run_id, "val_s_score") == [1, 2]
    # Artifacts of a SQLite study sit next to its database, not in the working directory.
    artifact_root = Path(sqlite_uri.removeprefix("sqlite:///")).parent / "mlartifacts"
    assert client.get_experiment(parent.info.experiment_id).artifact_location == (
        artifact_root.as_uri()
    )
    assert artifact_root.is_dir()

    # A new driver: the callback is unpickled from tuner.pkl and finds the state file.
    marker["no-reg"].touch()
    restored = tune.Tuner.restore(
        str(tmp_path / "ray_results" / "toy"), trainable=toy_trainable, resume_errored=True
    )
    assert not restored.fit().errors

    parent_after, children_after = study_runs(client, "wsol-retries")
    assert parent_after.info.run_id == parent.info.run_id
    assert parent_after.info.status == "FINISHED"
    assert {row: run.info.run_id for row, run in children_after.items()} == {
        "full": flaky.info.run_id,
        "no-reg": broken.info.run_id,
    }
    fixed = children_after["no-reg"]
    assert fixed.info.status == "FINISHED"
    assert "error" not in fixed.data.tags
    for key in ("val_s_score", "epoch_seconds"):
        assert metric_steps(client, fixed.info.run_id, key) == [1, 2, 3]
    assert metric_steps(client, flaky.info.run_id, "val_s_score") == [1, 2, 3]


# ---- hooks driven directly (no Ray cluster) -------------------------------------------


def fake_trial(trial_id: str, row: str, tmp_path: Path) -> SimpleNamespace:
    """Just enough of ray.tune.experiment.Trial for the callback: its latest checkpoint."""
    return SimpleNamespace(
        trial_id=trial_id,
        config={"row": row, "model": {"lambda_reg": 0.0, "encoder": "resnet50"}},
        last_result={},
        status="RUNNING",
        error_file=None,
        checkpoint=None,
        tmp_path=tmp_path,
    )


def report(callback: MlflowStudyCallback, trial: SimpleNamespace, epoch: int) -> None:
    row = trial.config["row"]
    scores = S_SCORES[row][:epoch]
    result = {
        "epoch": epoch,
        "val_s_score": scores[-1],
        "selected_epoch": scores.index(max(scores)) + 1,
        "selected_val_s_score": max(scores),
        "time_this_iter_s": 0.25,
        "training_iteration": epoch,
        "trial_id": trial.trial_id,
        "hostname": "worker-1",
        "config": trial.config,
        "done": False,
    }
    checkpoint_dir = trial.tmp_path / trial.trial_id / f"checkpoint_{epoch:06d}"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    write_png(checkpoint_dir / "weight_maps.png", *PNG_SIZE)
    checkpoint = tune.Checkpoint.from_directory(str(checkpoint_dir))
    callback.on_trial_result(iteration=epoch, trials=[trial], trial=trial, result=result)
    trial.last_result = result
    trial.checkpoint = checkpoint


def test_restarted_driver_with_same_state_file_creates_no_duplicate_runs_or_steps(
    sqlite_uri: str, tmp_path: Path
) -> None:
    tracking_uri = sqlite_uri
    state_file = tmp_path / "state" / "tracking.json"

    def new_callback() -> MlflowStudyCallback:
        return MlflowStudyCallback(
            tracking_uri=tracking_uri,
            experiment="wsol-resume",
            study_name="resumed",
            state_file=state_file,
            describe_trial=describe_trial,
            code_version="v1",
        )

    first = new_callback()
    first.setup()
    trial_a = fake_trial("trial_a", "full", tmp_path)
    trial_b = fake_trial("trial_b", "no-reg", tmp_path)
    for trial in (trial_a, trial_b):
        first.on_trial_start(iteration=0, trials=[trial_a, trial_b], trial=trial)
        report(first, trial, 1)
        report(first, trial, 2)
    # The driver dies here: no on_trial_complete, no on_experiment_end.
    state = json.loads(state_file.read_text())
    assert state["format_version"] == 1
    assert state["trials"]["trial_a"]["last_epoch"] == 2
    assert not list(state_file.parent.glob("*.tmp"))

    second = new_callback()
    second.setup()
    assert second.parent_run_id == first.parent_run_id
    client = MlflowClient(tracking_uri)
    assert client.get_run(second.parent_run_id).info.status == "RUNNING"
    for trial in (trial_a, trial_b):
        second.on_trial_start(iteration=0, trials=[trial_a, trial_b], trial=trial)
        assert second.run_id_of(trial.trial_id) == first.run_id_of(trial.trial_id)
        for epoch in (1, 2, 3):  # Tune replays from the start
            report(second, trial, epoch)
        trial.status = "TERMINATED"
        second.on_trial_complete(iteration=3, trials=[trial_a, trial_b], trial=trial)
    second.on_experiment_end(trials=[trial_a, trial_b])

    parent, children = study_runs(client, "wsol-resume")
    assert parent.info.run_id == first.parent_run_id
    assert parent.info.status == "FINISHED"
    assert set(children) == {"full", "no-reg"}
    for row in ("full", "no-reg"):
        run = children[row]
        assert run.info.status == "FINISHED"
        history = client.get_metric_history(run.info.run_id, "val_s_score")
        assert sorted((m.step, m.value) for m in history) == list(
            zip([1, 2, 3], S_SCORES[row], strict=True)
        )
        assert metric_steps(client, run.info.run_id, "epoch_seconds") == [1, 2, 3]
        assert metric_steps(client, run.info.run_id, "selected.epoch") == [1, 2, 3]
        assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["weight_maps.png"]


def test_tracking_failure_after_setup_warns_and_does_not_raise(
    sqlite_uri: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    callback = MlflowStudyCallback(
        tracking_uri=sqlite_uri,
        experiment="wsol-failing",
        study_name="failing",
        state_file=tmp_path / "tracking.json",
        describe_trial=describe_trial,
        code_version="v1",
    )
    callback.setup()
    trial = fake_trial("trial_a", "full", tmp_path)
    callback.on_trial_start(iteration=0, trials=[trial], trial=trial)

    def server_went_away(*args: Any, **kwargs: Any) -> None:
        raise ConnectionError("tracking server went away")

    for method in ("log_batch", "set_tag", "log_artifact", "set_terminated"):
        monkeypatch.setattr(MlflowClient, method, server_went_away)
    with caplog.at_level(logging.WARNING, logger="study.tracking"):
        report(callback, trial, 1)
        callback.on_trial_complete(iteration=1, trials=[trial], trial=trial)
        callback.on_experiment_end(trials=[trial])
    messages = [r.getMessage() for r in caplog.records if r.name == "study.tracking"]
    assert any("log the metrics of trial trial_a" in m for m in messages), messages
    assert any("tracking server went away" in m for m in messages), messages
    assert all(r.levelno == logging.WARNING for r in caplog.records if r.name == "study.tracking")


def test_setup_refuses_state_file_of_another_study(sqlite_uri: str, tmp_path: Path) -> None:
    def callback_for(study_name: str) -> MlflowStudyCallback:
        return MlflowStudyCallback(
            tracking_uri=sqlite_uri,
            experiment="wsol-state-owner",
            study_name=study_name,
            state_file=tmp_path / "tracking.json",
            describe_trial=describe_trial,
            code_version="v1",
        )

    callback_for("first").setup()
    with pytest.raises(ValueError, match="belongs to study 'first'") as error:
        callback_for("second").setup()
    assert str(tmp_path / "tracking.json") in str(error.value)


def test_setup_raises_when_tracking_server_is_unreachable(tmp_path: Path) -> None:
    uri = f"http://127.0.0.1:{unused_port()}"
    callback = MlflowStudyCallback(
        tracking_uri=uri,
        experiment="x",
        study_name="s",
        state_file=tmp_path / "tracking.json",
        describe_trial=describe_trial,
        code_version="v1",
    )
    with pytest.raises(TrackingUnavailableError, match="not reachable"):
        callback.setup()
    assert not (tmp_path / "tracking.json").exists()


def test_study_metrics_keeps_study_keys_names_the_selection_and_renames_iteration_time() -> None:
    result = {
        "epoch": 2,
        "val_s_score": 0.8,
        "train_loss": 1,
        "selected_epoch": 2,
        "selection_score": 0.8,
        "objective": 0.8,
        "excluded_reason": "degenerate: ...",
        "time_this_iter_s": 1.5,
        "training_iteration": 2,
        "timestamp": 1700000000,
        "val_name": "not numeric",
        "config": {"val_x": 1.0},
    }
    assert study_metrics(result) == {
        "val_s_score": 0.8,
        "train_loss": 1.0,
        "selected.epoch": 2.0,
        "selection_score": 0.8,
        "objective": 0.8,
        "epoch_seconds": 1.5,
    }


# ---- check_tracking_uri -----------------------------------------------------------------


def unused_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def test_check_tracking_uri_accepts_live_server(mlflow_server: str) -> None:
    check_tracking_uri(mlflow_server)
    check_tracking_uri(mlflow_server + "/")


def test_check_tracking_uri_refuses_unreachable_server_quickly() -> None:
    uri = f"http://127.0.0.1:{unused_port()}"
    started = time.monotonic()
    with pytest.raises(TrackingUnavailableError) as error:
        check_tracking_uri(uri, timeout_s=2.0)
    assert time.monotonic() - started < 10
    assert uri in str(error.value)
    assert "mlflow server" in str(error.value)


def test_check_tracking_uri_times_out_on_server_that_never_answers() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as silent:
        silent.bind(("127.0.0.1", 0))
        silent.listen(1)  # accepts connections in the kernel, never answers
        uri = f"http://127.0.0.1:{silent.getsockname()[1]}"
        started = time.monotonic()
        with pytest.raises(TrackingUnavailableError, match="not reachable") as error:
            check_tracking_uri(uri, timeout_s=0.5)
        assert time.monotonic() - started < 5
    assert uri in str(error.value)


@pytest.mark.parametrize("uri", ["file:///tmp/mlruns", "./mlruns", "/abs/mlruns"])
def test_check_tracking_uri_refuses_file_store_explaining_maintenance_mode(uri: str) -> None:
    with pytest.raises(TrackingUnavailableError) as error:
        check_tracking_uri(uri)
    message = str(error.value)
    assert uri in message
    assert "maintenance mode" in message
    assert "sqlite:///" in message


def test_check_tracking_uri_accepts_sqlite_in_writable_or_creatable_folder(
    tmp_path: Path,
) -> None:
    check_tracking_uri(f"sqlite:///{tmp_path / 'mlflow.db'}")
    check_tracking_uri(f"sqlite:///{tmp_path / 'not' / 'yet' / 'mlflow.db'}")
    assert not (tmp_path / "not").exists()  # a check creates nothing


def test_check_tracking_uri_refuses_sqlite_whose_folder_cannot_be_created(
    tmp_path: Path,
) -> None:
    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    uri = f"sqlite:///{blocker / 'sub' / 'mlflow.db'}"
    with pytest.raises(TrackingUnavailableError, match="cannot be used") as error:
        check_tracking_uri(uri)
    assert uri in str(error.value)


def test_check_tracking_uri_refuses_sqlite_in_read_only_folder(tmp_path: Path) -> None:
    read_only = Path("/proc/sys")  # read-only even for root
    if not read_only.is_dir():
        pytest.skip("no /proc/sys on this platform")
    with pytest.raises(TrackingUnavailableError, match="not writable"):
        check_tracking_uri(f"sqlite:///{read_only / 'mlflow.db'}")


def test_check_tracking_uri_accepts_other_schemes_unchecked() -> None:
    check_tracking_uri("databricks")
    check_tracking_uri("databricks://profile")
    check_tracking_uri("postgresql://user@db.invalid/mlflow")


def test_code_version_describes_repository_or_installed_package() -> None:
    version = code_version()
    assert version
    assert version.startswith("wsol-study ") or " " not in version


def ran_marker_trainable(config: dict[str, Any]) -> None:
    Path(config["ran_marker"]).touch()
    tune.report({"epoch": 1, "val_s_score": 0.5})


def test_tune_study_with_unreachable_server_fails_before_any_trial_runs(
    ray_local: None, tmp_path: Path
) -> None:
    uri = f"http://127.0.0.1:{unused_port()}"
    callback = MlflowStudyCallback(
        tracking_uri=uri,
        experiment="x",
        study_name="unreachable",
        state_file=tmp_path / "tracking.json",
        describe_trial=describe_trial,
        code_version="v1",
    )
    tuner = tune.Tuner(
        ran_marker_trainable,
        param_space={"ran_marker": str(tmp_path / "ran")},
        run_config=tune.RunConfig(
            storage_path=str(tmp_path / "ray_results"), callbacks=[callback], verbose=0
        ),
    )
    with pytest.raises(TrackingUnavailableError, match="not reachable") as error:
        tuner.fit()  # Tune runs callback setup() on the driver before any trial
    assert uri in str(error.value)
    assert not (tmp_path / "ran").exists()
    assert not (tmp_path / "tracking.json").exists()


def test_run_colours_are_stable_per_label_and_distinct_for_the_shipped_ablation_rows() -> None:
    assert run_color("full") == run_color("full")
    assert run_color("full") != run_color("no-reg")
    table6 = ["all-terms", "no-reg", "no-inner", "no-outer"]
    assert len({run_color(row) for row in table6}) == len(table6)
    assert PARENT_RUN_COLOR not in {run_color(row) for row in ["full", *table6]}
