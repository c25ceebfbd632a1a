"""A study on a simulated two-node Ray cluster with logical GPUs, tracked by a real MLflow
server: trials share GPUs four to one, land on both nodes, and every run reads back."""

from __future__ import annotations

import time
from collections import defaultdict
from pathlib import Path

import mlflow
import pytest
import ray
from ray import tune
from ray.cluster_utils import Cluster
from studies import tiny_study

from study.runner import run_study


class _Placement(tune.Callback):
    """Driver-side record of when each trial ran and on which node and GPU."""

    def __init__(self) -> None:
        self.started: dict[str, float] = {}
        self.spans: list[tuple[str, str, float, float]] = []  # (node, gpu, start, end)

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self.started[trial.trial_id] = time.monotonic()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        result = trial.last_result
        self.spans.append(
            (
                result["node_id"],
                result["gpu_ids"],
                self.started[trial.trial_id],
                time.monotonic(),
            )
        )


def _max_overlap(spans: list[tuple[float, float]]) -> int:
    events = sorted([(start, 1) for start, _ in spans] + [(end, -1) for _, end in spans])
    running = peak = 0
    for _, change in events:
        running += change
        peak = max(peak, running)
    return peak


@pytest.fixture
def two_gpu_nodes():
    # Logical resources: 8 CPUs per node so that only the GPU share limits packing.
    cluster = Cluster(
        initialize_head=True,
        head_node_args={"num_cpus": 8, "num_gpus": 1, "include_dashboard": False},
    )
    cluster.add_node(num_cpus=8, num_gpus=1)
    ray.init(address=cluster.address, log_to_driver=False)
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_quarter_gpu_trials_spread_over_two_nodes_at_most_four_per_gpu_and_log_to_mlflow(
    two_gpu_nodes: Cluster, synthetic_root: Path, tmp_path: Path, mlflow_server: str
) -> None:
    study = tiny_study(
        synthetic_root,
        tmp_path / "studies",
        **{
            "name": "packing",
            "base.device": "auto",  # no CUDA here: the trials run on CPU, placed by Ray
            "resources": {"cpu": 1, "gpu": 0.25},
            "search_space": {"seed": {"grid": [0, 1, 2]}},
            "base.mask.epochs": 1,
            "mlflow": {"tracking_uri": mlflow_server},
        },
    )
    placement = _Placement()

    outcome = run_study(study, callbacks=[placement], log=lambda _: None)

    assert len(outcome.summaries) == 6
    assert all(s.status == "COMPLETE" for s in outcome.summaries)
    by_gpu: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for node, gpu, start, end in placement.spans:
        assert gpu != ""  # each trial held a (logical) GPU share
        by_gpu[node, gpu].append((start, end))
    assert len({node for node, _ in by_gpu}) == 2  # both nodes ran trials
    assert max(_max_overlap(spans) for spans in by_gpu.values()) <= 4
    assert sum(len(spans) for spans in by_gpu.values()) == 6

    client = mlflow.MlflowClient(mlflow_server)
    experiment = client.get_experiment_by_name("packing")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [run for run in runs if "mlflow.parentRunId" not in run.data.tags]
    children = [run for run in runs if run.data.tags.get("mlflow.parentRunId")]
    assert parent.data.tags["study"] == "packing"
    assert len(children) == 6
    assert {run.data.tags["mlflow.parentRunId"] for run in children} == {parent.info.run_id}
    for run in children:
        assert run.info.status == "FINISHED"
        assert run.data.params["mask.reg"] in {"True", "False", "true", "false"}
        steps = client.get_metric_history(run.info.run_id, "val_s_score")
        assert [m.step for m in steps] == [1]
        assert "selected_checkpoint" in run.data.tags
        artifacts = [a.path for a in client.list_artifacts(run.info.run_id)]
        assert artifacts == ["weight_maps.png"]
