"""``wsol study`` as users start it: a separate process with its own local Ray. Killing the
driver mid-study and running ``--resume`` finishes it without re-running finished trials."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import yaml
from studies import tiny_spec_dict

WSOL = str(Path(sys.executable).with_name("wsol"))


def _descendants(pid: int) -> list[int]:
    """Every live process below ``pid`` (Linux /proc), children first listed."""
    parents: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(entry.name))
    found, queue = [], [pid]
    while queue:
        for child in parents.get(queue.pop(), []):
            found.append(child)
            queue.append(child)
    return found


def _kill_tree(process: subprocess.Popen) -> None:
    """SIGKILL the driver and everything it started (its local Ray), like a lost shell."""
    doomed = [process.pid, *_descendants(process.pid)]
    for pid in doomed:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    process.wait(timeout=30)


def _finished_trial_dirs(experiment: Path) -> list[Path]:
    """Trial folders holding the checkpoint of their last epoch (checkpoint_<epoch>)."""
    return [path for path in experiment.glob("*_*") if (path / "checkpoint_000003").is_dir()]


def test_driver_killed_mid_study_then_resume_finishes_without_rerunning_finished_trials(
    synthetic_root: Path, tmp_path: Path
) -> None:
    spec = tiny_spec_dict(synthetic_root, tmp_path / "studies")
    spec["base"]["mask"]["epochs"] = 3
    spec["max_concurrent_trials"] = 1
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    experiment = tmp_path / "studies" / "tiny"
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}

    driver = subprocess.Popen(
        [WSOL, "study", str(spec_path)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    deadline = time.monotonic() + 240
    while not _finished_trial_dirs(experiment):
        assert driver.poll() is None, "the study ended before it could be interrupted"
        assert time.monotonic() < deadline, "no trial finished within 240 s"
        time.sleep(0.5)
    _kill_tree(driver)
    (finished,) = _finished_trial_dirs(experiment)

    resumed = subprocess.run(
        [WSOL, "study", str(spec_path), "--resume"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )

    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    assert "resuming study" in resumed.stdout
    assert "reusing" in resumed.stdout  # f was not trained again
    rows = [json.loads(line) for line in (finished / "result.json").read_text().splitlines()]
    assert [row["epoch"] for row in rows] == [1, 2, 3]  # no epoch of it trained again
    assert not (finished / "checkpoint_000004").exists()
    # The trial resumed after the kill names its checkpoints by epoch too.
    for folder in experiment.glob("*_*/checkpoint_*"):
        recorded = json.loads((folder / "selection.json").read_text())["epoch"]
        assert folder.name == f"checkpoint_{recorded:06d}"
    manifest = json.loads((experiment / "study.json").read_text())
    assert sorted(t["row"] for t in manifest["trials"]) == ["full", "no-reg"]
    assert all(t["status"] == "COMPLETE" for t in manifest["trials"])
    client = mlflow.MlflowClient(f"sqlite:///{tmp_path / 'studies' / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    children = [run for run in runs if "mlflow.parentRunId" in run.data.tags]
    assert len(runs) == 3 and len(children) == 2  # no duplicate runs after the resume
    for run in children:
        steps = client.get_metric_history(run.info.run_id, "val_s_score")
        assert sorted(m.step for m in steps) == [1, 2, 3]


def test_study_command_reports_a_bad_spec_with_exit_status_2(tmp_path: Path) -> None:
    spec_path = tmp_path / "bad.yaml"
    spec_path.write_text("name: bad\nsearch_space:\n  mask.lamda: {grid: [1.0]}\n")

    result = subprocess.run([WSOL, "study", str(spec_path)], capture_output=True, text=True)

    assert result.returncode == 2
    assert "bad.yaml" in result.stderr and "mask.lamda" in result.stderr


# In-process: each refusal below must come before Ray starts (a local Ray takes seconds).


def _tiny_spec_path(data: Path, tmp_path: Path, **fields) -> Path:
    spec = tiny_spec_dict(data, tmp_path / "studies")
    spec.update(fields)
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _main(argv: list[str], capsys) -> tuple[int, str]:
    import ray

    from study.cli import main

    assert not ray.is_initialized(), "a test before this one left Ray running"
    code = main(argv)
    assert not ray.is_initialized(), "the command started Ray before refusing"
    return code, capsys.readouterr().err


def test_version_prints_the_package_and_code_versions_and_exits_0(capsys) -> None:
    import importlib.metadata

    from study.cli import main
    from study.version import code_version

    try:
        main(["--version"])
    except SystemExit as done:
        assert done.code == 0
    else:
        raise AssertionError("--version did not exit")
    package = importlib.metadata.version("wsol-study")
    assert capsys.readouterr().out == f"wsol-study {package} (code {code_version()})\n"


def test_an_existing_study_is_refused_before_ray_starts(
    synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    from study.preflight import check_study_folder
    from study.spec import load_spec

    spec_path = _tiny_spec_path(synthetic_root, tmp_path)
    check_study_folder(load_spec(spec_path), "tiny", False, tmp_path)  # a started study

    code, err = _main(["study", str(spec_path)], capsys)

    assert code == 2 and "study 'tiny' already exists" in err and "--resume" in err


def test_study_set_overrides_are_stored_and_resume_with_other_values_is_refused(
    synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    from study.preflight import check_study_folder
    from study.spec import load_spec

    spec_path = _tiny_spec_path(synthetic_root, tmp_path)
    started = load_spec(spec_path, ["base.mask.lam=0.5", "search.num_samples=2"])
    check_study_folder(started, "tiny", False, tmp_path)  # what `wsol study --set` stores
    stored = json.loads((tmp_path / "studies" / "tiny" / "spec.json").read_text())
    assert stored["spec"]["base"]["mask"]["lam"] == 0.5
    assert stored["spec"]["search"]["num_samples"] == 2

    argv = ["study", str(spec_path), "--set", "base.mask.lam=0.7", "--resume"]
    code, err = _main([*argv, "--set", "search.num_samples=2"], capsys)

    assert code == 2 and "--resume finishes study 'tiny' with the spec it started" in err
    assert "base.mask.lam: 0.5 -> 0.7" in err and "num_samples" not in err


def test_study_set_rejects_an_unknown_key_listing_the_valid_ones(
    synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    spec_path = _tiny_spec_path(synthetic_root, tmp_path)

    code, err = _main(["study", str(spec_path), "--set", "search.num_sample=4"], capsys)

    assert code == 2 and "unknown spec key 'search.num_sample'" in err
    assert "search.num_samples" in err


def test_a_new_optuna_study_whose_name_its_optuna_storage_holds_is_refused_before_ray(
    synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    import optuna

    spec_path = _tiny_spec_path(
        synthetic_root,
        tmp_path,
        rows={"full": {}},
        search_space={"mask.lam": {"loguniform": [0.1, 10.0]}},
        search={"algorithm": "optuna", "num_samples": 2},
    )
    url = f"sqlite:///{tmp_path / 'studies' / 'optuna.db'}"
    (tmp_path / "studies").mkdir()
    optuna.create_study(study_name="tiny", storage=url)  # left by a deleted study folder

    code, err = _main(["study", str(spec_path)], capsys)

    assert code == 2 and "already holds a study named 'tiny'" in err
    assert f"optuna delete-study --study-name tiny --storage {url}" in err
    missing_data = ["--set", f"base.data.root={tmp_path / 'nowhere'}"]
    code, err = _main(["study", str(spec_path), "--name", "tiny2", *missing_data], capsys)
    assert code == 2 and "nowhere" in err  # another name passes, to the data check


def test_report_set_looks_for_the_study_under_the_overridden_storage(
    synthetic_root: Path, tmp_path: Path, capsys
) -> None:
    spec_path = _tiny_spec_path(synthetic_root, tmp_path)

    code, err = _main(["report", str(spec_path), "--set", f"storage={tmp_path / 'x'}"], capsys)

    assert code == 2 and "nothing to evaluate" in err and str(tmp_path / "x" / "tiny") in err
