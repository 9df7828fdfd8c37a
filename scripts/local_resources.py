#!/usr/bin/env python3
"""Create the template's DynamoDB tables, SQS queues and schedule groups on a local endpoint (moto, LocalStack).

template.yaml is the single source of truth for the shape of the table and the queues: this
script reads it and creates, with boto3, every ``AWS::DynamoDB::Table`` (attribute
definitions, key schema, secondary indexes, billing mode, then TTL) and every
``AWS::SQS::Queue`` (its attributes, a RedrivePolicy pointing at the created dead-letter
queue), named ``{prefix}-{LogicalId}`` (plus ``.fifo`` for a FIFO queue, as SQS requires; a
RedrivePolicy then points at the dead-letter queue's real ``.fifo`` ARN), and every
``AWS::Scheduler::ScheduleGroup`` (EventBridge Scheduler: a schedule needs its group to exist;
a name longer than the 64 characters Scheduler allows is shortened with a hash). Every other
resource type, and every other section of the template (parameters, functions, roles, API,
outputs), is ignored.

It is idempotent (a resource that already exists is fine) and prints one JSON object mapping
each created logical id to its table name, queue URL or schedule group name, e.g.

    {"DeliveryTable": "dev-DeliveryTable", "NotificationsQueue": "http://127.0.0.1:5000/...", ...}

Usage:
    python3 scripts/local_resources.py --endpoint-url http://127.0.0.1:5000 \
        [--template template.yaml] [--prefix local] [--region us-east-1]

Needs boto3 and pyyaml (both come with ``pip install 'moto[server]'``).
"""

import argparse
import hashlib
import json
import os
import re
import sys

try:
    import boto3
    import yaml
    from botocore.exceptions import ClientError
except ImportError as missing:  # pragma: no cover - environment problem
    sys.exit(f"local_resources.py needs boto3 and pyyaml ({missing}); "
             "install them with: python3 -m pip install 'moto[server]'")

TABLE = "AWS::DynamoDB::Table"
QUEUE = "AWS::SQS::Queue"
SCHEDULE_GROUP = "AWS::Scheduler::ScheduleGroup"
SUPPORTED = (TABLE, QUEUE, SCHEDULE_GROUP)
ACCOUNT_ID = "123456789012"


# --- A YAML loader that understands CloudFormation's short-form tags ----------------------

class CfnLoader(yaml.SafeLoader):
    """SafeLoader plus constructors for !Ref, !GetAtt, !Sub, !Join, … (any `!Tag`)."""


def _construct_tag(loader, tag_suffix, node):
    if isinstance(node, yaml.ScalarNode):
        value = loader.construct_scalar(node)
    elif isinstance(node, yaml.SequenceNode):
        value = loader.construct_sequence(node, deep=True)
    else:
        value = loader.construct_mapping(node, deep=True)
    if tag_suffix == "Ref":
        return {"Ref": value}
    if tag_suffix == "GetAtt" and isinstance(value, str):
        value = value.split(".", 1)
    if tag_suffix == "Condition":
        return {"Condition": value}
    return {f"Fn::{tag_suffix}": value}


CfnLoader.add_multi_constructor("!", _construct_tag)


def load_template(path):
    with open(path, encoding="utf-8") as handle:
        return yaml.load(handle, Loader=CfnLoader) or {}


# --- Intrinsic functions, as far as a local stack needs them ------------------------------

