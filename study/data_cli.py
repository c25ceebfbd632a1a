"""``wsol data``: look at a dataset folder before training on it.

    wsol data check ROOT --format NAME [--split S ...] [--require-masks] [--decode]
                         [--per-class] [--workers N] [--no-progress]

Checks the folder in the format's official layout (see wsol.data.formats) in seconds:
prints the counts per split and class, then OK or every problem found, each naming the
file and line. Exit status 0 when the folder is fine, 2 when a problem was found.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import get_args

from wsol.config import DatasetFormatName

FORMAT_NAMES = get_args(DatasetFormatName)


def add_parser(commands: argparse._SubParsersAction) -> None:
    """Register ``wsol data`` and its ``check`` action on the ``wsol`` subcommands."""
    data = commands.add_parser(
        "data",
        help="check a dataset folder: `wsol data check ROOT --format NAME`",
        description="Dataset tools. `check` validates a dataset folder in its official "
        "layout in seconds and lists every problem.",
    )
    actions = data.add_subparsers(dest="data_command", required=True, metavar="ACTION")
    check = actions.add_parser(
        "check",
        help="validate a dataset folder; exit status 2 on any problem",
        description="Validate a dataset folder in its official layout without decoding its "
        "images: annotation files, missing or unreadable (garbage, truncated) images, boxes "
        "outside their image, masks whose size differs from the image, images in two splits. "
        "Prints the counts per split and class, then OK or every problem (file:line). "
        "Exit status 0 if fine, 2 on any problem.",
    )
    check.add_argument("root", type=Path, help="the dataset folder")
    check.add_argument(
        "--format", required=True, choices=FORMAT_NAMES, help="its layout (data.format)"
    )
    check.add_argument(
        "--split",
        dest="splits",
        action="append",
        choices=("train", "val", "test"),
        help="check only this split (repeatable; default: every split of the format)",
    )
    check.add_argument(
        "--require-masks",
        action="store_true",
        help="every image must have a mask, for PxAP (data.require_masks)",
    )
    check.add_argument(
        "--decode", action="store_true", help="also decode every image and mask in full (slow)"
    )
    check.add_argument(
        "--strict",
        action="store_true",
        help="classes listed without any image are errors, not warnings",
    )
    check.add_argument("--per-class", action="store_true", help="print every class's counts")
    check.add_argument("--workers", type=int, default=8, help="file-reading threads (default 8)")
    check.add_argument("--no-progress", action="store_true", help="no progress bar")


def cmd_data(args: argparse.Namespace) -> int:
    """Run ``wsol data <action>``; returns the exit status."""
    from wsol.data.check import check_dataset

    report = check_dataset(
        args.root,
        args.format,
        args.splits,
        require_masks=args.require_masks,
        decode=args.decode,
        strict=args.strict,
        workers=args.workers,
        progress=not args.no_progress and sys.stderr.isatty(),
    )
    print(report.render(per_class=args.per_class))
    return 0 if report.ok else 2
