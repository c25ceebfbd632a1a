"""``wsol report``: the evaluated tables again, and one self-contained HTML page."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from study.errors import StudyError
from study.evaluation import DIAGNOSTIC, Log, markdown, resolve_source


def _read_csv(path: Path) -> list[list[str]]:
    import csv

    with path.open() as handle:
        return list(csv.reader(handle))


def _html_table(rows: list[list[str]]) -> str:
    head = "".join(f"<th>{html.escape(cell)}</th>" for cell in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
        for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _image(path: Path, caption: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode()
    return (
        f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(caption)}">'
        f"<figcaption>{html.escape(caption)}</figcaption></figure>"
    )


STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em; max-width: 1200px; }
table { border-collapse: collapse; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 4px 10px; text-align: right; }
th:first-child, td:first-child, th:nth-child(2), td:nth-child(2) { text-align: left; }
figure { display: inline-block; margin: 0.5em; vertical-align: top; }
img { max-width: 560px; }
.diagnostic { border: 2px dashed #c00; padding: 0.5em 1em; }
"""


def report(
    target: str, *, storage_root: str = "studies", out: Path | None = None, log: Log = print
) -> Path:
    """Print the evaluation tables of ``target`` and write ``<out>/report.html``."""
    source = resolve_source(target, storage_root, out)
    out_dir = source.out_dir
    rows_csv, trials_csv = out_dir / "results_rows.csv", out_dir / "results_trials.csv"
    if not rows_csv.is_file():
        raise StudyError(
            f"no evaluation of {source.name} in {out_dir}: run `wsol evaluate {target}` first"
        )
    rows, trials = _read_csv(rows_csv), _read_csv(trials_csv)
    log(markdown(rows))
    log(markdown(trials))
    parts = [
        f"<h1>{html.escape(source.name)}: test-split results</h1>",
        "<p>Each trial scored at the epoch its validation S-score selected; mean ± standard "
        "deviation over the trials (seeds) of each row. Metrics in percent.</p>",
        "<h2>Rows</h2>",
        _html_table(rows),
        "<h2>Trials</h2>",
        _html_table(trials),
        "<h2>Figures</h2>",
    ]
    for cache in sorted((out_dir / "trials").glob("*.json")):
        item = json.loads(cache.read_text())
        for kind, path in item.get("figures", {}).items():
            if Path(path).is_file():
                parts.append(_image(Path(path), f"{item['method']} {item['key']}: {kind}"))
    diagnostics = sorted((out_dir / "diagnostics").glob("*.json"))
    if diagnostics:
        parts.append(f'<div class="diagnostic"><h2>{html.escape(DIAGNOSTIC)}</h2>')
        for cache in diagnostics:
            result = json.loads(cache.read_text())
            parts.append(
                f"<p>{html.escape(result['trial_id'])}: selected epoch "
                f"{result['selected_epoch']} scores "
                f"{result['test_gt_known_loc_at_selected']:.1f}%; best epoch on test "
                f"{result['best_epoch_on_test']} scores {result['best_test_gt_known_loc']:.1f}% "
                f"(gap {result['gap']:.1f} points).</p>"
            )
            if Path(result["figure"]).is_file():
                parts.append(_image(Path(result["figure"]), result["trial_id"]))
        parts.append("</div>")
    page = (
        f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(source.name)}"
        f"</title><style>{STYLE}</style></head><body>{''.join(parts)}</body></html>"
    )
    path = out_dir / "report.html"
    path.write_text(page)
    log(f"report: {path}")
    return path