class Resolver:
    def __init__(self, template, prefix, region):
        self.parameters = template.get("Parameters") or {}
        self.prefix = prefix
        self.region = region
        self.created = {}  # logical id -> {"Ref": ..., "Arn": ..., ...}

    def resolve(self, value):
        if isinstance(value, list):
            return [self.resolve(item) for item in value]
        if not isinstance(value, dict):
            return value
        if len(value) == 1:
            (key, arg), = value.items()
            if key == "Ref":
                return self.ref(arg)
            if key == "Fn::GetAtt":
                logical_id, attribute = self.resolve(arg) if isinstance(arg, list) else arg.split(".", 1)
                return self.attribute(logical_id, attribute)
            if key == "Fn::Sub":
                return self.sub(arg)
            if key == "Fn::Join":
                separator, items = arg
                return separator.join(str(item) for item in self.resolve(items))
            if key == "Fn::Select":
                index, items = self.resolve(arg)
                return items[int(index)]
            if key == "Fn::Split":
                separator, text = self.resolve(arg)
                return text.split(separator)
            if key.startswith("Fn::"):
                raise SystemExit(f"local_resources.py: {key} is not supported in the properties "
                                 "of a table or queue")
        return {key: self.resolve(item) for key, item in value.items()}

    def ref(self, name):
        pseudo = {
            "AWS::Region": self.region,
            "AWS::AccountId": ACCOUNT_ID,
            "AWS::StackName": self.prefix,
            "AWS::Partition": "aws",
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::NoValue": None,
        }
        if name in pseudo:
            return pseudo[name]
        if name in self.created:
            return self.created[name]["Ref"]
        if name in self.parameters:
            parameter = self.parameters[name] or {}
            if "Default" not in parameter:
                raise SystemExit(f"local_resources.py: parameter {name} has no Default")
            return parameter["Default"]
        raise SystemExit(f"local_resources.py: cannot resolve !Ref {name}")

    def attribute(self, logical_id, attribute):
        try:
            return self.created[logical_id][attribute]
        except KeyError:
            raise SystemExit(f"local_resources.py: cannot resolve !GetAtt {logical_id}.{attribute}")

    def sub(self, arg):
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], self.resolve(arg[1]))

        def replace(match):
            name = match.group(1)
            if name.startswith("!"):
                return "${" + name[1:] + "}"
            if name in variables:
                return str(variables[name])
            if "." in name:
                return str(self.attribute(*name.split(".", 1)))
            return str(self.ref(name))

        return re.sub(r"\$\{([^}]+)\}", replace, text)


def dependencies(value, candidates):
    """Logical ids among `candidates` that `value` refers to (Ref, GetAtt, Sub)."""
    found = set()
    if isinstance(value, list):
        for item in value:
            found |= dependencies(item, candidates)
    elif isinstance(value, dict):
        for key, arg in value.items():
            if key == "Ref" and arg in candidates:
                found.add(arg)
            elif key == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) else str(arg).split(".", 1)[0]
                if target in candidates:
                    found.add(target)
            elif key == "Fn::Sub":
                text = arg if isinstance(arg, str) else arg[0]
                for name in re.findall(r"\$\{([^}!][^}]*)\}", text):
                    if name.split(".", 1)[0] in candidates:
                        found.add(name.split(".", 1)[0])
                if not isinstance(arg, str):
                    found |= dependencies(arg[1], candidates)
            else:
                found |= dependencies(arg, candidates)
    return found


def creation_order(resources):
    """Supported resources, each after the ones it refers to (a DLQ before its source queue)."""
    candidates = {lid for lid, res in resources.items() if (res or {}).get("Type") in SUPPORTED}
    order, visiting, done = [], set(), set()

    def visit(logical_id):
        if logical_id in done:
            return
        if logical_id in visiting:
            raise SystemExit(f"local_resources.py: circular reference through {logical_id}")
        visiting.add(logical_id)
        for dependency in sorted(dependencies(resources[logical_id].get("Properties") or {}, candidates)):
            visit(dependency)
        visiting.discard(logical_id)
        done.add(logical_id)
        order.append(logical_id)

    for logical_id in sorted(candidates):
        visit(logical_id)
    return order


def strip_none(value):
    if isinstance(value, dict):
        return {k: strip_none(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [strip_none(v) for v in value if v is not None]
    return value


# --- DynamoDB -----------------------------------------------------------------------------

INDEX_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")


def create_table(dynamodb, name, props):
    request = {
        "TableName": name,
        "AttributeDefinitions": props["AttributeDefinitions"],
        "KeySchema": props["KeySchema"],
        "BillingMode": props.get("BillingMode", "PROVISIONED"),
    }
    for key in ("GlobalSecondaryIndexes", "LocalSecondaryIndexes"):
        if props.get(key):
            request[key] = [{k: v for k, v in index.items() if k in INDEX_KEYS} for index in props[key]]
    if props.get("ProvisionedThroughput"):
        request["ProvisionedThroughput"] = props["ProvisionedThroughput"]
    if props.get("StreamSpecification"):
        request["StreamSpecification"] = {"StreamEnabled": True, **props["StreamSpecification"]}
    if props.get("Tags"):
        request["Tags"] = props["Tags"]
    try:
        dynamodb.create_table(**request)
    except ClientError as error:
        if error.response["Error"]["Code"] != "ResourceInUseException":
            raise
    dynamodb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 60})

    ttl = props.get("TimeToLiveSpecification")
    if ttl and ttl.get("Enabled") in (True, "true", "True"):
        current = dynamodb.describe_time_to_live(TableName=name).get("TimeToLiveDescription", {})
        if not (current.get("TimeToLiveStatus") in ("ENABLED", "ENABLING")
                and current.get("AttributeName") == ttl["AttributeName"]):
            dynamodb.update_time_to_live(
                TableName=name,
                TimeToLiveSpecification={"AttributeName": ttl["AttributeName"], "Enabled": True},
            )
    arn = dynamodb.describe_table(TableName=name)["Table"]["TableArn"]
    return {"Ref": name, "Arn": arn, "output": name}


