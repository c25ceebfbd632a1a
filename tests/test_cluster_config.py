"""ray_cluster.yaml passes Ray's own validation and keeps the properties studies rely on."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

CLUSTER_YAML = Path(__file__).resolve().parent.parent / "ray_cluster.yaml"


@pytest.fixture(scope="module")
def cluster() -> dict[str, Any]:
    return yaml.safe_load(CLUSTER_YAML.read_text())


def test_cluster_config_passes_rays_validation(cluster: dict[str, Any]) -> None:
    pytest.importorskip("jsonschema")
    from ray.autoscaler._private.util import prepare_config, validate_config
    from ray.autoscaler.sdk import fillout_defaults

    validate_config(fillout_defaults(cluster))
    # What `ray up` itself does before launching (merges setup commands, min/max workers).
    validate_config(prepare_config(cluster))


def test_head_node_is_cpu_only(cluster: dict[str, Any]) -> None:
    head = cluster["available_node_types"][cluster["head_node_type"]]
    assert head["resources"].get("GPU", 0) == 0
    assert not head["node_config"]["InstanceType"].startswith(("g", "p"))


def test_a_gpu_worker_type_has_integer_gpu_resources(cluster: dict[str, Any]) -> None:
    workers = {
        name: node
        for name, node in cluster["available_node_types"].items()
        if name != cluster["head_node_type"]
    }
    gpu_workers = [node for node in workers.values() if node["resources"].get("GPU", 0) > 0]
    assert gpu_workers
    for node in gpu_workers:
        assert all(isinstance(amount, int) for amount in node["resources"].values())
        assert node.get("max_workers", 0) >= 1


def test_setup_installs_the_project_with_the_constraints_file(cluster: dict[str, Any]) -> None:
    commands = " ; ".join(cluster["setup_commands"])
    assert "pip install -e . -c constraints.txt" in commands
    mounted_or_cloned = (
        any(local in (".", "./") for local in cluster.get("file_mounts", {}).values())
        or "git clone" in commands
    )
    assert mounted_or_cloned


def test_mlflow_server_on_the_head_binds_localhost(cluster: dict[str, Any]) -> None:
    head_commands = cluster.get("head_setup_commands", []) + cluster["head_start_ray_commands"]
    servers = [command for command in head_commands if "mlflow server" in command]
    assert len(servers) == 1
    assert "--host 127.0.0.1" in servers[0]
    assert "0.0.0.0" not in servers[0]
    assert "mlflow server" not in " ".join(cluster.get("worker_start_ray_commands", []))
