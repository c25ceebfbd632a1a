"""The study manifest, ``<storage>/<study>/study.json``: the one source of each trial's
status, history and selected checkpoint.

Written when ``wsol study`` ends, from each trial's own record: its latest checkpoint's
``selection.json`` (the g loop's history and selection) and the checkpoints still on
storage. ``wsol evaluate`` scores what it names and nothing else; the MLflow
``selected_checkpoint`` tags are set from it. Each trial also carries its
``diagnostics`` (:mod:`wsol.diagnostics`: f weak, every epoch degenerate, boxes cover
the image; validation numbers only), which the summary prints and MLflow tags hold.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from ray import tune

from study import storage
from study.names import trial_name
from study.retention import existing_checkpoints
from study.scheduling import stopped_by
from study.spec import Study
from study.tables import markdown_table
from study.trainable import ROW_KEY, read_checkpoint_selection, trial_params
from wsol.diagnostics import Diagnostics, chance_top1, diagnose, final_f_top1

STUDY_MANIFEST = "study.json"
#: A trial's status in the manifest. COMPLETE: every planned epoch ran; STOPPED: early
#: termination (search.scheduler) ended it on purpose, its selection stands; INCOMPLETE:
#: fewer epochs for another reason (the study was interrupted: ``--resume`` finishes it);
#: ERROR: it failed.
COMPLETE, STOPPED, INCOMPLETE, ERROR = "COMPLETE", "STOPPED", "INCOMPLETE", "ERROR"
#: What ``wsol evaluate`` scores without ``--allow-incomplete``.
EVALUABLE = frozenset({COMPLETE, STOPPED})


@dataclass
class TrialSummary:
    """One trial as the manifest records it. ``history`` rows are the g loop's
    (:mod:`wsol.selection`'s schema); ``checkpoints`` maps epoch -> kept checkpoint."""

    trial_id: str
    row: str
    params: dict[str, Any]
    status: str
    epochs: int
    epochs_planned: int
    selected_epoch: int | None
    selected_s_score: float | None
    objective: float | None
    selected_checkpoint: str | None
    excluded_epochs: list[int]
    path: str
    classifier: str
    history: list[dict[str, Any]] = field(default_factory=list)
    checkpoints: dict[int, str] = field(default_factory=dict)
    error: str | None = None
    stopped_by: str | None = None  # STOPPED: which rule ("ASHA", "3 consecutive ...")
    #: wsol.diagnostics.Diagnostics.to_dict() of the trial (empty: not diagnosed).
    diagnostics: dict[str, Any] = field(default_factory=dict)

    @property
    def name(self) -> str:
        """The trial's display name (``full_984d0_00000``), as everywhere else."""
        return trial_name(self.row, self.trial_id)


def summarize_trial(
    study: Study, result: tune.Result, classifier_locations: dict[str, str], cwd: Path
) -> TrialSummary:
    """The :class:`TrialSummary` of one Tune result."""
    row, params = trial_params(result.config or _unreported_config(result))
    trial = study.trial(row, params, cwd)
    history: list[dict[str, Any]] = []
    selection: dict[str, Any] | None = None
    if result.checkpoint is not None:
        recorded = read_checkpoint_selection(result.checkpoint)
        history, selection = recorded["history"], recorded["selection"]
    checkpoints = {
        int(metrics["epoch"]): storage.uri(checkpoint.filesystem, checkpoint.path)
        for checkpoint, metrics in existing_checkpoints(result)
    }
    selected_epoch = selection["epoch"] if selection else None
    planned = trial.run_config.mask.epochs
    # Tune marks the last result of a trial a scheduler or stopper ended "done"; an
    # interrupted trial's last result is not.
    ended = bool((result.metrics or {}).get("done")) and study.search.scheduler.active
    if result.error:
        status = ERROR
    elif len(history) >= planned:
        status = COMPLETE
    else:
        status = STOPPED if ended and history else INCOMPLETE
    folder = Path(result.path).name
    return TrialSummary(
        trial_id=(result.metrics or {}).get("trial_id", folder.removeprefix(f"{row}_")),
        row=row,
        params=params,
        status=status,
        epochs=len(history),
        epochs_planned=planned,
        selected_epoch=selected_epoch,
        selected_s_score=selection["s_score"] if selection else None,
        objective=(study.trial_selection.objective(history, selected_epoch) if selection else None),
        selected_checkpoint=checkpoints.get(selected_epoch) if selection else None,
        excluded_epochs=[r["epoch"] for r in history if r["excluded_reason"]],
        path=storage.uri(result.filesystem, result.path),
        classifier=classifier_locations.get(trial.classifier_key, ""),
        history=history,
        checkpoints=checkpoints,
        error=str(result.error).splitlines()[0] if result.error else None,
        stopped_by=stopped_by(study, history) if status == STOPPED else None,
    )


def _unreported_config(result: tune.Result) -> dict[str, Any]:
    """The Tune config of a trial that never reported (still pending when the study was
    stopped): Tune's ``params.json`` when the trial started, else just its row, which its
    folder name carries (``<row>_<trial id>``)."""
    location = storage.uri(result.filesystem, f"{result.path}/params.json")
    try:
        return json.loads(storage.read_text(location))
    except (OSError, ValueError):
        return {ROW_KEY: Path(result.path).name.rsplit("_", 2)[0]}


def summarize(
    study: Study, results: tune.ResultGrid, classifier_locations: dict[str, str], cwd: Path
) -> list[TrialSummary]:
    """One :class:`TrialSummary` per trial, rows in spec order."""
    summaries = [summarize_trial(study, result, classifier_locations, cwd) for result in results]
    summaries.sort(key=lambda s: (study.row_labels().index(s.row), s.trial_id))
    f_records: dict[str, tuple[float | None, int | None]] = {}
    for summary in summaries:
        if summary.classifier not in f_records:
            f_records[summary.classifier] = classifier_record(summary.classifier)
        summary.diagnostics = trial_diagnostics(summary, *f_records[summary.classifier]).to_dict()
    return summaries


def classifier_record(location: str) -> tuple[float | None, int | None]:
    """(f's final validation top-1 in %, its number of classes) from the ``classifier.pt``
    at ``location`` (its stored per-epoch metrics and class names); (None, None) when
    there is none to read."""
    from wsol.checkpoint import CheckpointError, load_classifier

    if not location:
        return None, None
    try:
        with storage.local_copy(location) as local:
            _, state = load_classifier(local)
    except (OSError, CheckpointError, KeyError, ValueError):
        return None, None
    return final_f_top1(state.get("history", [])), len(state.get("class_names", [])) or None


def trial_diagnostics(
    summary: TrialSummary, f_val_top1: float | None, num_classes: int | None
) -> Diagnostics:
    """The trial's :class:`wsol.diagnostics.Diagnostics` from its history, its selected
    epoch and its f's validation record."""
    return diagnose(f_val_top1, num_classes, summary.history, summary.selected_epoch)


def manifest_location(study: Study, name: str) -> str:
    return storage.join(study.storage_path(), name, STUDY_MANIFEST)


def write_manifest(
    study: Study, name: str, summaries: list[TrialSummary], interrupted_by: str | None = None
) -> str:
    """Write ``study.json`` (atomically); ``interrupted_by``: the signal that stopped the
    study early (``SIGINT``, ``SIGTERM``), None when it ran to its end."""
    location = manifest_location(study, name)
    storage.write_json(
        location,
        {
            "study": name,
            "interrupted_by": interrupted_by,
            "spec": str(study.source),
            "storage": study.storage_path(),
            "tracking_uri": study.tracking_uri(),
            "experiment": study.experiment_name(),
            "trial_selection": study.trial_selection.model_dump(),
            "rows": study.row_labels(),
            "search_keys": list(study.search_space),
            "keep_all_checkpoints": study.keep_all_checkpoints,
            "trials": [{"name": summary.name, **asdict(summary)} for summary in summaries],
        },
    )
    return location


#: What the columns of :func:`format_table` mean, printed under it.
TABLE_LEGEND = """\
  selected epoch  maximal validation S-score among the selectable epochs (not excluded)
  val S           the validation S-score of the selected epoch
  excluded        epochs the guard excluded: degenerate (empty or full-image masks) or
                  warm-up (before selection.min_epoch)
  objective       what ranks trials: the trial-selection metric at the selected epoch;
                  for val_s_score the guarded S, which is S - 1 (at most 0) when every
                  epoch was degenerate"""


def format_table(study: Study, summaries: list[TrialSummary]) -> str:
    """A Markdown table: trial, row, the varying params, selected epoch, S, objective
    (the columns are explained by :data:`TABLE_LEGEND`)."""
    keys = list(study.search_space)
    metric = study.trial_selection.metric
    objective = "objective (guarded S)" if metric == "val_s_score" else f"objective ({metric})"
    header = ["trial", "row", *keys, "status", "selected epoch", "val S", "excluded", objective]

    def number(value: Any, digits: int = 4) -> str:
        if value is None or (isinstance(value, float) and math.isnan(value)):
            return "-"
        return f"{value:.{digits}g}" if isinstance(value, float) else str(value)

    rows = [
        [
            s.name,
            s.row,
            *(number(s.params.get(key)) for key in keys),
            describe_status(s),
            number(s.selected_epoch),
            number(s.selected_s_score),
            _excluded_note(s),
            number(s.objective),
        ]
        for s in summaries
    ]
    return markdown_table(header, rows).rstrip("\n")


def format_diagnostics(summaries: list[TrialSummary]) -> list[str]:
    """The console lines under the summary table: each distinct f's validation top-1
    against chance (flagged when weak), then every trial with a raised flag and why."""
    lines = ["diagnostics (validation data only; wsol.diagnostics):"]
    by_f: dict[str, list[TrialSummary]] = {}
    for summary in summaries:
        by_f.setdefault(summary.classifier, []).append(summary)
    for location, trials in by_f.items():
        record = trials[0].diagnostics
        top1, classes = record.get("f_val_top1"), record.get("num_classes")
        if top1 is None or not classes:
            lines.append(f"  f {location or '(none)'}: validation top-1 unknown")
            continue
        verdict = "WEAK" if record.get("f_weak") else "ok"
        lines.append(
            f"  f {location}: validation top-1 {top1:.1f}% against chance "
            f"{chance_top1(classes):.1f}% ({classes} classes), {verdict} "
            f"(weak below {record['thresholds']['f_weak_below']:.1f}%; {len(trials)} trial(s))"
        )
    flagged = False
    for summary in summaries:
        for warning in summary.diagnostics.get("warnings", []):
            if warning.startswith("f is weak"):
                continue  # said once per f above
            lines.append(f"  {summary.name}: {warning}")
            flagged = True
    if not flagged:
        lines.append(
            "  no trial with every epoch degenerate, boxes covering the image or a selection "
            "that misses the validation boxes"
        )
    return lines


def _excluded_note(summary: TrialSummary) -> str:
    """How many epochs the guard excluded; 'all' means the selection fell back to max-S."""
    count = len(summary.excluded_epochs)
    if summary.epochs and count == summary.epochs:
        return f"{count}/{summary.epochs} (all: plain max-S)"
    return f"{count}/{summary.epochs}"


def describe_status(summary: TrialSummary) -> str:
    """The status cell: COMPLETE, ERROR, or INCOMPLETE with the epochs that ran."""
    if summary.status == INCOMPLETE:
        return f"INCOMPLETE ({summary.epochs}/{summary.epochs_planned} epochs)"
    if summary.status == STOPPED:
        return f"STOPPED at {summary.epochs}/{summary.epochs_planned} ({summary.stopped_by})"
    return summary.status