# --- SQS ----------------------------------------------------------------------------------

QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication", "DeduplicationScope", "DelaySeconds", "FifoQueue",
    "FifoThroughputLimit", "KmsDataKeyReusePeriodSeconds", "KmsMasterKeyId",
    "MaximumMessageSize", "MessageRetentionPeriod", "ReceiveMessageWaitTimeSeconds",
    "RedriveAllowPolicy", "RedrivePolicy", "SqsManagedSseEnabled", "VisibilityTimeout",
)


def queue_attribute(value):
    if isinstance(value, (dict, list)):
        return json.dumps(value)
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def create_queue(sqs, name, props):
    attributes = {key: queue_attribute(props[key]) for key in QUEUE_ATTRIBUTES if key in props}
    if attributes.get("FifoQueue") == "true" and not name.endswith(".fifo"):
        name += ".fifo"
    request = {"QueueName": name, "Attributes": attributes}
    tags = {tag["Key"]: str(tag["Value"]) for tag in props.get("Tags") or []}
    if tags:
        request["tags"] = tags
    try:
        url = sqs.create_queue(**request)["QueueUrl"]
    except ClientError as error:
        if error.response["Error"]["Code"] not in ("QueueAlreadyExists", "QueueNameExists"):
            raise
        url = sqs.get_queue_url(QueueName=name)["QueueUrl"]
        if attributes:
            sqs.set_queue_attributes(QueueUrl=url, Attributes=attributes)
    arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
    return {"Ref": url, "Arn": arn, "QueueUrl": url, "QueueName": name, "output": url}


# --- EventBridge Scheduler -----------------------------------------------------------------

SCHEDULER_NAME_MAX = 64


def create_schedule_group(scheduler, name, props):
    name = props.get("Name") or name
    if len(name) > SCHEDULER_NAME_MAX:
        digest = hashlib.sha1(name.encode()).hexdigest()[:8]
        name = f"{name[:SCHEDULER_NAME_MAX - 9]}-{digest}"
    try:
        arn = scheduler.create_schedule_group(Name=name)["ScheduleGroupArn"]
    except ClientError as error:
        if error.response["Error"]["Code"] != "ConflictException":
            raise
        arn = scheduler.get_schedule_group(Name=name)["Arn"]
    return {"Ref": name, "Arn": arn, "output": name}


# --- Main ---------------------------------------------------------------------------------

def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint-url", required=True)
    parser.add_argument("--template", default=os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "template.yaml"))
    parser.add_argument("--prefix", default="local")
    parser.add_argument("--region", default="us-east-1")
    args = parser.parse_args(argv)

    template = load_template(args.template)
    resources = template.get("Resources") or {}
    session = boto3.session.Session(
        aws_access_key_id=os.environ.get("AWS_ACCESS_KEY_ID", "testing"),
        aws_secret_access_key=os.environ.get("AWS_SECRET_ACCESS_KEY", "testing"),
        aws_session_token=os.environ.get("AWS_SESSION_TOKEN"),
        region_name=args.region,
    )
    dynamodb = session.client("dynamodb", endpoint_url=args.endpoint_url)
    sqs = session.client("sqs", endpoint_url=args.endpoint_url)
    scheduler = session.client("scheduler", endpoint_url=args.endpoint_url)
    resolver = Resolver(template, args.prefix, args.region)

    output = {}
    for logical_id in creation_order(resources):
        resource = resources[logical_id]
        props = strip_none(resolver.resolve(resource.get("Properties") or {}))
        name = f"{args.prefix}-{logical_id}"
        if resource["Type"] == TABLE:
            created = create_table(dynamodb, name, props)
        elif resource["Type"] == SCHEDULE_GROUP:
            created = create_schedule_group(scheduler, name, props)
        else:
            created = create_queue(sqs, name, props)
        resolver.created[logical_id] = created
        output[logical_id] = created["output"]

    json.dump(output, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
