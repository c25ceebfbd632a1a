"""Studies on a real local Ray: the classifier stage, mask trials, selection, resume,
failures and the pre-flight checks. Trials are tiny (32 px, 1-3 epochs, CPU)."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path

import mlflow
import pytest
import ray
import torch
from ray import tune
from studies import copy_without_test_images, tiny_study

from study.errors import StudyError
from study.retention import CheckpointRetention
from study.runner import run_study, search_space
from wsol.checkpoint import load_mask_state
from wsol.selection import select_epoch


@pytest.fixture(scope="module", autouse=True)
def local_ray():
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    yield
    ray.shutdown()


def _result_rows(trial_path: str) -> list[dict]:
    return [json.loads(line) for line in Path(trial_path, "result.json").read_text().splitlines()]


def _children(tracking_uri: str, experiment: str) -> list[mlflow.entities.Run]:
    client = mlflow.MlflowClient(tracking_uri)
    found = client.get_experiment_by_name(experiment)
    runs = client.search_runs([found.experiment_id])
    return [run for run in runs if "mlflow.parentRunId" in run.data.tags]


def test_study_trains_without_test_images_and_keeps_each_trials_max_s_checkpoint(
    synthetic_root: Path, tmp_path: Path
) -> None:
    data = copy_without_test_images(synthetic_root, tmp_path / "data")
    study = tiny_study(
        data,
        tmp_path / "studies",
        **{"base.mask.epochs": 3, "keep_checkpoints": 1, "classifier_resources.cpu": 2},
    )

    printed: list[str] = []
    outcome = run_study(study, log=printed.append)

    assert sorted(s.row for s in outcome.summaries) == ["full", "no-reg"]
    names = {s.name for s in outcome.summaries}
    for summary in outcome.summaries:
        assert summary.status == "COMPLETE", summary.error
        # One name: the folder, the console, the table and the MLflow run.
        assert summary.name == f"{summary.row}_{summary.trial_id}" == Path(summary.path).name
        epoch_lines = [line for line in printed if line.startswith(f"{summary.name}  epoch")]
        assert [line.split()[2] for line in epoch_lines] == ["1/3", "2/3", "3/3"]
        assert all("selected epoch" in line and "objective" in line for line in epoch_lines)
        # A checkpoint folder is named by the epoch it holds.
        for folder in Path(summary.path).glob("checkpoint_*"):
            assert folder.name == f"checkpoint_{load_mask_state(folder / 'mask.pt')['epoch']:06d}"
        rows = _result_rows(summary.path)
        assert [row["epoch"] for row in rows] == [1, 2, 3]  # S reported every epoch
        assert {row["torch_threads"] for row in rows} == {1}  # resources.cpu
        assert all(0.0 <= row["val_s_score"] <= 1.0 for row in rows)
        assert summary.selected_epoch == select_epoch(rows).epoch
        # The manifest's history is the g loop's, row for row.
        assert [r["val_s_score"] for r in summary.history] == [r["val_s_score"] for r in rows]
        state = load_mask_state(Path(summary.selected_checkpoint) / "mask.pt")
        assert state["epoch"] == summary.selected_epoch
        # Retention: the best checkpoint and the latest (for resume), nothing else.
        kept = sorted(path.name for path in Path(summary.path).glob("checkpoint_*"))
        assert len(kept) == (1 if summary.selected_epoch == 3 else 2)
    # One f for both rows (same data and classifier sections), stored by content hash,
    # trained on classifier_resources' 2 CPUs while each trial has resources' 1.
    (f_folder,) = (tmp_path / "studies" / "classifiers").iterdir()
    f_rows = [json.loads(line) for line in (f_folder / "metrics.jsonl").read_text().splitlines()]
    assert [row["torch_threads"] for row in f_rows] == [2]
    manifest = json.loads(Path(outcome.manifest).read_text())
    assert {t["trial_id"] for t in manifest["trials"]} == {s.trial_id for s in outcome.summaries}
    children = _children(study.tracking_uri(), "tiny")
    assert sorted(run.data.tags["row"] for run in children) == ["full", "no-reg"]
    assert {run.info.run_name for run in children} == names
    assert all(name in outcome.table for name in names)
    assert any("the guarded S" in line for line in printed)  # the table's legend
    # Diagnostics under the table, per trial in the manifest and as MLflow tags.
    assert any(line.startswith("  f ") and "against chance 33.3%" in line for line in printed)
    assert all(t["diagnostics"]["num_classes"] == 3 for t in manifest["trials"])
    assert all(
        run.data.tags["diagnostic.f_weak"] in ("true", "false")
        and run.data.tags["diagnostic.all_degenerate"] in ("true", "false")
        for run in children
    )
    # The parent run carries what the trials share and the study's summary table.
    client = mlflow.MlflowClient(study.tracking_uri())
    (parent,) = [
        run
        for run in client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
        if "mlflow.parentRunId" not in run.data.tags
    ]
    assert parent.data.params["mask.epochs"] == "3"
    assert parent.data.params["study.rows"] == "full, no-reg"
    assert "mask.reg" not in parent.data.params  # the rows differ in it
    artifacts = {info.path for info in client.list_artifacts(parent.info.run_id)}
    assert "study_summary.md" in artifacts
    assert [i.path for i in client.list_artifacts(parent.info.run_id, "spec")] == ["spec/spec.json"]


def test_resume_reuses_classifier_and_does_not_rerun_finished_trials(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tiny_study(synthetic_root, tmp_path / "studies")
    first = run_study(study, log=lambda _: None)
    lines: list[str] = []

    second = run_study(study, resume=True, log=lines.append)

    assert any("reusing" in line for line in lines)
    assert not any("training resnet18" in line for line in lines)
    for before, after in zip(first.summaries, second.summaries, strict=True):
        assert after.trial_id == before.trial_id
        assert len(_result_rows(after.path)) == 2  # no epoch trained twice
    assert len(_children(study.tracking_uri(), "tiny")) == 2


def test_resume_with_an_edited_spec_is_refused_naming_each_field(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tiny_study(synthetic_root, tmp_path / "studies", **{"rows": {"full": {}}})
    first = run_study(study, log=lambda _: None)
    manifest = Path(first.manifest).read_text()
    edited = tiny_study(
        synthetic_root,
        tmp_path / "studies",
        **{"rows": {"full": {}}, "base.classifier.epochs": 3, "base.mask.lr": 0.5},
    )

    with pytest.raises(StudyError) as error:
        run_study(edited, resume=True, log=lambda _: None)

    message = str(error.value)
    assert "base.classifier.epochs: 1 -> 3" in message and "base.mask.lr: 0.01 -> 0.5" in message
    assert Path(first.manifest).read_text() == manifest  # nothing ran, nothing rewritten
    assert len(list((tmp_path / "studies" / "classifiers").iterdir())) == 1  # no new f


def test_existing_study_without_resume_is_refused(synthetic_root: Path, tmp_path: Path) -> None:
    study = tiny_study(synthetic_root, tmp_path / "studies", **{"rows": {"full": {}}})
    run_study(study, log=lambda _: None)

    with pytest.raises(StudyError, match=r"already exists.*--resume"):
        run_study(study, log=lambda _: None)


class _KillWorkerOnce(tune.Callback):
    """Kill the trial's worker process (SIGKILL, as an OOM killer or a lost node would)
    right after its first reported epoch."""

    def __init__(self) -> None:
        self.killed: list[int] = []

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        if not self.killed and result["epoch"] == 1:
            self.killed.append(result["pid"])
            os.kill(result["pid"], signal.SIGKILL)


def test_killed_trial_worker_is_retried_from_its_checkpoint_with_the_same_result(
    synthetic_root: Path, tmp_path: Path
) -> None:
    torch.manual_seed(0)
    spec = {"rows": {"full": {}}, "base.mask.epochs": 3, "base.deterministic": True}
    reference = run_study(tiny_study(synthetic_root, tmp_path / "a", **spec), log=lambda _: None)
    killer = _KillWorkerOnce()

    retried = run_study(
        tiny_study(synthetic_root, tmp_path / "b", **spec), callbacks=[killer], log=lambda _: None
    )

    assert killer.killed
    (expected,) = reference.summaries
    (summary,) = retried.summaries
    assert summary.status == "COMPLETE", summary.error
    rows = _result_rows(summary.path)
    assert len({row["pid"] for row in rows}) == 2  # a second worker finished the trial
    assert sorted({row["epoch"] for row in rows}) == [1, 2, 3]
    for folder in Path(summary.path).glob("checkpoint_*"):  # named by epoch after the retry
        assert folder.name == f"checkpoint_{load_mask_state(folder / 'mask.pt')['epoch']:06d}"
    assert summary.selected_epoch == expected.selected_epoch
    assert summary.selected_s_score == pytest.approx(expected.selected_s_score, abs=1e-6)
    # MLflow holds each epoch exactly once despite the retry.
    (child,) = _children(tiny_study(synthetic_root, tmp_path / "b").tracking_uri(), "tiny")
    history = mlflow.MlflowClient(
        tiny_study(synthetic_root, tmp_path / "b").tracking_uri()
    ).get_metric_history(child.info.run_id, "val_s_score")
    assert sorted(m.step for m in history) == [1, 2, 3]


def test_preflight_names_a_missing_dataset(tmp_path: Path) -> None:
    study = tiny_study(tmp_path / "nowhere", tmp_path / "studies")
    with pytest.raises(StudyError, match=r"pre-flight: .*nowhere"):
        run_study(study, log=lambda _: None)


def test_preflight_refuses_gpu_trials_on_a_cluster_without_gpus(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tiny_study(
        synthetic_root, tmp_path / "studies", **{"resources.gpu": 0.25, "base.device": "auto"}
    )
    with pytest.raises(StudyError, match=r"gpu: 0.25.*pending forever"):
        run_study(study, log=lambda _: None)


def test_preflight_refuses_a_classifier_stage_that_fits_no_node(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tiny_study(synthetic_root, tmp_path / "studies", **{"classifier_resources.cpu": 512})
    with pytest.raises(StudyError, match=r"classifier_resources \{cpu: 512, gpu: 0\} per f"):
        run_study(study, log=lambda _: None)


def test_preflight_refuses_an_unreachable_tracking_server(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tiny_study(
        synthetic_root, tmp_path / "studies", **{"mlflow.tracking_uri": "http://127.0.0.1:9"}
    )
    with pytest.raises(StudyError, match=r"pre-flight: .*127\.0\.0\.1:9"):
        run_study(study, log=lambda _: None)


def test_optuna_study_samples_lambda_within_bounds_and_reports_the_objective(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tiny_study(
        synthetic_root,
        tmp_path / "studies",
        **{
            "rows": {"full": {}},
            "search_space": {"mask.lam": {"loguniform": [0.1, 10.0]}},
            "search": {"algorithm": "optuna", "num_samples": 2, "seed": 3},
            "trial_selection": {"metric": "val_gt_known_loc", "mode": "max"},
        },
    )
    outcome = run_study(study, log=lambda _: None)

    assert len(outcome.summaries) == 2
    lams = [s.params["mask.lam"] for s in outcome.summaries]
    assert all(0.1 <= lam <= 10.0 for lam in lams) and lams[0] != lams[1]
    for summary in outcome.summaries:
        rows = _result_rows(summary.path)
        selected = next(r for r in rows if r["epoch"] == summary.selected_epoch)
        assert summary.objective == selected["val_gt_known_loc"]  # at the S-selected epoch


def test_search_space_maps_rows_and_dimensions_to_tune_domains(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = tiny_study(
        synthetic_root,
        tmp_path,
        **{"search_space": {"seed": {"grid": [0, 1]}, "mask.lam": {"grid": [0.5, 1.0]}}},
    )
    space = search_space(study)
    assert space["row"] == {"grid_search": ["full", "no-reg"]}
    assert space["seed"] == {"grid_search": [0, 1]}
    assert space["mask.lam"] == {"grid_search": [0.5, 1.0]}

    sampled = search_space(
        tiny_study(
            synthetic_root,
            tmp_path,
            **{
                "rows": {"full": {}},
                "search": {"algorithm": "optuna", "num_samples": 4},
                "search_space": {
                    "mask.lam": {"loguniform": [0.1, 10.0]},
                    "mask.encoder": {"choice": ["resnet18", "resnet34"]},
                },
            },
        )
    )
    assert sampled["row"] == "full"
    assert (sampled["mask.lam"].lower, sampled["mask.lam"].upper) == (0.1, 10.0)
    assert sampled["mask.encoder"].categories == ["resnet18", "resnet34"]


class _FakeTrial:
    """What CheckpointRetention reads of a trial: its id and the result just reported."""

    def __init__(self) -> None:
        self.trial_id = "t0"
        self.last_result: dict = {}


def _row(epoch: int, s_score: float, excluded: bool = False) -> dict:
    return {"epoch": epoch, "val_s_score": s_score, "excluded_reason": "d" if excluded else None}


def test_retention_keeps_what_select_epoch_selects(tmp_path: Path) -> None:
    # Ties on S, an excluded epoch with the highest S: retention must keep the epoch
    # select_epoch picks, whatever the order of arrival.
    rows = [_row(1, 0.8), _row(2, 0.95, excluded=True), _row(3, 0.8), _row(4, 0.7)]
    retention = CheckpointRetention(keep=1, grace_s=0.0)
    trial = _FakeTrial()
    for row in rows:
        path = tmp_path / f"checkpoint_{row['epoch']}"
        path.mkdir()
        trial.last_result = row
        retention.on_checkpoint(0, [], trial, tune.Checkpoint.from_directory(str(path)))
    selected = select_epoch(rows).epoch
    kept = sorted(int(p.name.split("_")[1]) for p in tmp_path.iterdir())
    assert selected == 1 and kept == [1, 3, 4]  # the selection, the previous latest, the latest


def test_retention_keeps_the_tolerance_selection_after_the_max_s_epoch_is_dropped(
    tmp_path: Path,
) -> None:
    # Epoch 1 holds the max S; epoch 2 is within the tolerance and kept instead; epoch 3
    # is within 0.01 of epoch 2 but not of epoch 1. Re-deriving the selection from the
    # kept checkpoints alone (2 and 3) would keep 3; the trial's whole history keeps 2.
    rows = [
        {**_row(1, 0.941), "selection_tolerance": 0.01},
        {**_row(2, 0.932), "selection_tolerance": 0.01},
        {**_row(3, 0.925), "selection_tolerance": 0.01},
        {**_row(4, 0.80), "selection_tolerance": 0.01},
    ]
    retention = CheckpointRetention(keep=1, grace_s=0.0)
    trial = _FakeTrial()
    for index, row in enumerate(rows):
        path = tmp_path / f"checkpoint_{row['epoch']}"
        path.mkdir()
        trial.last_result = {**row, "selected_epoch": select_epoch(rows[: index + 1]).epoch}
        retention.on_checkpoint(0, [], trial, tune.Checkpoint.from_directory(str(path)))
    assert select_epoch(rows).epoch == 2
    kept = sorted(int(p.name.split("_")[1]) for p in tmp_path.iterdir())
    assert kept == [2, 3, 4]  # the selection, the previous latest, the latest


def test_retention_deletes_a_superseded_checkpoint_only_after_the_grace_period(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    clock = [0.0]
    monkeypatch.setattr("study.retention.time.monotonic", lambda: clock[0])
    retention = CheckpointRetention(keep=1, grace_s=30.0)
    trial = _FakeTrial()
    s_scores = {1: 0.9, 2: 0.5, 3: 0.4, 4: 0.3, 5: 0.2}
    for epoch, s_score in s_scores.items():
        path = tmp_path / f"checkpoint_{epoch}"
        path.mkdir()
        trial.last_result = _row(epoch, s_score)  # Tune processes the result first
        retention.on_checkpoint(0, [], trial, tune.Checkpoint.from_directory(str(path)))
        clock[0] += 20.0  # one epoch

    # Epoch e arrives at t = 20(e-1) and supersedes e-1. When epoch 5 arrives (t=80):
    # epoch 1 is the best (kept); 2, superseded at t=40, is past the 30 s grace (deleted);
    # 3 and 4, superseded 20 s and 0 s ago, may still be named by the saved experiment
    # state (kept); 5 is being registered.
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "checkpoint_1",
        "checkpoint_3",
        "checkpoint_4",
        "checkpoint_5",
    ]


# Row "good" is never excluded (the guard is off); row "bad" excludes every epoch (a box
# is always above max_box_fraction or below min_box_fraction), so it ranks last at every
# rung and its degenerate streak is its epoch count: where early termination stops it is
# known in advance.
_GOOD_AND_BAD = {
    "good": {"selection.skip_degenerate": False},
    "bad": {"selection.min_box_fraction": 0.999, "selection.max_box_fraction": 0.5},
}


def _scheduled_study(data: Path, storage: Path, scheduler: dict, concurrent: int):
    return tiny_study(
        data,
        storage,
        **{
            "rows": _GOOD_AND_BAD,
            "base.mask.epochs": 3,
            "search.scheduler": scheduler,
            "max_concurrent_trials": concurrent,
        },
    )


def test_asha_stops_the_trial_that_ranks_last_at_its_first_rung(
    synthetic_root: Path, tmp_path: Path
) -> None:
    study = _scheduled_study(
        synthetic_root,
        tmp_path / "studies",
        {"asha": {"grace_period": 1, "reduction_factor": 2}},
        concurrent=1,  # "good" reaches the rung first, so "bad" is compared with it
    )
    outcome = run_study(study, log=lambda _: None)
    by_row = {s.row: s for s in outcome.summaries}
    assert by_row["good"].status == "COMPLETE" and by_row["good"].epochs == 3
    bad = by_row["bad"]
    assert (bad.status, bad.epochs, bad.stopped_by) == ("STOPPED", 1, "ASHA")
    assert bad.selected_epoch == 1 and bad.selected_checkpoint  # its selection stands


def test_the_degenerate_rule_stops_a_trial_selected_summarised_and_evaluated_like_any(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from study.evaluation import evaluate

    study = _scheduled_study(
        synthetic_root, tmp_path / "studies", {"stop_after_degenerate": 2}, concurrent=2
    )
    lines: list[str] = []
    outcome = run_study(study, log=lines.append)

    by_row = {s.row: s for s in outcome.summaries}
    assert by_row["good"].status == "COMPLETE"
    bad = by_row["bad"]
    assert (bad.status, bad.epochs) == ("STOPPED", 2)
    assert bad.stopped_by == "2 consecutive degenerate epochs"
    assert bad.selected_epoch == select_epoch(bad.history).epoch
    assert "STOPPED at 2/3 (2 consecutive degenerate epochs)" in outcome.table
    assert any(f"{bad.trial_id} at epoch 2" in line for line in lines)
    manifest = json.loads(Path(outcome.manifest).read_text())
    assert {t["row"]: t["status"] for t in manifest["trials"]} == {
        "good": "COMPLETE",
        "bad": "STOPPED",
    }
    (child,) = [r for r in _children(study.tracking_uri(), "tiny") if r.data.tags["row"] == "bad"]
    assert child.data.tags["status"] == "STOPPED" and child.data.tags["stopped_at_epoch"] == "2"
    assert child.data.tags["selected_checkpoint"] == bad.selected_checkpoint

    result = evaluate(str(Path(outcome.manifest).parent), progress=False, log=lambda _: None)
    scored = {item.key: item for item in result.scored}
    assert scored[bad.trial_id].selected_epoch == bad.selected_epoch
    assert scored[bad.trial_id].status == "STOPPED" and scored[bad.trial_id].label == "bad"


def test_a_trial_that_never_reported_is_summarised_from_its_folder(tmp_path: Path) -> None:
    # A trial still pending when the study was stopped has no result, hence no config.
    from types import SimpleNamespace

    import pyarrow.fs

    from study.manifest import _unreported_config

    pending = tmp_path / "no-reg_ab12c_00001"
    pending.mkdir()
    result = SimpleNamespace(path=str(pending), filesystem=pyarrow.fs.LocalFileSystem())
    assert _unreported_config(result) == {"row": "no-reg"}
    (pending / "params.json").write_text(json.dumps({"row": "no-reg", "seed": 1}))
    assert _unreported_config(result) == {"row": "no-reg", "seed": 1}
