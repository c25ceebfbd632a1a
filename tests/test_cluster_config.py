"""ray_cluster.yaml passes Ray's own validation and keeps the properties studies rely on."""

from __future__ import annotations

import ipaddress
import shlex
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent
CLUSTER_YAML = REPO / "ray_cluster.yaml"


def commands(lines: list[str]) -> list[list[str]]:
    """Each shell command of a list of setup lines, as argv (split at ``&&`` and ``;``)."""
    argvs: list[list[str]] = []
    for line in lines:
        argv: list[str] = []
        for token in shlex.split(line.replace(";", " ; "), posix=True):
            if token in ("&&", ";", "&", "||"):
                argvs.append(argv)
                argv = []
            else:
                argv.append(token)
        argvs.append(argv)
    return [argv for argv in argvs if argv]


def option(argv: list[str], name: str) -> str | None:
    """The value of ``name`` in ``argv`` (``--name value`` or ``--name=value``)."""
    for index, token in enumerate(argv):
        if token == name and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith(name + "="):
            return token.split("=", 1)[1]
    return None


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


def test_setup_installs_the_mounted_project_with_the_constraints_file(
    cluster: dict[str, Any],
) -> None:
    mounts = cluster.get("file_mounts", {})
    project = next(remote for remote, local in mounts.items() if local in (".", "./"))
    installs = []
    folder = None
    for argv in commands(cluster["setup_commands"]):
        if argv[0] == "cd":
            folder = argv[1]
        if "pip" in argv and "install" in argv:
            installs.append((folder, argv))
    editable = [(where, argv) for where, argv in installs if option(argv, "-e") == "."]
    assert len(editable) == 1, installs
    where, argv = editable[0]
    assert where == project  # the mounted checkout, not whatever is in the home folder
    constraints = option(argv, "-c")
    assert constraints is not None and (REPO / constraints).is_file()
    assert "torch==" in (REPO / constraints).read_text()


def test_mlflow_server_on_the_head_binds_loopback_only(cluster: dict[str, Any]) -> None:
    head = commands(cluster.get("head_setup_commands", []) + cluster["head_start_ray_commands"])
    # A command may be prefixed (nohup, env ...): take what follows `mlflow server`.
    servers = [
        argv[argv.index("mlflow") :]
        for argv in head
        if "mlflow" in argv
        and argv[argv.index("mlflow") + 1 : argv.index("mlflow") + 2] == ["server"]
    ]
    assert len(servers) == 1, head
    host = option(servers[0], "--host") or option(servers[0], "-h")
    assert host is not None and ipaddress.ip_address(host).is_loopback
    workers = commands(cluster.get("worker_start_ray_commands", []))
    assert not any("mlflow" in argv for argv in workers)
