"""Prepare built-in corpora: ``python -m raykd.corpora bible --out DIR [--seed N]`` (or ``raykd-data``)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from raykd.corpora import bible


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="raykd-data", description="Prepare raykd's built-in corpora.")
    sub = parser.add_subparsers(dest="corpus", required=True)
    b = sub.add_parser(
        "bible", help="English->Spanish Bible verse pairs (WMT16-shaped JSONL) from Debian's SWORD texts"
    )
    b.add_argument("--out", required=True, help="output folder for train/validation/test.jsonl")
    b.add_argument("--seed", type=int, default=0, help="seed of the chapter-level split")
    args = parser.parse_args(argv)
    try:
        counts = bible.build(args.out, seed=args.seed)
    except bible.MissingSwordTexts as error:
        parser.exit(2, f"raykd-data: error: {error}\n")
    print(json.dumps({"out": str(Path(args.out).resolve()), **counts}))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
