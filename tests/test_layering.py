"""The direction of dependencies: ``wsol`` is the method and knows nothing of the study
layer or of Ray, Optuna and MLflow."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import wsol

ORCHESTRATION = ("ray", "mlflow", "optuna", "study")


def test_importing_every_wsol_module_loads_no_orchestration_package() -> None:
    modules = sorted(info.name for info in pkgutil.walk_packages(wsol.__path__, prefix="wsol."))
    assert {"wsol.loop", "wsol.methods", "wsol.selection", "wsol.checkpoint"} <= set(modules)
    script = (
        "import importlib, json, sys\n"
        f"for name in {modules!r}: importlib.import_module(name)\n"
        "print(json.dumps(sorted(sys.modules)))\n"
    )
    output = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, check=True
    ).stdout
    loaded = json.loads(output.splitlines()[-1])
    offending = [name for name in loaded if name.split(".")[0] in ORCHESTRATION]
    assert offending == []
