"""deploy/kubernetes: rendered by kustomize (kubectl's), valid against the Kubernetes schema
(kubernetes-validate, strict), and consistent: what the pod says of sidecar is what sidecar
does.  The probes' own commands run against a real sidecar started with the manifest's own
arguments, and the ConfigMap's nginx.conf runs in a real nginx in front of it.

No cluster runs here: what is left to a cluster (scheduling, the kubelet running the probes,
the Prometheus adapter) is what these tests cannot show.
"""
from __future__ import annotations

import copy
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import tomllib
import urllib.request
from pathlib import Path

import kubernetes_validate
import pytest
import yaml

from sidecar.cli import load_config
from sidecar.frontend.control import default_path
from sidecar.status import _parse, _status_options
from tests.nginx import find_nginx
from tests.server import ROOT, free_port

KUBE = ROOT / "deploy" / "kubernetes"
VERSION = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["version"]
VARIANTS = {"base": KUBE / "base", "production": KUBE / "overlays" / "production"}
SCHEMAS = ("1.29.0", kubernetes_validate.latest_version())  # the oldest supported, the newest
SIDECAR_BIN = "/opt/sidecar/bin/sidecar"   # deploy/Containerfile's venv


def kustomize(path: Path) -> list[dict]:
    kubectl = shutil.which("kubectl")
    assert kubectl, "kubectl (it carries kustomize) is not installed: this machine image has it"
    out = subprocess.run([kubectl, "kustomize", str(path)], capture_output=True, text=True,
                         timeout=120)
    assert out.returncode == 0, out.stderr
    return [d for d in yaml.safe_load_all(out.stdout) if d]


@pytest.fixture(scope="module", params=sorted(VARIANTS))
def rendered(request) -> dict:
    docs = kustomize(VARIANTS[request.param])
    by_kind: dict = {}
    for d in docs:
        assert d["kind"] not in by_kind, f"two {d['kind']}s"
        by_kind[d["kind"]] = d
    by_kind["_variant"] = request.param
    by_kind["_docs"] = docs
    return by_kind


def pod(r: dict) -> dict:
    return r["Deployment"]["spec"]["template"]


def container(r: dict, name: str) -> dict:
    return next(c for c in pod(r)["spec"]["containers"] if c["name"] == name)


def sidecar_env(r: dict) -> dict:
    """The sidecar container's environment as the kubelet would set it."""
    c = container(r, "sidecar")
    env = {}
    for e in c["env"]:
        if "value" in e:
            env[e["name"]] = e["value"]
        else:
            ref = e["valueFrom"]["resourceFieldRef"]
            assert ref["containerName"] == "sidecar" and ref["divisor"] == "1"
            env[e["name"]] = str(math.ceil(cpu(c["resources"]["requests"]["cpu"])))
    return env


def cpu(q: str) -> float:
    return float(q[:-1]) / 1000 if q.endswith("m") else float(q)


def size(q: str) -> int:
    units = {"Ki": 1 << 10, "Mi": 1 << 20, "Gi": 1 << 30}
    return int(q[:-2]) * units[q[-2:]] if q[-2:] in units else int(q)


def sidecar_config(r: dict):
    return load_config(container(r, "sidecar")["args"], environ=sidecar_env(r))


def nginx_conf(r: dict) -> str:
    name = next(v["configMap"]["name"] for v in pod(r)["spec"]["volumes"] if "configMap" in v)
    cm = next(d for d in r["_docs"] if d["kind"] == "ConfigMap"
              and d["metadata"]["name"] == name)
    return cm["data"]["nginx.conf"]


def pre_stop_sleep(c: dict) -> int:
    cmd = " ".join(c["lifecycle"]["preStop"]["exec"]["command"])
    return int(re.search(r"sleep\W+(\d+)", cmd).group(1))


def probe_args(c: dict, kind: str):
    cmd = c[kind]["exec"]["command"]
    assert cmd[0] == SIDECAR_BIN and cmd[1] == "status", cmd
    args = _parse("probe", "", cmd[2:], _status_options)
    assert args is not None, cmd
    return args


# --- the schema --------------------------------------------------------------------------------

