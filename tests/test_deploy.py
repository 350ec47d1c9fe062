"""The Kubernetes deployment, validated offline: rendered overlays, schemas, lint, consistency with the repo."""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from raykd.config import load_config

ROOT = Path(__file__).resolve().parents[1]
K8S = ROOT / "k8s"
OVERLAYS = ("cpu-small", "gpu")
K8S_VERSION = "1.32"
CRDS = Path(os.environ.get("RAYKD_KUBERAY_CRDS", ROOT.parent / "shared" / "kuberay-crds"))
sys.path.insert(0, str(K8S / "schemas"))
import derive  # noqa: E402  (k8s/schemas/derive.py)

KUBECTL = shutil.which("kubectl")
needs_kubectl = pytest.mark.skipif(KUBECTL is None, reason="kubectl (with its built-in kustomize) is not installed")


def render(overlay: str) -> list[dict]:
    out = subprocess.run(
        [KUBECTL, "kustomize", str(K8S / "overlays" / overlay)], capture_output=True, text=True, check=True, timeout=60
    ).stdout
    return [d for d in yaml.safe_load_all(out) if d]


def by_kind(docs: list[dict], kind: str) -> list[dict]:
    return [d for d in docs if d["kind"] == kind]


def pod_specs(docs: list[dict]) -> list[tuple[str, dict]]:
    """(where, pod spec) of every pod the manifests create."""
    out = []
    for d in docs:
        if d["kind"] == "Deployment":
            out.append((d["metadata"]["name"], d["spec"]["template"]["spec"]))
        if d["kind"] == "RayJob":
            cluster = d["spec"]["rayClusterSpec"]
            out.append(("head", cluster["headGroupSpec"]["template"]["spec"]))
            out += [(g["groupName"], g["template"]["spec"]) for g in cluster["workerGroupSpecs"]]
            out.append(("submitter", d["spec"]["submitterPodTemplate"]["spec"]))
    return out


@pytest.fixture(scope="module", params=OVERLAYS)
def rendered(request):
    if KUBECTL is None:
        pytest.skip("kubectl (with its built-in kustomize) is not installed")
    return request.param, render(request.param)


def test_every_overlay_renders_the_full_set(rendered):
    _, docs = rendered
    kinds = sorted(d["kind"] for d in docs)
    assert kinds == [
        "ConfigMap",
        "Deployment",
        "Namespace",
        "NetworkPolicy",
        "PersistentVolumeClaim",
        "PersistentVolumeClaim",
        "RayJob",
        "Service",
    ]
    assert all(d["metadata"].get("namespace") == "raykd" for d in docs if d["kind"] != "Namespace")


def test_core_kinds_validate_against_kubernetes_schemas(rendered):
    import kubernetes_validate

    _, docs = rendered
    for doc in docs:
        if doc["kind"] != "RayJob":
            kubernetes_validate.validate(doc, K8S_VERSION, strict=True)


