"""Derive strict JSON Schemas for RayCluster and RayJob from the KubeRay CRDs, for offline validation.

    python k8s/schemas/derive.py ../shared/kuberay-crds            # writes k8s/schemas/<kind>-<version>.json
    check-jsonschema --schemafile k8s/schemas/rayjob-v1.json rayjob.yaml

From each CRD's ``openAPIV3Schema`` of a served version, made strict the way the API server's
structural pruning would see it (so a typo fails here instead of being silently dropped there):
- objects with ``properties`` and no ``additionalProperties`` / ``x-kubernetes-preserve-unknown-fields``
  get ``additionalProperties: false``;
- ``x-kubernetes-int-or-string`` becomes integer-or-string, ``nullable`` adds null;
- ``apiVersion`` and ``kind`` must be the CRD's, and ``metadata.name`` is required.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import yaml

HERE = Path(__file__).resolve().parent
KINDS = ("RayCluster", "RayJob")


def strict(node: Any) -> Any:
    if isinstance(node, list):
        return [strict(n) for n in node]
    if not isinstance(node, dict):
        return node
    out = {k: strict(v) for k, v in node.items()}
    if out.get("x-kubernetes-int-or-string") and "type" not in out:
        out["anyOf"] = [{"type": "integer"}, {"type": "string"}]
    if out.pop("nullable", False) and isinstance(out.get("type"), str):
        out["type"] = [out["type"], "null"]
    if (
        "properties" in out
        and "additionalProperties" not in out
        and not out.get("x-kubernetes-preserve-unknown-fields")
    ):
        out["additionalProperties"] = False
    return out


def derive(crd: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{file name: schema} for every served version of one CRD."""
    group, kind = crd["spec"]["group"], crd["spec"]["names"]["kind"]
    schemas = {}
    for version in crd["spec"]["versions"]:
        if not version.get("served"):
            continue
        schema = strict(version["schema"]["openAPIV3Schema"])
        schema["$schema"] = "http://json-schema.org/draft-07/schema#"
        schema["title"] = f"{kind} {group}/{version['name']} (derived from the KubeRay CRD by k8s/schemas/derive.py)"
        schema["properties"]["apiVersion"] = {"const": f"{group}/{version['name']}"}
        schema["properties"]["kind"] = {"const": kind}
        schema["properties"]["metadata"] = {
            "type": "object",
            "required": ["name"],
            "properties": {"name": {"type": "string"}},
        }
        schema["required"] = sorted(set(schema.get("required", [])) | {"apiVersion", "kind", "metadata", "spec"})
        schemas[f"{kind.lower()}-{version['name']}.json"] = schema
    return schemas


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("crds", help="folder with ray.io_rayclusters.yaml and ray.io_rayjobs.yaml")
    parser.add_argument("--out", default=str(HERE), help="where to write the schemas (default: %(default)s)")
    parser.add_argument("--versions", default="v1", help="comma-separated versions to write (default: %(default)s)")
    args = parser.parse_args(argv)
    wanted = set(args.versions.split(","))
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for kind in KINDS:
        crd = yaml.safe_load((Path(args.crds) / f"ray.io_{kind.lower()}s.yaml").read_text())
        for name, schema in derive(crd).items():
            if name.rsplit("-", 1)[1].removesuffix(".json") in wanted:
                (out / name).write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
                print(f"wrote {out / name}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