@pytest.mark.parametrize("version", SCHEMAS)
def test_valid_against_the_kubernetes_schema(rendered, version):
    kinds = [d["kind"] for d in rendered["_docs"]]
    assert sorted(kinds) == ["ConfigMap", "Deployment", "HorizontalPodAutoscaler",
                             "PodDisruptionBudget", "Service"]
    for doc in rendered["_docs"]:
        kubernetes_validate.validate(doc, version, strict=True)
    # and the validation can fail: a misspelled field is refused
    wrong = copy.deepcopy(rendered["Deployment"])
    wrong["spec"]["template"]["spec"]["terminationGracePeriod"] = 50
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(wrong, version, strict=True)


# --- what must agree ---------------------------------------------------------------------------

def test_sidecar_arguments_are_valid_and_the_socket_is_shared(rendered):
    config = sidecar_config(rendered)
    assert config.uds and config.metrics
    run_dir = os.path.dirname(config.uds)
    mounts = {c["name"]: {m["mountPath"]: m["name"] for m in c["volumeMounts"]}
              for c in pod(rendered)["spec"]["containers"]}
    volume = mounts["sidecar"][run_dir]
    assert mounts["nginx"].get(run_dir) == volume, "nginx does not see sidecar's socket"
    assert f"server unix:{config.uds};" in nginx_conf(rendered)
    # 0660 and a group both containers have: the pod's fsGroup owns the emptyDir
    assert config.uds_mode == 0o660 and pod(rendered)["spec"]["securityContext"]["fsGroup"]
    if rendered["_variant"] == "production":
        assert config.app == "shop.main:app" and config.max_body == 20 << 20
    assert config.workers == math.ceil(cpu(container(rendered, "sidecar")["resources"]
                                           ["requests"]["cpu"]))


def test_probes_ask_the_right_control_socket(rendered):
    config = sidecar_config(rendered)
    c = container(rendered, "sidecar")
    ready, live = probe_args(c, "readinessProbe"), probe_args(c, "livenessProbe")
    assert ready.ready and not ready.live and live.live and not live.ready
    assert ready.control == live.control == default_path(config.uds) == config.uds + ".ctl"
    for kind, args in (("readinessProbe", ready), ("livenessProbe", live)):
        # the command gives up before the kubelet does, so its one line is what is reported
        assert args.timeout < c[kind]["timeoutSeconds"]
    # the watchdog's 30 s (systemd/sidecar.service WatchdogSec=30)
    unit = (ROOT / "systemd" / "sidecar.service").read_text()
    watchdog = int(re.search(r"^WatchdogSec=(\d+)$", unit, re.M).group(1))
    lp = c["livenessProbe"]
    assert lp["periodSeconds"] * lp["failureThreshold"] == watchdog


def test_drain_fits_in_the_grace_period(rendered):
    config = sidecar_config(rendered)
    spec = pod(rendered)["spec"]
    grace = spec["terminationGracePeriodSeconds"]
    side, front = pre_stop_sleep(container(rendered, "sidecar")), \
        pre_stop_sleep(container(rendered, "nginx"))
    # nginx stops taking requests before sidecar gets SIGTERM, so none reach a closed socket
    assert front < side
    # sidecar's whole drain (and its drain grace for SSE) ends before the kubelet's SIGKILL
    assert side + config.shutdown_timeout + 5 <= grace
    assert config.drain_grace < config.shutdown_timeout
    shutdown = int(re.search(r"worker_shutdown_timeout (\d+)s;", nginx_conf(rendered)).group(1))
    assert front + shutdown + 5 <= grace


def test_security_context_is_the_systemd_sandbox(rendered):
    spec = pod(rendered)["spec"]
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert spec["automountServiceAccountToken"] is False
    for c in spec["containers"]:
        sc = c["securityContext"]
        assert sc["runAsNonRoot"] is True and sc["runAsUser"] > 0, c["name"]
        assert sc["allowPrivilegeEscalation"] is False      # NoNewPrivileges=yes
        assert sc["readOnlyRootFilesystem"] is True          # ProtectSystem=strict
        assert sc["privileged"] is False
        assert sc["capabilities"] == {"drop": ["ALL"]}       # CapabilityBoundingSet=
        assert sc["seccompProfile"] == {"type": "RuntimeDefault"}  # SystemCallFilter=
    # the uid the image was built with (deploy/Containerfile)
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    uid = int(re.search(r"^USER (\d+):\d+$", containerfile, re.M).group(1))
    assert container(rendered, "sidecar")["securityContext"]["runAsUser"] == uid


