"""Reads a lake directory with pyarrow alone and prints line totals for one tenant.

Proof that the lake's files are ordinary Parquet any tool can read. Usage:
lake_totals.py LAKE_DIR TENANT  ->  in_count=N out_count=M files=K
"""
import sys

import pyarrow.dataset as ds


def main(lake, tenant):
    data = ds.dataset(f"{lake}/line_counts/tenant={tenant}", format="parquet", partitioning="hive")
    table = data.to_table(columns=["stream", "line", "minute", "in_count", "out_count"])
    # Rows are unique per stream, line and minute; a compaction in flight could show one twice.
    rows = {(r["stream"], r["line"], r["minute"]): (r["in_count"], r["out_count"]) for r in table.to_pylist()}
    ins = sum(v[0] for v in rows.values())
    outs = sum(v[1] for v in rows.values())
    print(f"in_count={ins} out_count={outs} files={len(data.files)}")


if __name__ == "__main__":
    main(*sys.argv[1:])
