"""A DynamoGraphDeployment checked against the CRD's own OpenAPI schema (dgd-crd-schema.json: Dynamo's operator
manifest, each served version's schema without its descriptions, naming the commit it was taken from;
scripts/dgd_crd_schema.py writes it).

The API server reads a structural schema with rules of its own, which JSON Schema alone does not have:
- a field the schema does not name is refused (kubectl's and the server's strict field validation, the
  default since Kubernetes 1.25), unless the object says `x-kubernetes-preserve-unknown-fields`;
- a null for a field that is not `nullable` is pruned before validation, not refused;
- `x-kubernetes-int-or-string` is the `anyOf: [integer, string]` beside it; `format: int32`/`int64` bound numbers;
- `x-kubernetes-list-type: set` lists hold each item once, `map` lists each `x-kubernetes-list-map-keys` tuple once;
- `metadata` is Kubernetes' ObjectMeta, validated by the server (a name, DNS-1123), not by the CRD.
The CRD's CEL rules (`x-kubernetes-validations`) are not evaluated here: none concerns what slurmserve reads or
writes (the shared-memory size, an EPP component, the restart and checkpoint settings).
"""

from __future__ import annotations

import functools
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
from jsonschema import validators

SCHEMA_FILE = Path(__file__).resolve().parent / "dgd-crd-schema.json"
API_GROUP = "nvidia.com"
KIND = "DynamoGraphDeployment"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
INT_RANGES = {"int32": 2**31, "int64": 2**63}


@functools.cache
def crd_schema() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(SCHEMA_FILE.read_text())
    return document


def api_versions() -> list[str]:
    return sorted(crd_schema()["versions"])


def schema_source() -> str:
    """`ai-dynamo/dynamo@COMMIT:PATH`, the CRD the schema comes from."""
    source = crd_schema()["source"]
    return f"{source['repo']}@{source['commit'][:12]}:{source['path']}"


def strict(schema: Any) -> Any:
    """The schema with unknown fields refused wherever the API server refuses them."""
    if isinstance(schema, list):
        return [strict(item) for item in schema]
    if not isinstance(schema, dict):
        return schema
    tightened = {key: strict(value) for key, value in schema.items()}
    closed = "properties" in schema and "additionalProperties" not in schema
    if closed and not schema.get("x-kubernetes-preserve-unknown-fields"):
        tightened["additionalProperties"] = False
    return tightened


def int_format(
    validator: Any, kind: str, instance: Any, schema: dict[str, Any]
) -> Iterator[jsonschema.ValidationError]:
    bound = INT_RANGES.get(kind)
    if bound and isinstance(instance, int) and not -bound <= instance < bound:
        yield jsonschema.ValidationError(f"{instance} is out of range for {kind}")


def list_type(validator: Any, kind: str, instance: Any, schema: dict[str, Any]) -> Iterator[jsonschema.ValidationError]:
    if not isinstance(instance, list) or kind not in ("set", "map"):
        return
    keys = schema.get("x-kubernetes-list-map-keys", [])
    seen: list[Any] = []
    for item in instance:
        identity = tuple(item.get(key) for key in keys) if kind == "map" and isinstance(item, dict) else item
        if identity in seen:
            shown = dict(zip(keys, identity, strict=True)) if kind == "map" else identity
            yield jsonschema.ValidationError(f"{shown!r} is listed twice (a list of type {kind})")
        seen.append(identity)


KubernetesValidator = validators.extend(
    validators.Draft202012Validator, {"format": int_format, "x-kubernetes-list-type": list_type}
)


@functools.cache
def validator_for(api_version: str) -> Any:
    return KubernetesValidator(strict(crd_schema()["versions"][api_version]))


def pruned(value: Any) -> Any:
    """The object without its nulls, as the API server prunes them (no field of the CRD is `nullable`)."""
    if isinstance(value, dict):
        return {key: pruned(item) for key, item in value.items() if item is not None}
    if isinstance(value, list):
        return [pruned(item) for item in value]
    return value


def dotted(path: Any) -> str:
    """spec.services.Frontend.replicas, spec.components[0].name."""
    shown = ""
    for part in path:
        shown += f"[{part}]" if isinstance(part, int) else f".{part}" if shown else str(part)
    return shown or "(the document)"


def schema_problems(manifest: dict[str, Any]) -> list[str]:
    """What the API server would refuse in a DynamoGraphDeployment, `path: problem` each; [] when valid."""
    version = str(manifest.get("apiVersion", "")).removeprefix(f"{API_GROUP}/")
    if version not in crd_schema()["versions"]:
        return [f"apiVersion: {manifest.get('apiVersion')!r} is none of {', '.join(api_versions())} of {API_GROUP}"]
    problems = [
        f"{dotted(error.absolute_path)}: {error.message}"
        for error in sorted(validator_for(version).iter_errors(pruned(manifest)), key=lambda e: list(e.absolute_path))
    ]
    name = (manifest.get("metadata") or {}).get("name")
    if not isinstance(name, str) or len(name) > 253 or not DNS_SUBDOMAIN.fullmatch(name):
        problems.append(f"metadata.name: {name!r} is no DNS-1123 name (lowercase letters, digits, '-' and '.')")
    return problems