def test_writable_places_are_volumes(rendered):
    """A read-only root: what sidecar writes (its sockets, the rings in /dev/shm, the app's
    /tmp) and what nginx writes (pid, temp files) are emptyDirs."""
    config = sidecar_config(rendered)
    volumes = {v["name"]: v for v in pod(rendered)["spec"]["volumes"]}
    mounts = {m["mountPath"]: volumes[m["name"]]
              for m in container(rendered, "sidecar")["volumeMounts"]}
    for path in (os.path.dirname(config.uds), "/dev/shm", "/tmp"):
        assert "emptyDir" in mounts[path], path
    shm = mounts["/dev/shm"]["emptyDir"]
    assert shm["medium"] == "Memory"
    assert size(shm["sizeLimit"]) >= 2 * config.ring_capacity * config.workers
    conf = nginx_conf(rendered)
    nginx_mounts = {m["mountPath"] for m in container(rendered, "nginx")["volumeMounts"]}
    for path in re.findall(r"(?:pid|_temp_path) (/[^;]+);", conf):
        assert any(path.startswith(m + "/") for m in nginx_mounts), path


def test_service_metrics_pdb_hpa_point_at_the_pod(rendered):
    config = sidecar_config(rendered)
    labels = pod(rendered)["metadata"]["labels"]
    dep = rendered["Deployment"]
    assert dep["spec"]["selector"]["matchLabels"].items() <= labels.items()
    svc = rendered["Service"]["spec"]
    assert svc["selector"].items() <= labels.items()
    nginx_ports = {p["name"]: p["containerPort"] for p in container(rendered, "nginx")["ports"]}
    assert svc["ports"][0]["targetPort"] in nginx_ports
    assert f"listen {nginx_ports[svc['ports'][0]['targetPort']]};" in nginx_conf(rendered)
    metrics_port = int(config.metrics.rpartition(":")[2])
    side_ports = {p["name"]: p["containerPort"] for p in container(rendered, "sidecar")["ports"]}
    assert side_ports["metrics"] == metrics_port
    assert pod(rendered)["metadata"]["annotations"]["prometheus.io/port"] == str(metrics_port)
    assert rendered["PodDisruptionBudget"]["spec"]["selector"]["matchLabels"].items() \
        <= labels.items()
    hpa = rendered["HorizontalPodAutoscaler"]["spec"]
    assert hpa["scaleTargetRef"]["name"] == dep["metadata"]["name"]
    assert hpa["minReplicas"] <= dep["spec"]["replicas"] <= hpa["maxReplicas"]
    rules = yaml.safe_load((KUBE / "prometheus-adapter" / "rules.yaml").read_text())
    rule = rules["rules"]["custom"][0]
    assert hpa["metrics"][0]["pods"]["metric"]["name"] == rule["name"]["as"]


def test_the_image_is_the_one_the_containerfile_builds(rendered):
    image = container(rendered, "sidecar")["image"]
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    assert re.search(rf"^ARG VERSION={re.escape(VERSION)}$", containerfile, re.M)
    assert f"-t sidecar:{VERSION} ." in containerfile
    assert re.search(r'^ENTRYPOINT \["' + SIDECAR_BIN + r'"\]$', containerfile, re.M), \
        "sidecar must be PID 1 (exec form, no shell)"
    if rendered["_variant"] == "base":
        assert image == f"sidecar:{VERSION}"
    else:  # the app's image, built FROM the sidecar image
        assert image == "registry.example.com/shop:1.4.2"


def test_the_containerfile_builds_on_python_slim_unless_given_a_base():
    """Both stages on ${BASE}, Docker Hub's python:3.11-slim-bookworm unless --build-arg
    BASE= names another (scripts/container.sh: a debootstrapped one, built and run there)."""
    containerfile = (ROOT / "deploy" / "Containerfile").read_text()
    assert re.search(r"^ARG PYTHON=3\.11$", containerfile, re.M)
    assert re.search(r"^ARG BASE=docker\.io/library/python:\$\{PYTHON\}-slim-bookworm$",
                     containerfile, re.M)
    assert re.findall(r"^FROM (.*)$", containerfile, re.M) == ["${BASE} AS build", "${BASE}"]
    script = (ROOT / "scripts" / "container.sh").read_text()
    assert '--build-arg BASE="$BASE"' in script and "-f deploy/Containerfile" in script
    # container.sh's wheels (built on the host) reach the build stage where it looks for them
    assert re.search(r'^ARG WHEELS=""$', containerfile, re.M)
    assert "--find-links /wheels" in containerfile
    assert '-v "$wheels:/wheels:ro" --build-arg WHEELS="$digest"' in script


