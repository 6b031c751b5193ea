#!/usr/bin/env python3
"""Checks deploy/ offline (CI has no Docker daemon or cluster): every YAML file parses; every
compose service and Kubernetes workload has resource requests/limits and health probes; every
file a manifest mounts or generates from exists (or has its .example beside it). The TOML
configs there are loaded by the Rust tests (pipeline/runtime/src/config.rs)."""

import pathlib
import sys

import yaml

ROOT = pathlib.Path(__file__).resolve().parent.parent / "deploy"
problems = []


def need(ok, what):
    if not ok:
        problems.append(what)


def exists(rel, base=ROOT):
    p = base / rel
    example = p.with_name(p.stem + ".example" + p.suffix)
    return p.exists() or example.exists()


def check_compose(doc, name):
    for svc, spec in doc.get("services", {}).items():
        need("healthcheck" in spec, f"{name}: service {svc} has no healthcheck")
        res = spec.get("deploy", {}).get("resources", {})
        need("limits" in res, f"{name}: service {svc} has no resource limits")
        for vol in spec.get("volumes", []):
            src = vol.split(":")[0] if isinstance(vol, str) else ""
            if src.startswith("./"):
                need(exists(src), f"{name}: service {svc} mounts missing {src}")
    for sec, spec in doc.get("secrets", {}).items():
        need(exists(spec["file"]), f"{name}: secret {sec} file {spec['file']} (or its .example) missing")


def check_workload(doc, name):
    kind, meta = doc.get("kind"), doc.get("metadata", {}).get("name")
    if kind not in ("Deployment", "StatefulSet"):
        return
    for c in doc["spec"]["template"]["spec"]["containers"]:
        res = c.get("resources", {})
        where = f"{name}: {kind} {meta} container {c['name']}"
        need("requests" in res and "limits" in res, f"{where} lacks resource requests or limits")
        need("readinessProbe" in c and "livenessProbe" in c, f"{where} lacks readiness or liveness probe")


def check_kustomization(doc, name):
    for res in doc.get("resources", []):
        need((ROOT / res).exists(), f"{name}: resource {res} missing")
    for gen in doc.get("secretGenerator", []) + doc.get("configMapGenerator", []):
        for f in gen.get("files", []):
            need(exists(f.split("=")[-1]), f"{name}: generator file {f} (or its .example) missing")


def main():
    files = sorted(ROOT.rglob("*.yaml")) + sorted(ROOT.rglob("*.yml"))
    need(files, "deploy/ holds no YAML")
    for path in files:
        name = str(path.relative_to(ROOT.parent))
        try:
            docs = [d for d in yaml.safe_load_all(path.read_text()) if d]
        except yaml.YAMLError as e:
            problems.append(f"{name}: {e}")
            continue
        for doc in docs:
            if path.name.startswith("docker-compose"):
                check_compose(doc, name)
            elif path.name == "kustomization.yaml":
                check_kustomization(doc, name)
            else:
                need("kind" in doc and "apiVersion" in doc, f"{name}: a document without kind/apiVersion")
                check_workload(doc, name)
    for p in problems:
        print(f"deploy check: {p}", file=sys.stderr)
    print(f"deploy check: {len(files)} files, {len(problems)} problems")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
