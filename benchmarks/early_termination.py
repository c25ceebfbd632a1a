"""Early termination on a lambda grid: the same study with and without it, in one run.

    python benchmarks/early_termination.py [--out runs/bench-early-termination]
        [--lams 0 0.25 0.5 1 1.5 2 3 4] [--epochs 8] [--grace 2] [--degenerate 4] [--smoke]

Both studies are ``ablations/smoke.yaml``'s CPU recipe on ``data/synthetic`` with one row
and a grid over ``mask.lam``, compared by validation GT-known loc at each trial's
S-selected epoch (as ``ablations/lambda.yaml``). The second adds ``search.scheduler``:
ASHA (grace period ``--grace`` epochs, reduction factor 2) on the guarded S of each
trial's selection so far, and the rule that stops a trial after ``--degenerate``
consecutive degenerate epochs. Both share one f (trained first, not timed). Printed and
saved (JSON): each study's wall time, trials stopped and where, epochs trained, the best
trial and its selected epoch, and whether early termination kept them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

# Run this checkout's code, whatever `wsol` the interpreter has installed.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import yaml

from study.tables import markdown_table

REPO_ROOT = Path(__file__).resolve().parent.parent
SMOKE_SPEC = REPO_ROOT / "ablations" / "smoke.yaml"


def spec(args: argparse.Namespace, name: str, early: bool) -> dict[str, Any]:
    raw = yaml.safe_load(SMOKE_SPEC.read_text())
    raw["name"] = name
    raw["description"] = f"lambda grid {'with' if early else 'without'} early termination"
    raw["base"]["data"]["root"] = str(args.data)
    raw["base"]["mask"]["epochs"] = args.epochs
    raw["base"]["data"]["cache_dir"] = str(args.out / "decoded-images")
    raw["rows"] = {"full": {}}
    raw["search_space"] = {"mask.lam": {"grid": list(args.lams)}}
    raw["trial_selection"] = {"metric": "val_gt_known_loc", "mode": "max"}
    raw["storage"] = str(args.out / "studies")
    raw["search"] = {"algorithm": "grid", "num_samples": 1}
    if early:
        raw["search"]["scheduler"] = {
            "asha": {"grace_period": args.grace, "reduction_factor": 2},
            "stop_after_degenerate": args.degenerate,
        }
    if args.smoke:
        raw["base"]["classifier"]["epochs"] = 1
        raw["base"]["data"].update(resize=40, crop=32)
    return raw


def summary(outcome: Any, seconds: float) -> dict[str, Any]:
    trials = outcome.summaries
    ranked = [t for t in trials if t.objective is not None and t.objective == t.objective]
    best = max(ranked, key=lambda t: t.objective) if ranked else None
    return {
        "wall_s": seconds,
        "trials": len(trials),
        "epochs_trained": sum(t.epochs for t in trials),
        "stopped": [
            {"lam": t.params["mask.lam"], "epoch": t.epochs, "by": t.stopped_by}
            for t in trials
            if t.status == "STOPPED"
        ],
        "per_trial": [
            {
                "lam": t.params["mask.lam"],
                "status": t.status,
                "epochs": t.epochs,
                "selected_epoch": t.selected_epoch,
                "objective": t.objective,
            }
            for t in trials
        ],
        "best": None
        if best is None
        else {
            "lam": best.params["mask.lam"],
            "selected_epoch": best.selected_epoch,
            "val_gt_known_loc": best.objective,
        },
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("runs/bench-early-termination"))
    parser.add_argument("--data", type=Path, default=Path("data/synthetic"))
    parser.add_argument("--lams", type=float, nargs="+", default=[0, 0.25, 0.5, 1, 1.5, 2, 3, 4])
    parser.add_argument("--epochs", type=int, default=8)
    parser.add_argument("--grace", type=int, default=2, help="ASHA grace period (epochs)")
    parser.add_argument("--degenerate", type=int, default=4, help="stop_after_degenerate")
    parser.add_argument("--smoke", action="store_true", help="toy sizes: checks the plumbing")
    args = parser.parse_args(argv)
    args.out = args.out.resolve()
    import ray

    from study.runner import run_study
    from study.spec import spec_from_dict
    from wsol.data.synthetic import synthesize_cub

    if not (args.data / "images.txt").is_file():
        synthesize_cub(args.data, seed=0)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False)
    results: dict[str, Any] = {"args": {k: str(v) for k, v in vars(args).items()}}
    try:
        from study.classifiers import train_classifiers

        # The one f both studies share, trained before either is timed.
        shared = spec_from_dict(spec(args, f"lambda-f-{stamp}", False), "benchmark")
        train_classifiers(shared, Path.cwd(), print)
        for label, early in (("without", False), ("with", True)):
            study = spec_from_dict(spec(args, f"lambda-{label}-{stamp}", early), "benchmark")
            print(f"\n== lambda grid {label} early termination ({len(args.lams)} trials)")
            started = time.perf_counter()
            outcome = run_study(study, log=print)
            results[label] = summary(outcome, time.perf_counter() - started)
    finally:
        ray.shutdown()
    plain, early = results["without"], results["with"]
    results["speedup"] = plain["wall_s"] / early["wall_s"]
    results["same_best_trial"] = (plain["best"] or {}).get("lam") == (early["best"] or {}).get(
        "lam"
    )
    results["same_selected_epoch"] = results["same_best_trial"] and (
        plain["best"]["selected_epoch"] == early["best"]["selected_epoch"]
    )
    rows = [
        [
            label,
            f"{r['wall_s']:.0f}",
            r["epochs_trained"],
            len(r["stopped"]),
            ", ".join(f"lam {s['lam']:g} at {s['epoch']} ({s['by']})" for s in r["stopped"]) or "-",
            "-"
            if r["best"] is None
            else f"lam {r['best']['lam']:g}, epoch "
            f"{r['best']['selected_epoch']} ({r['best']['val_gt_known_loc']:.1f})",
        ]
        for label, r in (("without", plain), ("with", early))
    ]
    header = ["early termination", "wall s", "epochs", "stopped", "where", "best (val GT-known)"]
    print("\n" + markdown_table(header, rows))
    print(
        f"speedup {results['speedup']:.2f}x; same best trial: {results['same_best_trial']}; "
        f"same selected epoch: {results['same_selected_epoch']}"
    )
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "early_termination.json").write_text(json.dumps(results, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
