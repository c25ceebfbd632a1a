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
