"""``wsol study`` stopped by a signal, as users stop it: Ctrl-C in its terminal (SIGINT to
the whole foreground process group) or SIGTERM to the driver (a preempted node, a job
scheduler). The published state must say the study did not finish, and ``--resume``
must finish it. Also: the local Ray it starts listens on the loopback interface only."""

from __future__ import annotations

import ipaddress
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import mlflow
import pytest
import yaml
from studies import tiny_spec_dict
from test_study_cli import _descendants, _kill_tree

WSOL = str(Path(sys.executable).with_name("wsol"))
EPOCHS = 8


def _start(spec_path: Path, cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "RAY_ADDRESS": "", "PYTHONUNBUFFERED": "1"}
    return subprocess.Popen(
        [WSOL, "study", str(spec_path)],
        cwd=cwd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,  # its own process group, as a shell gives a job
    )


def _wait_for_a_reported_epoch(driver: subprocess.Popen, experiment: Path) -> None:
    deadline = time.monotonic() + 240
    while not any(path.stat().st_size for path in experiment.glob("*_*/result.json")):
        assert driver.poll() is None, "the study ended before it could be interrupted"
        assert time.monotonic() < deadline, "no epoch reported within 240 s"
        time.sleep(0.3)


def _listening_addresses(pids: set[int]) -> list[str]:
    """Local addresses of the TCP sockets ``pids`` listen on (``ss -ltnp``)."""
    output = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout
    addresses = []
    for line in output.splitlines():
        owners = {
            int(part.split("=")[1])
            for part in line.replace(")", ",").split(",")
            if part.startswith("pid=")
        }
        if owners & pids:
            addresses.append(line.split()[3])
    return addresses


def _runs(tracking_uri: str) -> tuple[mlflow.entities.Run, dict[str, mlflow.entities.Run]]:
    client = mlflow.MlflowClient(tracking_uri)
    runs = client.search_runs([client.get_experiment_by_name("tiny").experiment_id])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    return parent, {r.data.tags["trial_id"]: r for r in runs if "trial_id" in r.data.tags}


@pytest.fixture
def study_files(synthetic_root: Path, tmp_path: Path) -> tuple[Path, Path, str]:
    spec = tiny_spec_dict(synthetic_root, tmp_path / "studies")
    spec["base"]["mask"]["epochs"] = EPOCHS
    spec["max_concurrent_trials"] = 1
    spec_path = tmp_path / "tiny.yaml"
    spec_path.write_text(yaml.safe_dump(spec))
    return spec_path, tmp_path / "studies" / "tiny", f"sqlite:///{tmp_path}/studies/mlflow.db"


def _check_interrupted_state(
    driver: subprocess.Popen, signal_number: int, experiment: Path, tracking_uri: str
) -> dict:
    output, _ = driver.communicate(timeout=180)
    name = signal.Signals(signal_number).name
    assert driver.returncode == 128 + signal_number, output[-3000:]
    assert f"interrupted by {name}" in output and "--resume" in output
    manifest = json.loads((experiment / "study.json").read_text())
    assert manifest["interrupted_by"] == name
    statuses = {t["trial_id"]: t["status"] for t in manifest["trials"]}
    assert "INCOMPLETE" in statuses.values() and set(statuses.values()) <= {
        "COMPLETE",
        "INCOMPLETE",
    }
    for trial in manifest["trials"]:  # a status never claims epochs that did not run
        assert (trial["status"] == "COMPLETE") == (trial["epochs"] == EPOCHS)
    parent, children = _runs(tracking_uri)
    assert parent.info.status == "KILLED"
    for trial_id, status in statuses.items():
        if status == "INCOMPLETE" and trial_id in children:
            assert children[trial_id].info.status == "KILLED"
    return manifest


def test_ctrl_c_stops_the_study_says_so_everywhere_and_resume_finishes_it(
    study_files: tuple[Path, Path, str], tmp_path: Path
) -> None:
    spec_path, experiment, tracking_uri = study_files
    driver = _start(spec_path, tmp_path)
    try:
        _wait_for_a_reported_epoch(driver, experiment)
        processes = {driver.pid, *_descendants(driver.pid)}
        addresses = _listening_addresses(processes)
        assert addresses  # the GCS, raylet and workers listen somewhere
        for address in addresses:
            host = address.rsplit(":", 1)[0].strip("[]").removeprefix("::ffff:")
            assert host != "*" and ipaddress.ip_address(host).is_loopback, addresses
        os.killpg(driver.pid, signal.SIGINT)  # what Ctrl-C in its terminal sends
        _check_interrupted_state(driver, signal.SIGINT, experiment, tracking_uri)
    finally:
        if driver.poll() is None:
            _kill_tree(driver)

    refused = subprocess.run(
        [WSOL, "evaluate", str(experiment), "--no-progress"], capture_output=True, text=True
    )
    assert refused.returncode == 2 and "--allow-incomplete" in refused.stderr

    resumed = subprocess.run(
        [WSOL, "study", str(spec_path), "--resume"],
        cwd=tmp_path,
        env={**os.environ, "RAY_ADDRESS": ""},
        capture_output=True,
        text=True,
        timeout=400,
    )
    assert resumed.returncode == 0, resumed.stdout[-3000:] + resumed.stderr[-3000:]
    manifest = json.loads((experiment / "study.json").read_text())
    assert manifest["interrupted_by"] is None
    assert {t["status"] for t in manifest["trials"]} == {"COMPLETE"}
    assert all(t["epochs"] == EPOCHS for t in manifest["trials"])
    parent, children = _runs(tracking_uri)
    assert parent.info.status == "FINISHED"
    assert {run.info.status for run in children.values()} == {"FINISHED"}


def test_sigterm_stops_the_study_the_same_way_and_evaluation_labels_what_it_allows(
    study_files: tuple[Path, Path, str], tmp_path: Path
) -> None:
    spec_path, experiment, tracking_uri = study_files
    driver = _start(spec_path, tmp_path)
    try:
        _wait_for_a_reported_epoch(driver, experiment)
        driver.send_signal(signal.SIGTERM)
        manifest = _check_interrupted_state(driver, signal.SIGTERM, experiment, tracking_uri)
    finally:
        if driver.poll() is None:
            _kill_tree(driver)

    allowed = subprocess.run(
        [WSOL, "evaluate", str(experiment), "--no-progress", "--allow-incomplete"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert allowed.returncode == 0, allowed.stdout[-3000:] + allowed.stderr[-3000:]
    scored = [t for t in manifest["trials"] if t["selected_checkpoint"]]
    table = (experiment / "evaluation" / "results_trials.md").read_text()
    for trial in scored:
        line = next(row for row in table.splitlines() if row.startswith(f"| {trial['name']} "))
        if trial["status"] == "INCOMPLETE":
            assert "(INCOMPLETE)" in line
    # Every unfinished trial is named: scored and labelled, or listed as not scored.
    assert "INCOMPLETE" in allowed.stdout
