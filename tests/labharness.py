"""A real JupyterLab on 127.0.0.1 and notebooks driven in it by Playwright on Debian's
Chromium: shared by tests/test_lab_widgets.py and bench/notebook.py."""

from __future__ import annotations

import contextlib
import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

CHROMIUM = Path("/usr/bin/chromium")
WAIT_MS = 90_000  # generous: 2 shared cores, a kernel start and a llama.cpp load


@dataclass
class Lab:
    url: str
    token: str
    root: Path
    tiny2: Path  # a second tiny GGUF, pulled through the Models widget


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def stop(proc: subprocess.Popen[Any], grace: float = 15) -> None:
    """Terminate a server this test started, killing it if it will not go in ``grace`` s."""
    proc.terminate()
    try:
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


@contextlib.contextmanager
def forge(
    command: list[str], env: dict[str, str], log: Path, timeout: float = 60
) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``python -m ferrousforge COMMAND --port N`` with ``env`` over none of this process's
    FORGE_* variables, output to ``log``: (the process, its URL) once /health answers.
    Stopped at the end if it is still running."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")} | env
    cmd = [sys.executable, "-m", "ferrousforge", *command, "--port", str(port)]
    with log.open("wb") as out:
        proc = subprocess.Popen(cmd, env=env, stdout=out, stderr=subprocess.STDOUT)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + timeout
        while True:
            assert proc.poll() is None, f"forge exited: {log.read_text()}"
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            assert time.monotonic() < deadline, f"forge never answered: {log.read_text()}"
            time.sleep(0.1)
        yield proc, url
    finally:
        if proc.poll() is None:
            stop(proc)


