"""The MLflow bookkeeping of a study that survives a driver restart: a small JSON file.

It maps each trial to its MLflow run, the last epoch logged and the run's status, so a
trial started again (a retry after a worker failure, a resumed driver) keeps its run and
epochs that Tune replays are not logged twice. Written atomically.
"""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

STATE_FORMAT_VERSION = 1


@dataclass
class TrialTrackingState:
    run_id: str
    row: str
    last_epoch: int = 0
    retries: int = 0
    status: str = "RUNNING"


@dataclass
class StudyTrackingState:
    """What survives a driver restart, as JSON in the callback's state_file.

    {"format_version": 1, "tracking_uri": ..., "experiment": ..., "experiment_id": ...,
     "study": ..., "parent_run_id": ...,
     "trials": {"<trial_id>": {"run_id": ..., "row": ..., "last_epoch": 3,
                               "retries": 0, "status": "FINISHED"}}}
    """

    tracking_uri: str
    experiment: str
    study: str
    experiment_id: str | None = None
    parent_run_id: str | None = None
    trials: dict[str, TrialTrackingState] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "format_version": STATE_FORMAT_VERSION,
            "tracking_uri": self.tracking_uri,
            "experiment": self.experiment,
            "experiment_id": self.experiment_id,
            "study": self.study,
            "parent_run_id": self.parent_run_id,
            "trials": {
                trial_id: {
                    "run_id": entry.run_id,
                    "row": entry.row,
                    "last_epoch": entry.last_epoch,
                    "retries": entry.retries,
                    "status": entry.status,
                }
                for trial_id, entry in sorted(self.trials.items())
            },
        }

    @classmethod
    def load(cls, path: Path) -> StudyTrackingState | None:
        """The state recorded in `path`, None when there is no such file."""
        try:
            raw = json.loads(path.read_text())
        except FileNotFoundError:
            return None
        except (OSError, ValueError) as exc:
            raise ValueError(
                f"MLflow tracking state file {path} cannot be read ({exc}). Delete it to "
                "start a new MLflow parent run for this study (runs already logged stay)."
            ) from exc
        try:
            if raw.get("format_version") != STATE_FORMAT_VERSION:
                raise ValueError(
                    f"format_version {raw.get('format_version')!r}, expected {STATE_FORMAT_VERSION}"
                )
            return cls(
                tracking_uri=str(raw["tracking_uri"]),
                experiment=str(raw["experiment"]),
                study=str(raw["study"]),
                experiment_id=raw.get("experiment_id"),
                parent_run_id=raw.get("parent_run_id"),
                trials={
                    str(trial_id): TrialTrackingState(
                        run_id=str(entry["run_id"]),
                        row=str(entry.get("row", "")),
                        last_epoch=int(entry.get("last_epoch", 0)),
                        retries=int(entry.get("retries", 0)),
                        status=str(entry.get("status", "RUNNING")),
                    )
                    for trial_id, entry in raw.get("trials", {}).items()
                },
            )
        except (AttributeError, KeyError, TypeError, ValueError) as exc:
            raise ValueError(
                f"MLflow tracking state file {path} is malformed ({exc!r}). Delete it to "
                "start a new MLflow parent run for this study (runs already logged stay)."
            ) from exc

    def save(self, path: Path) -> None:
        """Write atomically: a temporary file in the same folder, then os.replace."""
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(self.to_json(), handle, indent=2, sort_keys=True)
                handle.write("\n")
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp_name)
            raise
