"""``wsol evaluate`` / ``wsol report`` on a tiny finished study: only the selected
checkpoints meet the test split, the numbers are the metric functions', outputs exist,
MLflow holds ``test.*`` metrics, and a second run is a no-op."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import mlflow
import pytest
import ray
from mlflow.exceptions import MlflowException
from studies import tiny_study

import wsol.checkpoint
import wsol.data
from study.errors import StudyError
from study.evaluation import RESULT_TABLES, evaluate
from study.report import report
from study.runner import run_study
from wsol.evaluate import evaluate_maps, load_examples, mask_generator_maps


@pytest.fixture(scope="module")
def finished_study(synthetic_root: Path, tmp_path_factory: pytest.TempPathFactory):
    storage = tmp_path_factory.mktemp("evaluation") / "studies"
    study = tiny_study(
        synthetic_root,
        storage,
        **{
            "name": "evaltiny",
            "search_space": {"seed": {"grid": [0, 1]}},
            "base.mask.epochs": 3,
            "keep_all_checkpoints": True,
        },
    )
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        outcome = run_study(study, log=lambda _: None)
    finally:
        ray.shutdown()
    yield study, outcome
    # 12 kept checkpoints of ~170 MB: free them when the module is done, not at exit.
    shutil.rmtree(storage.parent, ignore_errors=True)


@pytest.fixture(scope="module")
def evaluated(finished_study, tmp_path_factory: pytest.TempPathFactory):
    """The first evaluation, with what it opened recorded."""
    study, outcome = finished_study
    opened: list[str] = []
    test_reads: list[str] = []
    load_state, read_test = wsol.checkpoint.load_mask_state, wsol.data.read_test_split

    def recording_load_state(path):
        opened.append(str(Path(path).parent))
        return load_state(path)

    def recording_read_test(config):
        test_reads.append(str(config.root))
        return read_test(config)

    patch = pytest.MonkeyPatch()
    patch.setattr(wsol.checkpoint, "load_mask_state", recording_load_state)
    patch.setattr(wsol.data, "read_test_split", recording_read_test)
    try:
        result = evaluate(
            str(Path(outcome.manifest).parent), epoch_curve=False, progress=False, log=print
        )
    finally:
        patch.undo()
    return study, outcome, result, opened, test_reads


def test_only_the_selected_checkpoints_meet_the_test_split(evaluated) -> None:
    _, outcome, _, opened, test_reads = evaluated
    selected = {s.selected_checkpoint for s in outcome.summaries}
    all_kept = {path for s in outcome.summaries for path in s.checkpoints.values()}
    assert len(all_kept) > len(selected)  # every epoch was kept, yet only these were opened
    assert set(opened) == selected
    assert test_reads  # the test split was read, by this step only


def test_numbers_equal_the_metric_functions_called_directly(evaluated) -> None:
    _, outcome, result, _, _ = evaluated
    summary = outcome.summaries[0]
    mask_generator, state = wsol.checkpoint.load_mask_generator_state(
        Path(summary.selected_checkpoint) / "mask.pt"
    )
    classifier, _ = wsol.checkpoint.load_classifier(Path(summary.classifier))
    config = wsol.checkpoint.stored_config(state)
    direct = evaluate_maps(
        mask_generator_maps(mask_generator),
        classifier,
        wsol.data.read_test_split(config.data),
        config,
        "cpu",
    ).metrics
    (scored,) = [item for item in result.scored if item.key == summary.trial_id]
    assert scored.metrics == pytest.approx(direct)
    assert {"gt_known_loc", "top1_loc", "top1_cls", "pxap", "maxboxacc_v2"} <= set(direct)


def test_tables_and_figures_are_written(evaluated) -> None:
    _, _, result, _, _ = evaluated
    out = result.source.out_dir
    rows = (out / "results_rows.md").read_text()
    assert "| CAM | 1 |" in rows
    assert "| full | 2 |" in rows and "±" in rows  # mean ± std over the two seeds
    assert len((out / "results_trials.csv").read_text().splitlines()) == 1 + 4 + 1
    for item in result.scored:
        assert set(item.figures) >= {"boxes", "masks", "pr_curve"}
        assert all(Path(path).stat().st_size > 1000 for path in item.figures.values())


def test_mlflow_holds_test_metrics_on_each_trial_run(evaluated) -> None:
    study, outcome, _, _, _ = evaluated
    client = mlflow.MlflowClient(study.tracking_uri())
    experiment = client.get_experiment_by_name("evaltiny")
    runs = client.search_runs([experiment.experiment_id])
    children = {r.data.tags["trial_id"]: r for r in runs if "mlflow.parentRunId" in r.data.tags}
    for summary in outcome.summaries:
        run = children[summary.trial_id]
        assert "test.gt_known_loc" in run.data.metrics
        assert run.data.tags["test.evaluated_by"].startswith("wsol evaluate")
    (parent,) = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert "test.cam.gt_known_loc" in parent.data.metrics


def _artifact_paths(client: mlflow.MlflowClient, run_id: str, folder: str | None) -> set[str]:
    return {item.path for item in client.list_artifacts(run_id, folder)}


def _study_runs(study) -> tuple[mlflow.MlflowClient, dict[str, str], str]:
    """(client, trial id -> run id, parent run id) of the evaluated tiny study."""
    client = mlflow.MlflowClient(study.tracking_uri())
    experiment = client.get_experiment_by_name("evaltiny")
    runs = client.search_runs([experiment.experiment_id])
    children = {
        r.data.tags["trial_id"]: r.info.run_id for r in runs if "mlflow.parentRunId" in r.data.tags
    }
    (parent,) = [r.info.run_id for r in runs if "mlflow.parentRunId" not in r.data.tags]
    return client, children, parent


def test_every_trial_run_holds_its_test_figures_under_the_same_paths(evaluated) -> None:
    study, outcome, _, _, _ = evaluated
    client, children, parent = _study_runs(study)
    # At the artifact root: MLflow's compare view lists only root-level files.
    expected = {"test_boxes.png", "test_masks.png", "test_pr_curve.png", "weight_maps.png"}
    for summary in outcome.summaries:
        assert _artifact_paths(client, children[summary.trial_id], None) >= expected
    cam = {"test/cam/boxes.png", "test/cam/masks.png", "test/cam/pr_curve.png"}
    assert _artifact_paths(client, parent, "test/cam") == cam


def test_the_parent_run_holds_the_results_tables(evaluated) -> None:
    study, _, _, _, _ = evaluated
    client, _, parent = _study_runs(study)
    tables = {f"evaluation/{name}" for name in RESULT_TABLES}
    assert tables <= _artifact_paths(client, parent, "evaluation")


def test_every_method_shows_the_same_example_images_across_classes(evaluated) -> None:
    _, _, result, _, _ = evaluated
    shown = {}
    for item in result.scored:
        examples, curve = load_examples(Path(item.examples))
        shown[item.key] = [(example.image_id, example.label) for example in examples]
        assert curve is not None  # the PR curve the report overlays
    first, *others = shown.values()
    assert all(other == first for other in others)
    assert len(first) == 8
    # round-robin over the 3 classes: 0, 1, 2, 0, 1, 2, 0, 1
    assert [label for _, label in first] == [0, 1, 2, 0, 1, 2, 0, 1]


def test_an_unreachable_mlflow_is_a_warning_and_the_tables_stay_on_disk(
    evaluated, monkeypatch: pytest.MonkeyPatch
) -> None:
    _, outcome, _, _, _ = evaluated

    def refuse(*args, **kwargs):
        raise MlflowException("connection refused")

    monkeypatch.setattr(mlflow.MlflowClient, "log_artifact", refuse)
    lines: list[str] = []
    again = evaluate(str(Path(outcome.manifest).parent), progress=False, log=lines.append)

    assert any(
        line.startswith("warning: MLflow") and "connection refused" in line for line in lines
    )
    assert all((again.source.out_dir / name).stat().st_size > 0 for name in RESULT_TABLES)


def test_second_evaluation_is_a_no_op(evaluated) -> None:
    _, outcome, result, _, _ = evaluated
    caches = sorted((result.source.out_dir / "trials").glob("*.json"))
    before = {path: path.stat().st_mtime_ns for path in caches}
    lines: list[str] = []

    again = evaluate(str(Path(outcome.manifest).parent), progress=False, log=lines.append)

    assert all(item.cached for item in again.scored)
    assert {path: path.stat().st_mtime_ns for path in caches} == before
    assert any("nothing new to score" in line for line in lines)


def test_a_checkpoint_other_than_the_selection_is_refused(evaluated, tmp_path: Path) -> None:
    _, outcome, _, _, _ = evaluated
    manifest_path = Path(outcome.manifest)
    manifest = json.loads(manifest_path.read_text())
    trial = manifest["trials"][0]
    other = next(
        path
        for epoch, path in trial["checkpoints"].items()
        if int(epoch) != trial["selected_epoch"]
    )
    trial["selected_checkpoint"] = other
    forged = tmp_path / "forged"
    forged.mkdir()
    (forged / "study.json").write_text(json.dumps(manifest))

    with pytest.raises(StudyError, match="refusing to score"):
        evaluate(str(forged), progress=False, log=lambda _: None)


def test_epoch_curve_is_a_labelled_diagnostic(evaluated) -> None:
    _, outcome, _, _, _ = evaluated
    result = evaluate(
        str(Path(outcome.manifest).parent), epoch_curve=True, progress=False, log=lambda _: None
    )
    assert len(result.diagnostics) == 4
    for diagnostic in result.diagnostics:
        assert diagnostic["label"].startswith("DIAGNOSTIC")
        assert sorted(diagnostic["epochs"]) == ["1", "2", "3"]
        assert diagnostic["gap"] >= 0
        assert Path(diagnostic["figure"]).stat().st_size > 1000


def test_report_writes_a_self_contained_page_and_logs_it_to_the_parent_run(evaluated) -> None:
    study, outcome, _, _, _ = evaluated
    lines: list[str] = []
    page = report(str(Path(outcome.manifest).parent), log=lines.append)
    text = page.read_text()
    assert "<table>" in text and "data:image/png;base64," in text
    assert 'src="http' not in text and "src='http" not in text  # nothing fetched
    for section in ("comparison", "pr", "val-s", "weight-maps"):
        assert f'id="{section}"' in text
    # Fig. 4 of all four trials (two rows x two seeds), read from their checkpoints
    assert text.count(": weight maps</figcaption>") == 4
    assert any("| CAM |" in line for line in lines)
    client, _, parent = _study_runs(study)
    assert "evaluation/report.html" in _artifact_paths(client, parent, "evaluation")


def test_a_single_run_folder_is_evaluated_and_reported_like_a_one_trial_study(
    synthetic_root: Path, tmp_path: Path
) -> None:
    from studies import tiny_spec_dict

    from wsol.config import config_from_dict
    from wsol.local_run import run_local

    base = tiny_spec_dict(synthetic_root, tmp_path)["base"]
    config = config_from_dict({**base, "name": "single"})
    run_local(config, tmp_path / "run", progress=False, log=lambda _: None)

    result = evaluate(str(tmp_path / "run"), progress=False, log=lambda _: None)

    assert result.source.kind == "run"
    assert [item.method for item in result.scored] == ["CAM", "single"]
    assert (tmp_path / "run" / "evaluation" / "results_rows.md").is_file()
    text = report(str(tmp_path / "run"), log=lambda _: None).read_text()
    assert "single_run: weight maps" in text  # the run folder's own Fig. 4
    assert 'class="note"' not in text  # comparison, PR and S curves all drawn
