"""Write slurmserve/interop/dgd-crd-schema.json: what validating a DynamoGraphDeployment needs of Dynamo's CRD.

    python scripts/dgd_crd_schema.py CRD.yaml --commit SHA [--repo ai-dynamo/dynamo] [--path PATH]

CRD.yaml is the operator's generated CustomResourceDefinition (`nvidia.com_dynamographdeployments.yaml`,
under deploy/operator/config/crd/bases/ of Dynamo's repository, earlier deploy/cloud/operator/...). Each
served version's `openAPIV3Schema` is kept as it is, without its `description`s (most of the file's bytes,
and nothing validation reads), beside where it came from: repository, path and commit.

Standard library and PyYAML only.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

import yaml

OUT = Path(__file__).resolve().parent.parent / "slurmserve" / "interop" / "dgd-crd-schema.json"
CRD_PATH = "deploy/operator/config/crd/bases/nvidia.com_dynamographdeployments.yaml"


def without_descriptions(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: without_descriptions(value) for key, value in node.items() if key != "description"}
    if isinstance(node, list):
        return [without_descriptions(item) for item in node]
    return node


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("crd", type=Path)
    parser.add_argument("--commit", required=True)
    parser.add_argument("--repo", default="ai-dynamo/dynamo")
    parser.add_argument("--path", default=CRD_PATH)
    options = parser.parse_args()
    crd = yaml.safe_load(options.crd.read_text())
    versions = {
        version["name"]: without_descriptions(version["schema"]["openAPIV3Schema"])
        for version in crd["spec"]["versions"]
        if version.get("served")
    }
    storage = next(version["name"] for version in crd["spec"]["versions"] if version.get("storage"))
    document = {
        "source": {"repo": options.repo, "path": options.path, "commit": options.commit},
        "group": crd["spec"]["group"],
        "kind": crd["spec"]["names"]["kind"],
        "storage_version": storage,
        "versions": versions,
    }
    OUT.write_text(json.dumps(document, sort_keys=True, separators=(",", ":")) + "\n")
    print(f"{OUT}: versions {', '.join(versions)} (storage {storage}), {OUT.stat().st_size} bytes")


if __name__ == "__main__":
    main()
