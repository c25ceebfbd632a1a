"""A trial's one display name and its files' names (no Ray import: the report and
evaluation use them too)."""

from __future__ import annotations


def trial_name(row: str, trial_id: str) -> str:
    """A trial's one display name, ``<row>_<trial id>`` (``full_984d0_00000``): Ray's
    trial name, its folder, its MLflow run, the console, the tables and the report."""
    return f"{row}_{trial_id}"


#: The weight-map evolution figure (Fig. 4) in a trial's last checkpoint and its MLflow run.
WEIGHT_MAPS_FILE = "weight_maps.png"
