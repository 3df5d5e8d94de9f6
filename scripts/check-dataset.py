#!/usr/bin/env python3
"""Reads a firehose dataset with DuckDB, an engine that shares no code with ours, and checks it
against the capture it was imported from.

    scripts/check-dataset.py DATASET_DIR CAPTURE.jsonl INSPECT.json

INSPECT.json is `firehose inspect --json CAPTURE.jsonl`: the expected rows per table. Checks,
per table: the row count with Hive partitioning on; that every row sits in the partition of its
time_us (UTC hour); that no event key appears twice; and, for one event of each kind of record,
its values field by field. Exits 1 on the first mismatch.
"""
import json
import sys
from datetime import datetime, timezone

import duckdb


def fail(msg):
    print(f"check-dataset: {msg}", file=sys.stderr)
    sys.exit(1)


def main():
    if len(sys.argv) != 4:
        print(__doc__, file=sys.stderr)
        sys.exit(2)
    root, capture, inspect_path = sys.argv[1:]
    expected = json.load(open(inspect_path))["tables"]
    con = duckdb.connect()

    def table(name):
        return f"read_parquet('{root}/{name}/*/*/*/*/*.parquet', hive_partitioning = true)"

    for name, rows in sorted(expected.items()):
        got = con.execute(f"SELECT count(*) FROM {table(name)}").fetchone()[0]
        if got != rows:
            fail(f"{name}: {got} rows, expected {rows}")
        misplaced = con.execute(
            f"""SELECT count(*) FROM (SELECT *, make_timestamp(time_us) AS ts FROM {table(name)})
                WHERE year != year(ts) OR month != month(ts) OR day != day(ts) OR hour != hour(ts)"""
        ).fetchone()[0]
        if misplaced:
            fail(f"{name}: {misplaced} rows outside the partition of their time_us")
        key = "did, time_us" if name in ("identity", "account") else "did, collection, rkey, rev"
        distinct = con.execute(f"SELECT count(*) FROM (SELECT DISTINCT {key} FROM {table(name)})").fetchone()[0]
        if distinct != rows:
            fail(f"{name}: {rows - distinct} duplicate events")
        print(f"check-dataset: {name}: {rows} rows, partitions and keys correct")

    # Field values of the first event of each shape, looked up by its key.
    seen = set()
    checked = 0
    for line in open(capture, encoding="utf-8"):
        e = json.loads(line)
        kind = e["kind"]
        if kind == "commit":
            c = e["commit"]
            shape = (c["collection"], c["operation"])
            if shape in seen or c["operation"] == "delete":
                continue
            seen.add(shape)
            r = c["record"]
            where = f"did = '{e['did']}' AND rkey = '{c['rkey']}' AND rev = '{c['rev']}'"
            coll = c["collection"]
            if coll == "app.bsky.feed.like" or coll == "app.bsky.feed.repost":
                t = "likes" if coll.endswith("like") else "reposts"
                want = (r["subject"]["uri"], r["subject"]["cid"], r.get("createdAt"), c["cid"])
                got = con.execute(f"SELECT subject_uri, subject_cid, created_at, cid FROM {table(t)} WHERE {where}").fetchall()
            elif coll == "app.bsky.feed.post":
                reply = r.get("reply") or {}
                want = (r.get("text"), r.get("langs"), (reply.get("parent") or {}).get("uri"))
                got = con.execute(f"SELECT text, langs, reply_parent_uri FROM {table('posts')} WHERE {where}").fetchall()
            elif coll in ("app.bsky.graph.follow", "app.bsky.graph.block"):
                t = "follows" if coll.endswith("follow") else "blocks"
                want = (r["subject"], r.get("createdAt"))
                got = con.execute(f"SELECT subject, created_at FROM {table(t)} WHERE {where}").fetchall()
            elif coll == "app.bsky.graph.listitem":
                want = (r["subject"], r["list"])
                got = con.execute(f"SELECT subject, list FROM {table('listitems')} WHERE {where}").fetchall()
            elif coll == "app.bsky.actor.profile":
                want = (r.get("displayName"), (r.get("avatar") or {}).get("ref", {}).get("$link"))
                got = con.execute(f"SELECT display_name, avatar_cid FROM {table('profiles')} WHERE {where}").fetchall()
            else:
                want = (json.loads(json.dumps(r)),)
                rows = con.execute(f"SELECT record_json FROM {table('records')} WHERE {where}").fetchall()
                got = [(json.loads(row[0]),) for row in rows]
        else:
            if kind in seen:
                continue
            seen.add(kind)
            where = f"did = '{e['did']}' AND time_us = {e['time_us']}"
            if kind == "identity":
                want = (e["identity"].get("handle"), e["identity"]["seq"])
                got = con.execute(f"SELECT handle, seq FROM {table('identity')} WHERE {where}").fetchall()
            else:
                want = (e["account"]["active"], e["account"].get("status"), e["account"]["seq"])
                got = con.execute(f"SELECT active, status, seq FROM {table('account')} WHERE {where}").fetchall()
        if got != [want]:
            fail(f"{kind} {line[:120]}...: DuckDB read {got}, the capture says {want}")
        checked += 1
    # Partition values are UTC hours of time_us, spelled as zero-padded path segments.
    first = json.loads(open(capture, encoding="utf-8").readline())
    hour = datetime.fromtimestamp(first["time_us"] / 1e6, tz=timezone.utc)
    print(f"check-dataset: {checked} events checked field by field; first event in hour {hour:%Y-%m-%d %H}:00 UTC")


if __name__ == "__main__":
    main()
