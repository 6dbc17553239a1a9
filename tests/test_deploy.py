"""deploy/: each file checked with what runs here. The hub configs are executed (the managed
one also by tests/test_hub.py, on a real hub); the Kubernetes YAML is parsed and checked for
the fields Kubernetes requires and for consistency; the systemd unit goes through
``systemd-analyze verify``; the Dockerfile is parsed (there is no Docker daemon here)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

DEPLOY = Path(__file__).parent.parent / "deploy"


def hub_config(name: str, monkeypatch: pytest.MonkeyPatch, **env: str) -> Any:
    from traitlets.config.loader import PyFileConfigLoader

    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return PyFileConfigLoader(name, path=str(DEPLOY / "jupyterhub")).load_config()


def test_the_hub_configs_start_or_register_the_service(monkeypatch: pytest.MonkeyPatch) -> None:
    managed = hub_config("jupyterhub_config.py", monkeypatch, FORGE_PORT="12345")
    [forge] = managed.JupyterHub.services
    assert forge["url"] == "http://127.0.0.1:12345" and forge["command"][-3:] == [
        "--hub",
        "--port",
        "12345",
    ]
    remote = hub_config(
        "jupyterhub_config_remote.py",
        monkeypatch,
        FORGE_SERVICE_TOKEN="t0ken",
        FORGE_URL="http://f:1",
    )
    [forge] = remote.JupyterHub.services
    assert forge == forge | {"url": "http://f:1", "api_token": "t0ken"} and "command" not in forge
    for c in (managed, remote):
        assert "custom:forge:admin" in c.JupyterHub.custom_scopes
        roles = {r["name"]: r for r in c.JupyterHub.load_roles}
        assert "access:services!service=forge" in roles["user"]["scopes"]
        assert roles["forge-admin"]["scopes"] == ["custom:forge:admin"]
        assert "access:services!service=forge" in c.Spawner.server_token_scopes
        assert forge["oauth_client_allowed_scopes"] == ["custom:forge:admin"]


def manifests() -> dict[str, dict[str, Any]]:
    docs = list(yaml.safe_load_all((DEPLOY / "kubernetes/forge.yaml").read_text()))
    for d in docs:
        assert {"apiVersion", "kind", "metadata", "spec"} <= set(d) and d["metadata"]["name"]
    return {d["kind"]: d for d in docs}


def test_the_kubernetes_manifests_agree_with_each_other() -> None:
    m = manifests()
    assert set(m) == {"PersistentVolumeClaim", "Deployment", "Service"}
    deploy = m["Deployment"]["spec"]
    labels = deploy["template"]["metadata"]["labels"]
    assert deploy["selector"]["matchLabels"].items() <= labels.items()
    assert m["Service"]["spec"]["selector"].items() <= labels.items()
    pod = deploy["template"]["spec"]
    assert pod["nodeSelector"]  # a GPU node
    [container] = pod["containers"]
    ports = {p["containerPort"] for p in container["ports"]}
    assert {p["targetPort"] for p in m["Service"]["spec"]["ports"]} <= ports
    assert container["readinessProbe"]["httpGet"] == {"path": "/ready", "port": 11434}
    assert container["livenessProbe"]["httpGet"]["path"] == "/health"
    assert container["livenessProbe"]["httpGet"]["port"] in ports
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert {v["name"] for v in container["volumeMounts"]} <= set(volumes)
    claim = volumes["models"]["persistentVolumeClaim"]["claimName"]
    assert claim == m["PersistentVolumeClaim"]["metadata"]["name"]
    assert "--hub" in container["args"]
    env = {e["name"]: e for e in container["env"]}
    assert env["JUPYTERHUB_SERVICE_PREFIX"]["value"] == "/services/forge/"
    assert "secretKeyRef" in env["JUPYTERHUB_API_TOKEN"]["valueFrom"]


def test_the_z2jh_values_point_at_the_service() -> None:
    values = yaml.safe_load((DEPLOY / "kubernetes/z2jh-values.yaml").read_text())
    service = manifests()["Service"]
    url = values["hub"]["services"]["forge"]["url"]
    name, port = service["metadata"]["name"], service["spec"]["ports"][0]["port"]
    assert url == f"http://{name}:{port}" == values["singleuser"]["extraEnv"]["FORGE_URL"]
    roles = values["hub"]["loadRoles"]
    assert "access:services!service=forge" in roles["user"]["scopes"]
    assert "custom:forge:admin" in values["hub"]["extraConfig"]["forge"]


@pytest.mark.skipif(not shutil.which("systemd-analyze"), reason="no systemd-analyze here")
def test_the_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (DEPLOY / "systemd/ferrousforge.service").read_text()
    assert "ExecStart=/opt/ferrousforge/.venv/bin/forge serve" in unit
    # verify needs the executable to exist: this checkout's forge stands in for /opt's
    forge = Path(sys.executable).parent / "forge"
    here = tmp_path / "ferrousforge.service"
    here.write_text(unit.replace("/opt/ferrousforge/.venv/bin/forge", str(forge)))
    r = subprocess.run(
        ["systemd-analyze", "verify", str(here)], capture_output=True, text=True, timeout=60
    )
    assert r.returncode == 0 and not r.stderr.strip(), r.stderr


def test_the_dockerfile_parses_and_builds_llama_cpp_as_documented() -> None:
    text = (DEPLOY / "docker/Dockerfile").read_text()
    lines = re.sub(r"\\\n", " ", text).splitlines()
    steps = [ln.split(None, 1) for ln in lines if ln.strip() and not ln.lstrip().startswith("#")]
    known = {"ARG", "FROM", "ENV", "RUN", "COPY", "VOLUME", "EXPOSE", "HEALTHCHECK", "ENTRYPOINT",
             "CMD", "WORKDIR", "USER", "LABEL"}  # fmt: skip
    assert {s[0] for s in steps} <= known
    assert next(s[0] for s in steps if s[0] != "ARG") == "FROM"
    dev = (DEPLOY.parent / "dev.sh").read_text()
    flags = re.search(r'LLAMA_CMAKE_ARGS="([^"]+)"', dev)
    assert flags and all(f in text for f in flags.group(1).split())  # DESIGN.md §6's flags
    assert "ARG CUDA=0" in text and "-DGGML_CUDA=on" in text
    assert ["EXPOSE", "11434"] in steps and "/health" in text