# --- the probes' commands against a real sidecar -----------------------------------------------

class Pod:
    """The sidecar container of the base manifest, run here: its own arguments, with
    /run/sidecar a temporary directory, the metrics port a free one, and the test's app."""

    def __init__(self, tmp: Path):
        r = {d["kind"]: d for d in kustomize(VARIANTS["base"])}
        self.container = container(r, "sidecar")
        self.run = Path(tempfile.mkdtemp(prefix="sc-k8s-"))  # short: sun_path is 108 bytes
        self.gate = tmp / "gate"
        self.metrics_port = free_port()
        args = [self.path(a) for a in self.container["args"]]
        args = [f"--metrics=127.0.0.1:{self.metrics_port}" if a.startswith("--metrics=") else
                f"--app-dir={ROOT}" if a.startswith("--app-dir=") else a for a in args]
        self.uds = str(self.run / "sidecar.sock")
        assert f"--uds={self.uds}" in args
        env = dict(os.environ, SIDECAR_APP="tests.deploy.probe_app:app", SIDECAR_WORKERS="2",
                   PROBE_GATE=str(self.gate), PYTHONUNBUFFERED="1")
        self.log = open(tmp / "sidecar.log", "wb")
        self.proc = subprocess.Popen([sys.executable, "-m", "sidecar", *args,
                                      "--no-access-log"], cwd=tmp, env=env,
                                     stdout=self.log, stderr=self.log)

    def path(self, text: str) -> str:
        return text.replace("/run/sidecar", str(self.run))

    def probe(self, kind: str, timeout: str | None = None) -> tuple[int, str]:
        """The probe's command as the kubelet runs it (the binary is this venv's)."""
        cmd = [self.path(a) for a in self.container[kind]["exec"]["command"]]
        if timeout is not None:
            cmd[cmd.index("--timeout") + 1] = timeout
        limit = self.container[kind]["timeoutSeconds"]
        try:
            out = subprocess.run([sys.executable, "-m", "sidecar", *cmd[1:]],
                                 capture_output=True, text=True, timeout=limit)
        except subprocess.TimeoutExpired as exc:
            # a failed probe, as the kubelet counts one that runs past timeoutSeconds (on a
            # loaded machine a Python process alone can: wait_for then tries again)
            return -1, f"probe timed out after {limit}s: {exc.stderr or b''!r}"
        return out.returncode, (out.stdout + out.stderr).strip()

    def metrics(self) -> str:
        return urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics",
                                      timeout=10).read().decode()

    def get(self, path: str, timeout: float = 10) -> tuple[int, bytes]:
        import http.client

        conn = http.client.HTTPConnection("localhost", timeout=timeout)
        conn.sock = socket.socket(socket.AF_UNIX)
        conn.sock.settimeout(timeout)
        conn.sock.connect(self.uds)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read()
        finally:
            conn.close()

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.log.close()
        shutil.rmtree(self.run, ignore_errors=True)