@contextlib.contextmanager
def jupyter_server(
    home: Path, root: Path, token: str, extension: str = "ferrousforge.jupyter_ext"
) -> Iterator[str]:
    """A real ``jupyter server`` on 127.0.0.1 with the ferrousforge extension (enabled by
    ``extension``, the module name Jupyter configs hold), its engine on store ``home`` and
    its root folder ``root``: its URL once it answers. Stopped at the end."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
    env |= {"FORGE_HOME": str(home), "JUPYTER_CONFIG_DIR": str(root / ".jupyter")}
    cmd = [
        sys.executable, "-m", "jupyter_server", "--no-browser", "--allow-root",
        f"--ServerApp.port={port}", "--ServerApp.ip=127.0.0.1", f"--ServerApp.root_dir={root}",
        f"--IdentityProvider.token={token}",
        f"--ServerApp.jpserver_extensions={{'{extension}': True}}",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/api/status", params={"token": token}).status_code == 200:
                    break
            if time.monotonic() > deadline or proc.poll() is not None:
                proc.kill()
                said = proc.communicate()[1].decode(errors="replace")
                raise RuntimeError("jupyter server did not start: " + said[-2000:])
            time.sleep(0.2)
        yield url
    finally:
        if proc.poll() is None:
            stop(proc)
        if proc.stderr is not None:
            proc.stderr.close()


def write_notebook(path: Path, *cells: str) -> None:
    path.write_text(
        json.dumps(
            {
                "cells": [
                    {
                        "cell_type": "code",
                        "execution_count": None,
                        "id": f"cell{i}",
                        "metadata": {},
                        "outputs": [],
                        "source": src,
                    }
                    for i, src in enumerate(cells)
                ],
                "metadata": {  # without a kernelspec, Lab asks for one in a dialog
                    "kernelspec": {
                        "display_name": "Python 3",
                        "language": "python",
                        "name": "python3",
                    },
                    "language_info": {"name": "python"},
                },
                "nbformat": 4,
                "nbformat_minor": 5,
            }
        )
    )


@contextlib.contextmanager
def running_lab(root: Path, home: Path, notebooks: Path, tiny2: Path) -> Iterator[Lab]:
    """``jupyter lab`` over the store at ``home``, serving ``notebooks``; stopped by its PID."""
    token, port = secrets.token_hex(16), free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("FORGE_")}
    env |= {
        "FORGE_HOME": str(home),
        "FORGE_THREADS": "1",  # two models decode at once on two cores
        "JUPYTER_CONFIG_DIR": str(root / "config"),
        "JUPYTER_RUNTIME_DIR": str(root / "runtime"),
        "JUPYTERLAB_SETTINGS_DIR": str(root / "settings"),
        "JUPYTERLAB_WORKSPACES_DIR": str(root / "workspaces"),
        "IPYTHONDIR": str(root / "ipython"),
    }
    log = (root / "lab.log").open("wb")
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "jupyterlab",
            "--no-browser",
            "--ip=127.0.0.1",
            f"--port={port}",
            "--ServerApp.port_retries=0",
            f"--IdentityProvider.token={token}",
            f"--ServerApp.root_dir={notebooks}",
            "--LabApp.expose_app_in_browser=True",  # window.jupyterapp: run cells by command
            "--JupyterNotebookApp.expose_app_in_browser=True",  # the same in Notebook 7
            "--LabApp.check_for_updates_class=jupyterlab.NeverCheckForUpdate",
            "--allow-root",
        ],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_ready(proc, url, token, root / "lab.log")
        yield Lab(url, token, notebooks, tiny2)
    finally:
        proc.terminate()  # the server shuts its kernels down
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        log.close()
        shutil.rmtree(root / "runtime", ignore_errors=True)


def wait_ready(proc: subprocess.Popen[bytes], url: str, token: str, log: Path) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"jupyter lab exited:\n{log.read_text()[-3000:]}")
        try:
            if httpx.get(f"{url}/api/status", params={"token": token}).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.3)
    raise RuntimeError(f"jupyter lab did not start:\n{log.read_text()[-3000:]}")


class Notebook:
    """One notebook open in JupyterLab (or Notebook 7, for names ending ``-nb7``), its
    cells run through the app's own commands."""

    def __init__(self, browser: Any, lab: Lab, name: str) -> None:
        self.name = name
        self.page = browser.new_page(viewport={"width": 1400, "height": 1000})
        self.page.set_default_timeout(WAIT_MS)
        if name.endswith("-nb7.ipynb"):
            self.page.goto(f"{lab.url}/notebooks/{name}?token={lab.token}")
        else:
            workspace = name.removesuffix(".ipynb")  # one each: nothing else is restored
            self.page.goto(f"{lab.url}/lab/workspaces/{workspace}/tree/{name}?token={lab.token}")
        self.page.wait_for_function(
            """(name) => {
                const app = window.jupyterapp;
                const nb = app && [...app.shell.widgets("main")]
                    .find((w) => w.context && w.context.path === name);
                const kernel = nb && nb.sessionContext.session?.kernel;
                return kernel && kernel.status === "idle";
            }""",
            arg=name,
        )
        self.app = str(self.page.evaluate("window.jupyterapp.name"))

    def run(self, index: int) -> None:
        """Run one cell (without waiting for it: the DOM tells when it is done)."""
        self.page.evaluate(
            """([name, index]) => {
                const app = window.jupyterapp;
                const nb = [...app.shell.widgets("main")].find((w) => w.context?.path === name);
                app.shell.activateById(nb.id);
                nb.content.activeCellIndex = index;
                app.commands.execute("notebook:run-cell");
            }""",
            [self.name, index],
        )

    def output(self, index: int, pattern: str) -> re.Match[str]:
        """Run cell ``index`` and wait for its text output to match ``pattern``."""
        self.run(index)
        cell = self.page.locator(".jp-Notebook .jp-Cell").nth(index)
        out = cell.locator(".jp-OutputArea-output")
        out.first.wait_for()
        text = ""
        deadline = time.monotonic() + WAIT_MS / 1000
        while time.monotonic() < deadline:
            text = "\n".join(out.all_inner_texts())
            if m := re.search(pattern, text):
                return m
            time.sleep(0.2)
        raise AssertionError(f"cell {index} printed {text!r}, not matching {pattern!r}")

    def close(self) -> None:
        self.page.close()
