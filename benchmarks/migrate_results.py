#!/usr/bin/env python
"""Convert a results file of the earlier row format into rows of the current schema, once.

    python benchmarks/migrate_results.py bench_v2/results.json bench_v2/results.json   # in place
    python benchmarks/migrate_results.py OLD_results.json NEW_results.json

What changes in each row (everything else is kept as it is, numbers included):

* ``schema`` (the format version) and ``kind`` (segmentation, frechet or speed) are added;
* ``commit`` becomes ``code_version``;
* fields the schema asks for that a row predates are added: measurement fields as null, a
  generator row's ``synthesis_styles`` as "random" (the only styles before the option existed)
  and its ``layouts`` from the method name, a missing ``config`` as {};
* ``k`` written as a string of digits becomes a number.

Rows already in the current schema are kept unchanged, so running it twice does no harm. Every
converted row is checked against the schema before anything is written; NEW is written
atomically. The run folders of the earlier format are not converted: a rerun trains afresh what
it needs beyond the migrated rows.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

if __package__ in (None, ""):  # started as a file: import the benchmarks package from the checkout root
    sys.path[0] = str(Path(__file__).resolve().parents[1])

from benchmarks.harness.results import SCHEMA, SCHEMA_VERSION, require_valid, row_key  # noqa: E402

LAYOUTS_OF_METHOD = re.compile(r"^generator_(real|new|mixed)_layouts")


def kind_of(row: dict) -> str:
    if row.get("benchmark") == "speed":
        return "speed"
    if "frechet_distance" in row:
        return "frechet"
    return "segmentation"


def migrate_row(row: dict) -> dict:
    """One row of the earlier format as a row of the current schema (see the module docstring)."""
    if row.get("schema") == SCHEMA_VERSION:
        return require_valid(row)
    new = {k: v for k, v in row.items() if k != "commit"}
    new.update(schema=SCHEMA_VERSION, kind=kind_of(row), code_version=row.get("commit"))
    if isinstance(new.get("k"), str) and new["k"].isdigit():
        new["k"] = int(new["k"])
    if new["kind"] == "frechet":
        match = LAYOUTS_OF_METHOD.match(str(new.get("method")))
        new.setdefault("layouts", match.group(1) if match else None)
        new.setdefault("synthesis_styles", "random")
    for name in ("machine", "date"):
        new.setdefault(name, "unknown")
    new.setdefault("config", {})
    for name in SCHEMA[new["kind"]]:
        new.setdefault(name, None)
    return require_valid(new)


def migrate_rows(rows: list[dict]) -> list[dict]:
    """All rows converted; a key repeated in the old file keeps its last row, as the runner did."""
    out: dict[tuple, dict] = {}
    for row in rows:
        new = migrate_row(row)
        out.pop(row_key(new), None)
        out[row_key(new)] = new
    return list(out.values())


def main(argv: list[str] | None = None) -> int:
    from sagegan.io import read_json, write_json

    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("old", type=Path, help="results.json of the earlier format")
    p.add_argument("new", type=Path, help="where to write the converted rows (may be OLD itself)")
    p.add_argument("--force", action="store_true", help="overwrite NEW when it exists and is not OLD")
    args = p.parse_args(argv)
    if args.new.exists() and args.new.resolve() != args.old.resolve() and not args.force:
        raise SystemExit(f"{args.new} exists; give --force to overwrite it")
    rows = read_json(args.old)
    if not isinstance(rows, list):
        raise SystemExit(f"{args.old}: expected a JSON list of rows")
    try:
        new = migrate_rows(rows)
    except ValueError as exc:
        raise SystemExit(f"{args.old}: {exc}")
    write_json(args.new, new, indent=1)
    already = sum(r.get("schema") == SCHEMA_VERSION for r in rows)
    print(f"{args.new}: {len(new)} rows ({len(rows) - already} converted, {already} already current, "
          f"{len(rows) - len(new)} repeated keys dropped)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
