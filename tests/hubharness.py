"""A real JupyterHub (configurable-http-proxy, DummyAuthenticator, SimpleLocalProcessSpawner)
on 127.0.0.1, run with the shipped deploy/jupyterhub/jupyterhub_config.py: it starts
``forge serve --hub`` as its managed service ``forge``."""

from __future__ import annotations

import contextlib
import os
import secrets
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from .labharness import free_port

SHIPPED = Path(__file__).parent.parent / "deploy/jupyterhub/jupyterhub_config.py"
# What a test changes in the shipped config: ports, files, logins, groups, its own token.
OVERRIDES = """
c.JupyterHub.ip = "127.0.0.1"
c.JupyterHub.port = {port}
c.JupyterHub.hub_ip = "127.0.0.1"
c.JupyterHub.hub_port = {hub_port}
c.ConfigurableHTTPProxy.api_url = "http://127.0.0.1:{proxy_api}"
c.JupyterHub.db_url = "sqlite:///{root}/hub.sqlite"
c.JupyterHub.cookie_secret_file = "{root}/cookie_secret"
c.JupyterHub.authenticator_class = "dummy"
c.Authenticator.allow_all = True
c.JupyterHub.spawner_class = "simple"
c.SimpleLocalProcessSpawner.home_dir_template = "{root}/users/{{username}}"
c.Spawner.cmd = [sys.executable, "-m", "jupyterhub.singleuser"]
c.Spawner.args = ["--ServerApp.ip=127.0.0.1", "--allow-root"]
c.Spawner.http_timeout = 120
c.JupyterHub.load_groups = {{
    "students": {{"users": ["alice", "bob", "dave"]}},
    "staff": {{"users": ["carol"]}},
}}
c.JupyterHub.load_roles.append(
    {{"name": "tester", "services": ["tester"],
      "scopes": ["admin:users", "admin:servers", "tokens", "groups"]}}
)
c.JupyterHub.services.append({{"name": "tester", "api_token": "{admin_token}"}})
"""


@dataclass
class Hub:
    url: str  # the proxy's public URL
    admin_token: str  # the "tester" service's token: makes users' tokens
    forge_port: int  # where the hub's forge service listens

    def forge_pid(self) -> int:
        """The process of the forge service (started by the hub this test started)."""
        import psutil

        for c in psutil.net_connections(kind="tcp"):
            port = c.laddr[1] if c.laddr else None
            if c.status == psutil.CONN_LISTEN and port == self.forge_port and c.pid:
                return int(c.pid)
        raise AssertionError(f"nothing listens on {self.forge_port}")

    def spawn(self, user: str, seconds: float = 120) -> None:
        """Start ``user``'s single-user server (Jupyter, with this project's extension)."""
        api = self.url + "/hub/api"
        headers = {"Authorization": f"token {self.admin_token}"}
        r = httpx.post(f"{api}/users/{user}/server", headers=headers, timeout=30)
        assert r.status_code in (201, 202, 400), r.text  # 400: it runs already
        deadline = time.monotonic() + seconds
        while True:
            model = httpx.get(f"{api}/users/{user}", headers=headers, timeout=30).json()
            if (model.get("servers") or {}).get("", {}).get("ready"):
                return
            assert time.monotonic() < deadline, f"{user}'s server did not start: {model}"
            time.sleep(0.5)

    def wait_healthy(self, seconds: float) -> None:
        deadline = time.monotonic() + seconds
        while True:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(self.url + "/services/forge/health", timeout=5).status_code == 200:
                    return
            assert time.monotonic() < deadline, "forge did not answer through the hub"
            time.sleep(0.5)

    def token_for(self, user: str) -> str:
        """A new API token of ``user`` (created, with the user, through the hub's API)."""
        api = self.url + "/hub/api"
        headers = {"Authorization": f"token {self.admin_token}"}
        r = httpx.post(f"{api}/users/{user}", headers=headers, timeout=30)
        assert r.status_code in (201, 409), r.text  # 409: the user exists already
        r = httpx.post(f"{api}/users/{user}/tokens", headers=headers, json={}, timeout=30)
        assert r.status_code == 201, r.text
        return str(r.json()["token"])


@contextlib.contextmanager
def running_hub(root: Path, home: Path, forge_config: Path) -> Iterator[Hub]:
    """The hub over ``home`` (the engine's store), stopped by its PID (which stops forge)."""
    proxy = shutil.which("configurable-http-proxy")
    assert proxy, "configurable-http-proxy is not installed: ./dev.sh test installs it"
    port, admin_token, forge_port = free_port(), secrets.token_hex(16), free_port()
    config = root / "jupyterhub_config.py"
    overrides = OVERRIDES.format(
        port=port, hub_port=free_port(), proxy_api=free_port(), root=root, admin_token=admin_token
    )
    config.write_text(
        f"import sys\nc = get_config()\nload_subconfig({str(SHIPPED)!r})\n" + overrides
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORGE_", "JUPYTERHUB_"))}
    log = (root / "hub.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "-m", "jupyterhub", "-f", str(config)],
        cwd=root,
        env=env
        | {
            "PATH": f"{Path(proxy).parent}:{env.get('PATH', '')}",
            "FORGE_PORT": str(forge_port),
            "FORGE_HOME": str(home),
            "FORGE_CONFIG": str(forge_config),
        },
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    hub = Hub(f"http://127.0.0.1:{port}", admin_token, forge_port)
    try:
        try:
            hub.wait_healthy(90)
        except AssertionError:
            raise AssertionError(f"the hub or forge did not start: {_tail(root)}") from None
        yield hub
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _tail(root: Path) -> str:
    return (root / "hub.log").read_text(errors="replace")[-3000:]