def wait_for(what, timeout: float = 30.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if value := what():
            return value
        time.sleep(0.05)
    return what()


@pytest.fixture
def pod_here(tmp_path):
    p = Pod(tmp_path)
    try:
        yield p
    finally:
        p.close()
        log = (tmp_path / "sidecar.log").read_text(errors="replace")
        assert "Traceback" not in log, log


def test_readiness_follows_the_workers_and_the_drain(pod_here):
    p = pod_here
    assert wait_for(lambda: os.path.exists(p.path("/run/sidecar/sidecar.sock.ctl")))
    # lifespan startup held: alive, not ready
    code, out = p.probe("readinessProbe")
    assert code == 1 and "not ready: starting, 0/2 workers ready" in out, out
    code, out = p.probe("livenessProbe")
    assert code == 0 and "live" in out, out
    p.gate.touch()
    assert wait_for(lambda: p.probe("readinessProbe")[0] == 0), p.probe("readinessProbe")
    assert p.probe("readinessProbe")[1] == "ready: 2/2 workers ready"
    assert p.get("/")[0] == 200
    # the HPA's metric is there, one series per worker
    assert len(re.findall(r'^sidecar_worker_inflight\{worker="\d+"\} 0$', p.metrics(),
                          re.M)) == 2
    # SIGTERM with a request in flight: not ready at once, still alive, the request finishes
    result: list = []
    slow = threading.Thread(target=lambda: result.append(p.get("/sleep?s=3")))
    slow.start()
    assert wait_for(lambda: re.search(r'^sidecar_worker_inflight\{worker="\d+"\} 1$',
                                      p.metrics(), re.M))
    p.proc.send_signal(signal.SIGTERM)
    code, out = p.probe("readinessProbe")
    assert code == 1 and "not ready: stopping" in out, out
    assert p.probe("livenessProbe")[0] == 0
    assert p.proc.wait(30) == 0
    slow.join(10)
    assert result and result[0][0] == 200, result
    # gone: both fail, with one line
    for kind in ("readinessProbe", "livenessProbe"):
        code, out = p.probe(kind)
        assert code == 1 and "cannot reach" in out and len(out.splitlines()) == 1, out


def test_liveness_fails_when_the_event_loop_stalls(pod_here):
    p = pod_here
    p.gate.touch()
    assert wait_for(lambda: p.probe("readinessProbe")[0] == 0), p.probe("readinessProbe")
    p.proc.send_signal(signal.SIGSTOP)   # the front-end's loop stops, as a blocking call would
    try:
        code, out = p.probe("livenessProbe", timeout="1")
        assert code == 1 and "no answer within 1s" in out, out
    finally:
        p.proc.send_signal(signal.SIGCONT)
    assert wait_for(lambda: p.probe("livenessProbe")[0] == 0)
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0


# --- the ConfigMap's nginx.conf in a real nginx --------------------------------------------------

def test_nginx_conf_serves_and_quits_gracefully(pod_here, tmp_path):
    """The pod's nginx.conf (its socket and /tmp paths moved into this test's directory, the
    port a free one) in front of the pod's sidecar: HTTP and a WebSocket go through, and the
    preStop hook's `nginx -s quit` lets a request in flight finish."""
    from websockets.sync.client import connect

    p = pod_here
    p.gate.touch()
    assert wait_for(lambda: p.probe("readinessProbe")[0] == 0)
    r = {d["kind"]: d for d in kustomize(VARIANTS["base"])}
    r["_docs"] = list(r.values())
    conf = nginx_conf(r)
    # the `location /` block is the example site's, word for word
    example = (ROOT / "examples" / "nginx" / "sidecar.conf").read_text()
    block = re.search(r"    location / \{.*?\n    \}\n", example, re.S).group(0)
    assert block in conf
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    port = free_port()
    conf = p.path(conf.replace("/tmp/", f"{prefix}/")).replace("listen 8080;",
                                                               f"listen 127.0.0.1:{port};")
    conf = conf.replace("error_log /dev/stderr warn;", f"error_log {prefix}/error.log info;")
    # as root, nginx's workers would run as nobody, who cannot reach the root-owned socket;
    # in the pod both run as non-root users of the pod's fsGroup
    conf = ("daemon off;\n" + ("user root;\n" if os.geteuid() == 0 else "")) + conf
    (prefix / "nginx.conf").write_text(conf)
    nginx = find_nginx()
    test = subprocess.run([nginx, "-t", "-c", str(prefix / "nginx.conf")], capture_output=True,
                          text=True, timeout=30)
    assert test.returncode == 0, test.stderr
    proc = subprocess.Popen([nginx, "-c", str(prefix / "nginx.conf")],
                            stderr=subprocess.DEVNULL)
    try:
        def up():
            try:
                return urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=5).status
            except OSError:
                return None
        assert wait_for(up, 15) == 200
        with connect(f"ws://127.0.0.1:{port}/ws") as ws:
            ws.send("through nginx")
            assert ws.recv(timeout=10) == "through nginx"
        result: list = []
        slow = threading.Thread(target=lambda: result.append(urllib.request.urlopen(
            f"http://127.0.0.1:{port}/sleep?s=2", timeout=20).status))
        slow.start()
        time.sleep(0.5)   # the request is in flight through nginx
        quit_ = subprocess.run([nginx, "-c", str(prefix / "nginx.conf"), "-s", "quit"],
                               capture_output=True, text=True, timeout=30)
        assert quit_.returncode == 0, quit_.stderr
        assert proc.wait(20) == 0
        slow.join(10)
        assert result == [200]
        assert not (prefix / "nginx.pid").exists()   # what the preStop hook waits for
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    p.proc.send_signal(signal.SIGTERM)
    assert p.proc.wait(30) == 0
