"""Shared fixtures."""

from __future__ import annotations

from pathlib import Path

import pytest

from wsol.data.synthetic import synthesize_cub


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A tiny synthetic dataset in the CUB layout: 3 classes, 12 train + 4 test each, 64 px.

    Shared by the whole session: tests must not modify it (copy it first).
    """
    return synthesize_cub(
        tmp_path_factory.mktemp("synthetic") / "cub",
        num_classes=3,
        train_per_class=12,
        test_per_class=4,
        image_size=64,
        seed=0,
    )


@pytest.fixture(scope="session")
def mlflow_server(tmp_path_factory: pytest.TempPathFactory):  # -> Iterator[str]
    """A real `mlflow server` on 127.0.0.1 (free port), SQLite backend, artifacts in tmp.

    Yields its URI, e.g. "http://127.0.0.1:43123"; stopped at the end of the session.
    """
    # Imported here so that this fixture is a pure append to the module.
    import contextlib
    import os
    import signal
    import socket
    import subprocess
    import sys
    import time
    import urllib.request

    root = tmp_path_factory.mktemp("mlflow_server")
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    command = [
        str(Path(sys.executable).with_name("mlflow")),
        "server",
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--workers",
        "1",
        "--backend-store-uri",
        f"sqlite:///{root / 'mlflow.db'}",
        "--serve-artifacts",
        "--artifacts-destination",
        str(root / "artifacts"),
    ]
    log_path = root / "server.log"
    env = {k: v for k, v in os.environ.items() if not k.startswith("MLFLOW_")}
    # No job runner (it forks a pool of huey consumers the tests do not need).
    env["MLFLOW_SERVER_ENABLE_JOB_EXECUTION"] = "false"
    with log_path.open("wb") as log:
        # Own process group: the server forks uvicorn and a job runner; stop them all.
        server = subprocess.Popen(
            command,
            cwd=root,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    uri = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            if server.poll() is not None:
                pytest.fail(
                    f"mlflow server exited with {server.returncode} before serving {uri}:\n"
                    f"{' '.join(command)}\n{log_path.read_text(errors='replace')[-4000:]}"
                )
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=1) as response:
                    if response.status == 200:
                        break
            except OSError:
                pass
            if time.monotonic() > deadline:
                pytest.fail(
                    f"mlflow server did not answer {uri}/health within 60 s:\n"
                    f"{' '.join(command)}\n{log_path.read_text(errors='replace')[-4000:]}"
                )
            time.sleep(0.25)
        yield uri
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(server.pid, signal.SIGTERM)
        try:
            server.wait(timeout=15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(server.pid, signal.SIGKILL)
            server.wait(timeout=15)
