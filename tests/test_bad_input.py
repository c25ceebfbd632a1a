"""Bad input gets one clear message and exit status 2, before any work: no traceback, no
f trained for a study that cannot run, nothing written outside the storage folder."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml
from run_configs import tiny_run_config
from studies import tiny_spec_dict

from study.cli import main as wsol_main
from study.spec import SpecError, spec_from_dict


def _spec_file(tmp_path: Path, data: Path, **changes) -> Path:
    spec = tiny_spec_dict(data, tmp_path / "studies")
    spec.update(changes)
    tmp_path.mkdir(parents=True, exist_ok=True)
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    code = wsol_main(argv)
    return code, capsys.readouterr().err


# --------------------------------------------------------------------------- names (8)


def test_a_study_name_that_leaves_the_storage_folder_is_refused(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec_file(tmp_path / "here", synthetic_root)
    code, err = _run(["study", str(spec), "--name", "../../escaped"], capsys)
    assert code == 2 and "--name" in err and "not a safe folder name" in err
    assert not (tmp_path / "escaped").exists() and not (tmp_path.parent / "escaped").exists()


@pytest.mark.parametrize("name", ["..", ".", "a/b", ".hidden"])
def test_a_spec_name_that_is_not_one_folder_is_refused(synthetic_root: Path, name: str) -> None:
    raw = tiny_spec_dict(synthetic_root, Path("studies"))
    raw["name"] = name
    with pytest.raises(SpecError, match=r"name: .*not a safe folder name"):
        spec_from_dict(raw, source="spec.yaml")


# --------------------------------------------------------------------------- metrics (9)


def test_a_selection_metric_the_trainer_does_not_report_is_refused(synthetic_root: Path) -> None:
    raw = tiny_spec_dict(synthetic_root, Path("studies"))
    raw["trial_selection"] = {"metric": "val_bogus"}
    with pytest.raises(SpecError) as error:
        spec_from_dict(raw, source="spec.yaml")
    message = str(error.value)
    assert "trial_selection.metric" in message and "val_bogus" in message
    assert "val_s_score" in message and "val_gt_known_loc" in message  # what it may be


def test_a_method_specific_metric_is_accepted_only_for_that_method(synthetic_root: Path) -> None:
    raw = tiny_spec_dict(synthetic_root, Path("studies"))
    raw["trial_selection"] = {"metric": "val_ce", "mode": "min"}
    assert spec_from_dict(raw, source="spec.yaml").trial_selection.metric == "val_ce"
    raw["trial_selection"] = {"metric": "val_inner", "mode": "min"}  # Method II's term
    with pytest.raises(SpecError, match="val_inner"):
        spec_from_dict(raw, source="spec.yaml")


# --------------------------------------------------------------------------- order (10)


def test_an_existing_study_is_refused_before_any_classifier_is_trained(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec_file(tmp_path, synthetic_root)
    experiment = tmp_path / "studies" / "tiny"
    experiment.mkdir(parents=True)
    (experiment / "study.json").write_text(json.dumps({"study": "tiny", "trials": []}))
    code, err = _run(["study", str(spec)], capsys)
    assert code == 2 and "already exists" in err and "--resume" in err
    assert not (tmp_path / "studies" / "classifiers").exists()  # no f was trained


def test_a_missing_data_root_is_refused_before_ray_starts(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    import ray

    spec = _spec_file(tmp_path, tmp_path / "nowhere")
    code, err = _run(["study", str(spec)], capsys)
    assert code == 2 and "nowhere" in err
    assert not ray.is_initialized()


# --------------------------------------------------------------------------- messages (11)


def test_a_spec_that_is_not_utf8_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = tmp_path / "latin1.yaml"
    spec.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, err = _run(["study", str(spec)], capsys)
    assert code == 2 and "latin1.yaml" in err and "UTF-8" in err


def test_a_config_that_is_not_utf8_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "latin1.yaml"
    config.write_bytes("name: caf\xe9\n".encode("latin-1"))
    code, err = _run(["train", "--config", str(config), "--out", str(tmp_path / "r")], capsys)
    assert code == 2 and "latin1.yaml" in err and "UTF-8" in err


def test_a_list_valued_config_with_a_flag_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "list.yaml"
    config.write_text("- seed: 1\n- seed: 2\n")
    argv = ["train", "--config", str(config), "--seed", "1", "--out", str(tmp_path / "r")]
    code, err = _run(argv, capsys)
    assert code == 2 and "list.yaml" in err and "mapping" in err


@pytest.mark.parametrize("content", ["{not json", '{"study": "x", "trials": [', ""])
def test_a_corrupt_manifest_is_refused_by_name(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], content: str
) -> None:
    study = tmp_path / "broken"
    study.mkdir()
    (study / "study.json").write_text(content)
    code, err = _run(["evaluate", str(study), "--no-progress"], capsys)
    assert code == 2 and "study.json" in err


def test_a_loss_with_nothing_to_minimise_is_a_message_not_a_traceback(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_run_config(synthetic_root).model_dump_json())
    argv = ["train", "--config", str(config), "--out", str(tmp_path / "run"), "--no-progress"]
    argv += ["--set", "classifier.epochs=1", "--set", "mask.ce=false", "--no-reg"]
    code, err = _run(argv, capsys)
    assert code == 2 and "nothing to minimise" in err
    assert "Traceback" not in err


def test_a_diverging_classifier_is_a_message_naming_the_epoch_and_nothing_is_stored(
    synthetic_root: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "tiny.yaml"
    config.write_text(tiny_run_config(synthetic_root).model_dump_json())
    out = tmp_path / "run"
    argv = ["train", "--config", str(config), "--out", str(out), "--no-progress"]
    code, err = _run(
        [*argv, "--set", "classifier.lr=1e12", "--set", "classifier.optimizer=sgd"], capsys
    )
    assert code == 2 and "epoch 1" in err and "classifier.lr" in err
    assert not (out / "classifier" / "classifier.pt").exists()


@pytest.mark.parametrize(
    "scheduler, field",
    [
        ({"asha": {"reduction_factor": 1}}, "search.scheduler.asha.reduction_factor"),
        ({"asha": {"grace_period": 0}}, "search.scheduler.asha.grace_period"),
        ({"stop_after_degenerate": 0}, "search.scheduler.stop_after_degenerate"),
        ({"hyperband": {}}, "search.scheduler.hyperband"),
    ],
)
def test_scheduler_fields_are_validated_naming_the_field(
    synthetic_root: Path, scheduler: dict, field: str
) -> None:
    raw = tiny_spec_dict(synthetic_root, Path("studies"))
    raw["search"] = {"algorithm": "grid", "scheduler": scheduler}
    with pytest.raises(SpecError, match=field.replace(".", r"\.")):
        spec_from_dict(raw, source="spec.yaml")
