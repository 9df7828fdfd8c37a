#!/usr/bin/env python3
"""Static checks of template.yaml: checkov and cfn-lint with the serverless rules.

Every finding must be listed, with its reason, in the one skip file (scripts/iac-skips.yaml),
for the resource it was found on; every entry of the skip file must still match a finding.
Anything else fails: a new finding, a listed check on a resource not listed, a stale entry, an
entry without a reason, or a tool that could not read the template.

The tools come from the virtual environment this script runs in (.tools/iac, made by .ci/run
from scripts/requirements-iac.txt):

    .tools/iac/bin/python scripts/iac_check.py [--template template.yaml] [--skips scripts/iac-skips.yaml]

checkov reads the template twice: as written, and as SAM's transform expands it (the HTTP API
SAM makes for the functions' events, its stage with throttling and access logs, its routes and
permissions exist only there); a finding on either counts once.

Findings are matched by the tools' JSON output rather than passed to them as skip flags:
checkov's --skip-check and cfn-lint's --ignore-checks skip a check everywhere, while an entry
here accepts it only on the resources it names.
"""

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import yaml

BIN = Path(sys.executable).parent
TOOLS = ("checkov", "cfn-lint")


def run(command):
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    return result.returncode, result.stdout, result.stderr


def checkov_findings(template):
    # --skip-download: no request to Prisma Cloud (guidelines, severities); the checks are
    # all in the package.
    code, out, err = run([str(BIN / "checkov"), "--file", template, "--framework", "cloudformation",
                          "--skip-download", "--quiet", "--output", "json"])
    if code not in (0, 1):
        sys.exit(f"checkov failed ({code}):\n{err or out}")
    report = json.loads(out) if out.strip() else {}
    if isinstance(report, list):  # one report per framework
        report = next((r for r in report if r.get("check_type") == "cloudformation"), {})
    summary = report.get("summary", {})
    if summary.get("parsing_errors") or not summary.get("resource_count"):
        sys.exit(f"checkov did not read {template}: {json.dumps(summary)}\n{err}")
    findings = []
    for failed in report.get("results", {}).get("failed_checks", []):
        # "AWS::SQS::Queue.NotificationsQueue": the logical id follows the last dot.
        resource = failed["resource"].rsplit(".", 1)[-1]
        findings.append(("checkov", failed["check_id"], resource,
                         f'{failed["check_name"]} (lines {failed["file_line_range"]})'))
    return findings, summary.get("passed", 0)


def transformed(template, directory):
    """The template as SAM's transform expands it, written as JSON into `directory`."""
    from samtranslator.translator.transform import transform
    from samtranslator.yaml_helper import yaml_parse

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    with open(template, encoding="utf-8") as handle:
        document = yaml_parse(handle.read())
    # The transform wants the code in S3, where `sam deploy` puts it.
    for resource in document.get("Resources", {}).values():
        if resource.get("Type") == "AWS::Serverless::Function":
            resource.setdefault("Properties", {})["CodeUri"] = "s3://artifacts/code.zip"

    class NoManagedPolicies:  # the template attaches none
        def load(self):
            return {}

    path = Path(directory) / "template.transformed.json"
    path.write_text(json.dumps(transform(document, {}, NoManagedPolicies()), default=str))
    return str(path)


def cfn_lint_findings(template):
    # The template goes first: -a takes every path that follows it.
    code, out, err = run([str(BIN / "cfn-lint"), template, "--format", "json",
                          "--append-rules", "cfn_lint_serverless.rules"])
    if not out.strip():
        sys.exit(f"cfn-lint failed ({code}) without a report:\n{err}")
    findings = []
    for match in json.loads(out):
        path = match["Location"].get("Path") or []
        resource = path[1] if len(path) > 1 and path[0] == "Resources" else "/".join(map(str, path[:2]))
        line = match["Location"]["Start"]["LineNumber"]
        findings.append(("cfn-lint", match["Rule"]["Id"], resource, f'{match["Message"]} (line {line})'))
    return findings


def load_skips(path):
    with open(path, encoding="utf-8") as handle:
        skips = yaml.safe_load(handle) or {}
    problems = []
    accepted = {}
    for tool, checks in skips.items():
        if tool not in TOOLS:
            problems.append(f"{path}: unknown tool {tool!r} (expected one of {', '.join(TOOLS)})")
            continue
        for check, entry in (checks or {}).items():
            entry = entry or {}
            if not str(entry.get("reason", "")).strip():
                problems.append(f"{path}: {tool} {check} has no reason")
            resources = entry.get("resources") or []
            if not resources:
                problems.append(f"{path}: {tool} {check} names no resource")
            for resource in resources:
                accepted[(tool, check, resource)] = False
    return accepted, problems


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    root = Path(__file__).resolve().parent.parent
    parser.add_argument("--template", default=str(root / "template.yaml"))
    parser.add_argument("--skips", default=str(root / "scripts" / "iac-skips.yaml"))
    args = parser.parse_args()
    os.environ.setdefault("BC_SKIP_MAPPING", "TRUE")

    accepted, problems = load_skips(args.skips)
    checkov, passed = checkov_findings(args.template)
    with tempfile.TemporaryDirectory() as directory:
        expanded, _ = checkov_findings(transformed(args.template, directory))
    seen = {finding[:3] for finding in checkov}
    checkov += [finding for finding in expanded if finding[:3] not in seen]
    findings = checkov + cfn_lint_findings(args.template)
    for tool, check, resource, what in findings:
        key = (tool, check, resource)
        if key in accepted:
            accepted[key] = True
        else:
            problems.append(f"{tool} {check} on {resource}: {what} "
                            f"(fix it, or list it with its reason in {args.skips})")
    for (tool, check, resource), used in sorted(accepted.items()):
        if not used:
            problems.append(f"{args.skips}: {tool} {check} on {resource} matches no finding any more: remove it")

    listed = sum(accepted.values())
    print(f"checkov (the template, and as SAM expands it): {passed} checks passed, {len(checkov)} findings; "
          f"cfn-lint (with the serverless rules): {len(findings) - len(checkov)} findings; "
          f"{listed} of them accepted in {os.path.relpath(args.skips)}")
    if problems:
        print("\n".join(problems), file=sys.stderr)
        sys.exit(1)
    print("template checks: no finding outside the skip file")


if __name__ == "__main__":
    main()
