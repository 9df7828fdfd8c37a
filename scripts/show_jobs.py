#!/usr/bin/env python3
"""Print the jobs table of a local (moto) or real DynamoDB, one job a line.

    python3 scripts/show_jobs.py --endpoint-url http://127.0.0.1:5000 --table local-JobsTable
    python3 scripts/show_jobs.py --endpoint-url http://127.0.0.1:5000 --table local-JobsTable --json

Without --endpoint-url it talks to real AWS with the usual credentials and region. --json
prints every item whole (DynamoDB types turned into plain JSON). Needs boto3 (it comes with
``pip install 'moto[server]'``).
"""

import argparse
import datetime
import decimal
import json
import os
import sys

try:
    import boto3
    from boto3.dynamodb.types import TypeDeserializer
except ImportError as missing:  # pragma: no cover - environment problem
    sys.exit(f"show_jobs.py needs boto3 ({missing}); install it with: python3 -m pip install boto3")


def plain(value):
    """DynamoDB's Decimals and sets as JSON-friendly values."""
    if isinstance(value, decimal.Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, (set, frozenset)):
        return sorted(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, (bytes, bytearray)):
        return value.hex()
    return value


def first(item, *paths):
    """The first of the dotted `paths` present in `item` (the item layout may nest)."""
    for path in paths:
        value = item
        for key in path.split("."):
            if isinstance(value, str) and value.startswith("{"):
                # Nested documents may be stored as JSON text (the conversation reference is).
                try:
                    value = json.loads(value)
                except ValueError:
                    break
            if isinstance(value, dict) and key in value:
                value = value[key]
            else:
                break
        else:
            if value is not None and not isinstance(value, (dict, list)):
                return value
    return None


def when(value):
    """Epoch seconds or milliseconds, or an ISO string, as a short UTC time."""
    if isinstance(value, (int, float)):
        seconds = value / 1000 if value > 10**11 else value
        return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")
    return "" if value is None else str(value)


def scan(table, endpoint_url, region):
    client = boto3.client("dynamodb", endpoint_url=endpoint_url, region_name=region)
    deserializer = TypeDeserializer()
    items = []
    for page in client.get_paginator("scan").paginate(TableName=table):
        for raw in page.get("Items", []):
            items.append(plain({k: deserializer.deserialize(v) for k, v in raw.items()}))
    return items


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-url", default=os.environ.get("AWS_ENDPOINT_URL"))
    parser.add_argument("--table", default=os.environ.get("JOBS_TABLE_NAME"), help="default: $JOBS_TABLE_NAME")
    parser.add_argument("--region", default=os.environ.get("AWS_REGION", "us-east-1"))
    parser.add_argument("--json", action="store_true", help="print the items whole, as JSON lines")
    args = parser.parse_args(argv)
    if not args.table:
        parser.error("--table is required (or set JOBS_TABLE_NAME)")
    if args.endpoint_url:
        # moto accepts any credentials; real AWS keeps the caller's own.
        os.environ.setdefault("AWS_ACCESS_KEY_ID", "test")
        os.environ.setdefault("AWS_SECRET_ACCESS_KEY", "test")

    items = scan(args.table, args.endpoint_url, args.region)
    items.sort(key=lambda i: (str(first(i, "listKey") or ""), first(i, "createdAt") or 0, first(i, "jobNumber") or 0))
    if args.json:
        for item in items:
            print(json.dumps(item, sort_keys=True, ensure_ascii=False))
        return
    if not items:
        print(f"{args.table}: no jobs")
        return

    rows = [(
        str(first(item, "jobNumber", "number", "job.number") or ""),
        str(first(item, "state", "status.state", "job.status.state", "status") or ""),
        str(first(item, "conversationId", "reference.conversation.id", "job.reference.conversation.id") or ""),
        when(first(item, "createdAt", "job.createdAt")),
        when(first(item, "expiresAt")),
    ) for item in items]
    header = ("job", "state", "conversation", "created", "expires")
    widths = [max(len(r[i]) for r in rows + [header]) for i in range(len(header))]
    for row in [header] + rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip())
    print(f"{len(items)} job(s) in {args.table}")


if __name__ == "__main__":
    main()