def test_rayjob_validates_against_the_kuberay_crd_schema(rendered, tmp_path):
    name, docs = rendered
    job = tmp_path / f"rayjob-{name}.yaml"
    job.write_text(yaml.safe_dump(by_kind(docs, "RayJob")[0]))
    cluster = tmp_path / f"raycluster-{name}.yaml"  # the embedded cluster spec is a valid RayCluster too
    cluster.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "ray.io/v1",
                "kind": "RayCluster",
                "metadata": {"name": "c"},
                "spec": by_kind(docs, "RayJob")[0]["spec"]["rayClusterSpec"],
            }
        )
    )
    for schema, path in (("rayjob-v1.json", job), ("raycluster-v1.json", cluster)):
        result = subprocess.run(
            [sys.executable, "-m", "check_jsonschema", "--schemafile", str(K8S / "schemas" / schema), str(path)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert result.returncode == 0, result.stdout + result.stderr


def test_schema_rejects_a_misspelt_field(tmp_path):
    job = yaml.safe_load((K8S / "base" / "rayjob.yaml").read_text())
    job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]["maxReplica"] = 3  # not maxReplicas
    path = tmp_path / "typo.yaml"
    path.write_text(yaml.safe_dump(job))
    result = subprocess.run(
        [sys.executable, "-m", "check_jsonschema", "--schemafile", str(K8S / "schemas" / "rayjob-v1.json"), str(path)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 1 and "maxReplica" in result.stdout + result.stderr


def test_strict_derivation_rules():
    schema = derive.strict(
        {
            "type": "object",
            "properties": {
                "a": {"x-kubernetes-int-or-string": True},
                "b": {"type": "string", "nullable": True},
                "free": {"type": "object", "x-kubernetes-preserve-unknown-fields": True, "properties": {"x": {}}},
            },
        }
    )
    import jsonschema

    validator = jsonschema.Draft7Validator(schema)
    assert validator.is_valid({"a": 1, "b": None, "free": {"anything": 1}}) and validator.is_valid({"a": "50%"})
    assert not validator.is_valid({"c": 1}) and not validator.is_valid({"a": 1.5})


@pytest.mark.skipif(not CRDS.is_dir(), reason=f"KubeRay CRDs not found at {CRDS} (set RAYKD_KUBERAY_CRDS)")
def test_committed_schemas_are_what_the_script_derives(tmp_path):
    subprocess.run(
        [sys.executable, str(K8S / "schemas" / "derive.py"), str(CRDS), "--out", str(tmp_path)],
        check=True,
        capture_output=True,
        timeout=120,
    )
    for name in ("raycluster-v1.json", "rayjob-v1.json"):
        assert json.loads((tmp_path / name).read_text()) == json.loads((K8S / "schemas" / name).read_text()), name


def test_yamllint_is_clean():
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "yamllint",
            "-c",
            str(ROOT / ".yamllint.yaml"),
            "-f",
            "parsable",
            str(K8S),
            str(ROOT / "studies" / "configs"),
            str(ROOT / ".yamllint.yaml"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_entrypoint_script_config_and_storage_are_consistent(rendered, tmp_path):
    name, docs = rendered
    job = by_kind(docs, "RayJob")[0]
    argv = shlex.split(job["spec"]["entrypoint"])
    assert argv[0] == "python" and argv[1].startswith("/app/")
    assert (ROOT / argv[1].removeprefix("/app/")).is_file()  # the image copies the repo's studies/ to /app
    assert "--fresh" not in argv  # a re-submitted job resumes the study instead of wiping it
    config_path, output_dir = Path(argv[argv.index("--config") + 1]), argv[argv.index("--output-dir") + 1]
    # the ConfigMap holding --config is mounted at its folder on the head (where K8sJobMode runs the driver)
    configmap = by_kind(docs, "ConfigMap")[0]
    study_text = configmap["data"][config_path.name]
    (tmp_path / "study.yaml").write_text(study_text)
    config = load_config(tmp_path / "study.yaml")  # validates like the driver will
    for where, spec in pod_specs(docs):
        if where not in ("submitter", "raykd-mlflow"):
            mounts = {m["name"]: m["mountPath"] for m in spec["containers"][0]["volumeMounts"]}
            volumes = {v["name"]: v for v in spec["volumes"]}
            storage = next(
                n for n, v in volumes.items() if v.get("persistentVolumeClaim", {}).get("claimName") == "raykd-storage"
            )
            assert output_dir.startswith(mounts[storage] + "/"), (where, output_dir, mounts)
            study = next(n for n, v in volumes.items() if "configMap" in v)
            assert volumes[study]["configMap"]["name"] == configmap["metadata"]["name"]  # the hash-suffixed one
            assert mounts[study] == str(config_path.parent)
            assert volumes["shm"]["emptyDir"]["medium"] == "Memory" and mounts["shm"] == "/dev/shm"
    pvc = next(d for d in by_kind(docs, "PersistentVolumeClaim") if d["metadata"]["name"] == "raykd-storage")
    assert pvc["spec"]["accessModes"] == ["ReadWriteMany"]
    if name == "gpu":
        assert config.compute.gpus_per_worker > 0
        workers = job["spec"]["rayClusterSpec"]["workerGroupSpecs"][0]
        assert workers["template"]["spec"]["containers"][0]["resources"]["limits"]["nvidia.com/gpu"] == 1
        assert workers["minReplicas"] == 0 < workers["maxReplicas"]
        # production storage: checkpoints in S3, MLflow's artifacts in the same bucket, credentials from one Secret
        storage = argv[argv.index("--storage") + 1]
        mlflow = by_kind(docs, "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
        artifacts = next(e["value"] for e in mlflow["env"] if e["name"] == "MLFLOW_ARTIFACTS_DESTINATION")
        assert storage.startswith("s3://") and artifacts.split("/")[2] == storage.split("/")[2]
        for where, spec in pod_specs(docs):
            if where != "submitter":
                assert spec["containers"][0]["envFrom"] == [{"secretRef": {"name": "raykd-s3"}}], where
    else:
        assert config.model_dump() == load_config(ROOT / "studies" / "configs" / "default.yaml").model_dump()


def test_head_runs_drivers_not_training_and_mlflow_is_the_service(rendered):
    _, docs = rendered
    job = by_kind(docs, "RayJob")[0]
    head = job["spec"]["rayClusterSpec"]["headGroupSpec"]
    assert head["rayStartParams"]["num-cpus"] == "0"
    assert (
        json.loads(json.loads(head["rayStartParams"]["resources"]))["tune_driver"] >= 1
    )  # raykd.sweep.DRIVER_RESOURCE
    service = by_kind(docs, "Service")[0]
    port = service["spec"]["ports"][0]["port"]
    expected = f"http://{service['metadata']['name']}.{service['metadata']['namespace']}.svc.cluster.local:{port}"
    for where, spec in pod_specs(docs):
        if where in ("submitter", "raykd-mlflow"):
            continue
        env = {e["name"]: e.get("value") for e in spec["containers"][0]["env"]}
        assert env["MLFLOW_TRACKING_URI"] == expected, where
    deployment = by_kind(docs, "Deployment")[0]
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert (ROOT / container["command"][1].removeprefix("/app/")).is_file()  # mlflow/serve.py
    assert container["ports"][0]["containerPort"] == 5000
    hosts = next(e["value"] for e in container["env"] if e["name"] == "MLFLOW_ALLOWED_HOSTS").split(",")
    assert expected.removeprefix("http://") in hosts
    policy = by_kind(docs, "NetworkPolicy")[0]
    assert policy["spec"]["podSelector"]["matchLabels"] == deployment["spec"]["template"]["metadata"]["labels"]
    assert policy["spec"]["ingress"][0]["from"] == [{"podSelector": {}}]  # this namespace only


def test_hardening(rendered):
    _, docs = rendered
    namespace = by_kind(docs, "Namespace")[0]
    assert namespace["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"
    for where, spec in pod_specs(docs):
        assert spec["securityContext"]["runAsNonRoot"] is True, where
        assert spec["securityContext"]["seccompProfile"]["type"] == "RuntimeDefault", where
        for container in spec["containers"]:
            assert container["securityContext"]["allowPrivilegeEscalation"] is False, where
            assert container["securityContext"]["capabilities"]["drop"] == ["ALL"], where
            resources = container["resources"]
            assert resources["requests"]["cpu"] and resources["limits"]["memory"], where
            for env in container.get("env", []):  # credentials only by Secret reference
                if re.search(r"PASSWORD|TOKEN|SECRET|_URI$", env["name"]) and env["name"] != "MLFLOW_TRACKING_URI":
                    assert "value" not in env or env["value"].startswith("sqlite:"), (where, env)
    job = by_kind(docs, "RayJob")[0]["spec"]
    assert job["rayClusterSpec"]["authOptions"] == {"mode": "token", "secretName": "raykd-ray-token"}
    assert job["activeDeadlineSeconds"] > 0 and job["backoffLimit"] >= 1
    assert job["shutdownAfterJobFinishes"] is True
    autoscaler = job["rayClusterSpec"]["autoscalerOptions"]
    assert autoscaler["securityContext"]["runAsNonRoot"] is True and autoscaler["resources"]["limits"]
    text = yaml.safe_dump_all(docs)
    assert "postgresql://" not in text and "auth_token:" not in text


def test_image_matches_the_pinned_ray_and_python():
    dockerfile = (K8S / "Dockerfile").read_text()
    base = re.search(r"^ARG BASE=rayproject/ray:(\S+)$", dockerfile, re.MULTILINE).group(1)
    pins = dict(
        line.split("==")
        for line in (ROOT / "constraints.txt").read_text().splitlines()
        if "==" in line and not line.startswith("#")
    )
    ray_version, python_tag = base.split("-")[:2]
    assert ray_version == pins["ray"]
    assert python_tag == f"py{sys.version_info.major}{sys.version_info.minor}"  # the Python the tests run on
    assert f"ray.__version__ == '{pins['ray']}'" in dockerfile
    for folder in ("raykd", "studies", "mlflow"):
        assert re.search(rf"^COPY .*\b{folder} \./{folder}$", dockerfile, re.MULTILINE), folder
    job = yaml.safe_load((K8S / "base" / "rayjob.yaml").read_text())
    assert job["spec"]["rayClusterSpec"]["rayVersion"] == pins["ray"]
    overlay = yaml.safe_load((K8S / "overlays" / "gpu" / "kustomization.yaml").read_text())
    assert overlay["images"][0]["name"] == "raykd"  # the name the manifests use; overlays pick the real image


def test_mlflow_launcher_command_from_environment():
    sys.path.insert(0, str(ROOT / "mlflow"))
    try:
        import serve
    finally:
        sys.path.pop(0)
    import argparse

    args = argparse.Namespace(
        local=None,
        backend_store_uri=None,
        artifacts_destination=None,
        host=None,
        port=None,
        workers=None,
        allowed_hosts=None,
        basic_auth=False,
    )
    env = {
        "MLFLOW_BACKEND_STORE_URI": "postgresql://db/mlflow",
        "MLFLOW_HOST": "0.0.0.0",
        "MLFLOW_PORT": "5000",
        "MLFLOW_ALLOWED_HOSTS": "raykd-mlflow:5000",
    }
    command, extra = serve.server_command(args, env)
    assert command[command.index("--backend-store-uri") + 1] == "postgresql://db/mlflow"
    assert command[command.index("--host") + 1] == "0.0.0.0" and "--serve-artifacts" in command
    assert command[command.index("--allowed-hosts") + 1] == "raykd-mlflow:5000"
    assert extra == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}  # MLflow's job runner: off unless asked for
    _, extra = serve.server_command(args, {**env, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"})
    assert extra == {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "true"}
    with pytest.raises(SystemExit, match="no backend store"):
        serve.server_command(args, {})
    args.basic_auth = True
    with pytest.raises(SystemExit, match="MLFLOW_AUTH_ADMIN_USERNAME"):
        serve.server_command(args, env)
    with pytest.raises(SystemExit, match="at least 12 characters"):
        serve.server_command(args, {**env, "MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "pw"})
    command, extra = serve.server_command(
        args, {**env, "MLFLOW_AUTH_ADMIN_USERNAME": "admin", "MLFLOW_AUTH_ADMIN_PASSWORD": "twelve-chars-or-more"}
    )
    assert len(extra["MLFLOW_FLASK_SERVER_SECRET_KEY"]) == 64  # a CSRF key when none is given
    assert command[-2:] == ["--app-name", "basic-auth"]
    ini = Path(extra["MLFLOW_AUTH_CONFIG_PATH"])
    assert "admin_username = admin" in ini.read_text() and oct(ini.stat().st_mode & 0o777) == "0o600"


@needs_kubectl
def test_readme_kubernetes_commands_match_the_manifests():
    """Every command of the README's Kubernetes block is checked: dry-run, or against the rendered objects."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("**Kubernetes (KubeRay).**")[1].split("```bash")[1].split("```")[0]
    docs = {o: render(o) for o in OVERLAYS}
    job = by_kind(docs["gpu"], "RayJob")[0]
    secrets_wanted = {job["spec"]["rayClusterSpec"]["authOptions"]["secretName"]: {"auth_token"}}
    mlflow = by_kind(docs["gpu"], "Deployment")[0]["spec"]["template"]["spec"]["containers"][0]
    for env in mlflow["env"]:
        if "valueFrom" in env:
            ref = env["valueFrom"]["secretKeyRef"]
            secrets_wanted[ref["name"]] = {ref["key"]}
    for _where, spec in pod_specs(docs["gpu"]):  # whole Secrets as environments: S3 credentials
        for source in spec["containers"][0].get("envFrom", []):
            secrets_wanted[source["secretRef"]["name"]] = {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    created = {}
    checked = 0
    for line in block.strip().splitlines():
        command = re.sub(r"\s+#.*$", "", line).strip()
        argv = shlex.split(re.sub(r'"\$\(openssl rand -hex 32\)"', "token", command))
        if argv[:2] == ["docker", "build"]:
            assert (ROOT / argv[argv.index("-f") + 1]).is_file()
            checked += 1
            continue
        assert argv[0] == "kubectl", command
        if argv[1] == "create":
            out = subprocess.run(
                [KUBECTL, *argv[1:], "--dry-run=client", "-o", "yaml"],
                capture_output=True,
                text=True,
                check=True,
                timeout=60,
            ).stdout
            obj = yaml.safe_load(out)
            created[obj["metadata"]["name"]] = obj
            if obj["kind"] == "Namespace":
                assert obj["metadata"]["name"] == by_kind(docs["gpu"], "Namespace")[0]["metadata"]["name"]
            else:
                assert obj["metadata"]["namespace"] == "raykd"
                assert set(obj["data"]) == secrets_wanted[obj["metadata"]["name"]]
        elif argv[1] in ("kustomize", "apply"):
            assert argv[-1].removeprefix("k8s/overlays/") in OVERLAYS
            if argv[1] == "kustomize":
                subprocess.run(
                    [KUBECTL, "kustomize", str(ROOT / argv[-1])], check=True, capture_output=True, timeout=60
                )
        elif argv[1] == "logs":
            assert argv[-1] == f"job/{job['metadata']['name']}"  # KubeRay names the submitter Job after the RayJob
        elif argv[1] == "port-forward":
            service = by_kind(docs["gpu"], "Service")[0]
            assert argv[-2] == f"svc/{service['metadata']['name']}"
            assert int(argv[-1].split(":")[1]) == service["spec"]["ports"][0]["port"]
        else:
            raise AssertionError(f"README command not covered by this test: {command}")
        checked += 1
    assert checked == len(block.strip().splitlines())
    assert set(secrets_wanted) <= set(created)  # every Secret the manifests reference has its creation command


def test_the_gpu_script_checks_itself_on_a_cpu():
    """benchmarks/gpu.py --dry-run: lists the five measurements and checks its inputs without a GPU; a measurement
    it does not know is refused by name."""
    done = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--dry-run"], cwd=ROOT, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    for name in ("step_mfu", "default_study", "packing", "ddp", "cuda_rng_resume"):
        assert f"  {name}: " in done.stdout
    assert done.stdout.rstrip().endswith("inputs ready")
    bad = subprocess.run(
        [sys.executable, "benchmarks/gpu.py", "--dry-run", "--only", "step,ddp"],
        cwd=ROOT,
        capture_output=True,
        text=True,
    )
    assert bad.returncode == 2 and "unknown measurement(s) ['step']" in bad.stderr
