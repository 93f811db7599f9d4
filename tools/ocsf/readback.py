#!/usr/bin/env python3
"""Reads the connector's OCSF Parquet output back with DuckDB, an independent reader, the way
Athena sees it: one table per source directory, hive partitions (region=, accountId=, eventDay=)
as columns.

Usage: readback.py ROOT
  ROOT holds one directory per source (a local copy of s3://{OCSF_BUCKET}/{OCSF_PREFIX}).
Prints one JSON line per row: {"source", "region", "accountId", "eventDay", "file", "event"},
`event` being the row with its null attributes dropped (what the OCSF validator checks) and
`unmapped`, a Parquet map, as a JSON object.
"""

import json
import os
import sys

import duckdb


def drop_nulls(v):
    if isinstance(v, dict):
        return {k: drop_nulls(x) for k, x in v.items() if x is not None}
    if isinstance(v, list):
        return [drop_nulls(x) for x in v if x is not None]
    return v


def main():
    root = sys.argv[1]
    con = duckdb.connect()
    for source in sorted(os.listdir(root)):
        pattern = os.path.join(root, source, "**", "*.parquet")
        rows = con.execute(
            "SELECT to_json(t)::VARCHAR FROM read_parquet(?, hive_partitioning = true, filename = true) t",
            [pattern],
        ).fetchall()
        for (text,) in rows:
            row = json.loads(text)
            out = {"source": source}
            for k in ("region", "accountId", "eventDay", "filename"):
                out["file" if k == "filename" else k] = row.pop(k, None)
            out["event"] = drop_nulls(row)
            print(json.dumps(out, separators=(",", ":")))


if __name__ == "__main__":
    main()
