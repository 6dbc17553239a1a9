"""The engine as a JupyterHub service, on a real hub: the hub starts ``forge serve --hub``
and proxies it at /services/forge/; hub tokens authenticate, groups' allowlists say which
models each user may use, and only the admin scope changes the store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

import ferrousforge as ff

from .hubharness import Hub, running_hub
from .tinymodel import write_tiny_gguf

pytest.importorskip("jupyterhub", reason="the hub extra is not installed")
pytest.importorskip("llama_cpp", reason="the llama extra is not installed")

FORGE_CONFIG = """
[hub]
default_models = []

[hub.quotas]
tokens_per_day = 80

[hub.groups.students]
models = ["tiny", "smollm2:135m"]
"""
SMOLLM2 = "smollm2:135m"


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Hub]:
    root = tmp_path_factory.mktemp("hub")
    home = root / "forge-home"
    gguf = write_tiny_gguf(root / "tiny.gguf")
    with ff.Engine(ff.Settings(home=home)) as engine:
        engine.pull(str(gguf), name="tiny")
        engine.pull(str(gguf), name="staff-only")
        if (real := smollm2_file()) is not None:  # registered in place: never copied
            engine.pull(str(real), name=SMOLLM2)
    config = root / "forge.toml"
    config.write_text(FORGE_CONFIG)
    with running_hub(root, home, config) as h:
        yield h


def smollm2_file() -> Path | None:
    """smollm2:135m's GGUF in the real-model test home, when it was pulled there."""
    test_home = Path(os.environ.get("FORGE_TEST_HOME", "~/.cache/ferrousforge/test-home"))
    if not (test_home.expanduser() / "manifests/library/smollm2/135m.json").is_file():
        return None
    with ff.Engine(ff.Settings(home=test_home.expanduser())) as engine:
        return Path(engine.show(SMOLLM2).file)


def call(hub: Hub, method: str, path: str, token: str | None, **kw: object) -> httpx.Response:
    headers = {"Authorization": f"token {token}"} if token else {}
    url = hub.url + "/services/forge" + path
    return httpx.request(method, url, headers=headers, timeout=60, **kw)  # type: ignore[arg-type]


def test_the_hub_starts_forge_and_proxies_it(hub: Hub) -> None:
    r = httpx.get(hub.url + "/services/forge/health", timeout=30)
    assert r.status_code == 200 and r.json() == {"status": "ok"}
    page = httpx.get(hub.url + "/services/forge/web", follow_redirects=True, timeout=30)
    assert page.status_code == 200 and str(page.url) == hub.url + "/services/forge/web/"


def test_hub_tokens_authenticate_and_groups_choose_models(hub: Hub) -> None:
    alice = hub.token_for("alice")
    assert call(hub, "GET", "/api/tags", None).status_code == 401
    assert call(hub, "GET", "/api/tags", "not-a-token").status_code == 401
    hers = {"tiny:latest"} | ({SMOLLM2} if smollm2_file() else set())  # not staff-only
    tags = call(hub, "GET", "/api/tags", alice).json()["models"]
    assert {m["name"] for m in tags} == hers
    models = call(hub, "GET", "/v1/models", alice).json()["data"]
    assert {m["id"] for m in models} == hers
    body = {"model": "tiny", "prompt": "the", "raw": True, "stream": False}
    r = call(hub, "POST", "/api/generate", alice, json=body | {"options": {"num_predict": 3}})
    assert r.status_code == 200 and r.json()["eval_count"] >= 1
    r = call(hub, "POST", "/api/generate", alice, json=body | {"model": "staff-only"})
    assert r.status_code == 403 and "staff-only" in r.json()["error"]
    r = call(hub, "POST", "/api/pull", alice, json={"model": "tiny", "stream": False})
    assert r.status_code == 403 and "admin" in r.json()["error"]


def test_the_admin_scope_sees_and_changes_everything(hub: Hub) -> None:
    carol = hub.token_for("carol")  # staff, with the forge-admin role
    tags = call(hub, "GET", "/api/tags", carol).json()["models"]
    assert {m["name"] for m in tags} >= {"staff-only:latest", "tiny:latest"}
    r = call(hub, "POST", "/api/copy", carol, json={"source": "tiny", "destination": "copy:1"})
    assert r.status_code == 200
    r = call(hub, "DELETE", "/api/delete", carol, json={"model": "copy:1"})
    assert r.status_code == 200


def generate(hub: Hub, token: str, tokens: int) -> httpx.Response:
    body = {"model": "tiny", "prompt": "the", "raw": True, "stream": False}
    return call(
        hub, "POST", "/api/generate", token, json=body | {"options": {"num_predict": tokens}}
    )


def test_usage_is_kept_per_user_and_shown_to_whom_it_belongs(hub: Hub) -> None:
    alice, bob, carol = (hub.token_for(u) for u in ("alice", "bob", "carol"))
    assert generate(hub, alice, 3).status_code == generate(hub, bob, 5).status_code == 200
    for user, token in (("alice", alice), ("bob", bob)):  # each sees only their own
        mine = call(hub, "GET", "/usage", token).json()
        assert mine["admin"] is False and {row["user"] for row in mine["usage"]} == {user}
    assert sum(row["completion_tokens"] for row in mine["usage"]) >= 5  # bob's 5
    everyone = call(hub, "GET", "/usage", carol).json()
    assert everyone["admin"] is True and {"alice", "bob"} <= {r["user"] for r in everyone["usage"]}
    metrics = call(hub, "GET", "/metrics", carol).text  # totals by group, never by user
    assert 'forge_hub_tokens_total{group="students",model="tiny:latest"}' in metrics
    assert "alice" not in metrics and "bob" not in metrics


def test_a_daily_quota_is_a_429_that_says_not_to_retry(hub: Hub) -> None:
    dave = hub.token_for("dave")
    answers = [generate(hub, dave, 60) for _ in range(4)]  # 80 tokens a day: 2 or 3 answers
    assert answers[0].status_code == 200
    r = answers[-1]
    assert r.status_code == 429 and "tokens_per_day" in r.json()["error"]
    assert int(r.headers["retry-after"]) >= 1 and r.headers["x-should-retry"] == "false"
    assert generate(hub, hub.token_for("carol"), 3).status_code == 200  # admins: no quota


def test_a_personal_key_works_with_the_openai_client_until_revoked(hub: Hub) -> None:
    import openai

    alice = hub.token_for("alice")
    made = call(hub, "POST", "/keys", alice, json={"name": "laptop"})
    assert made.status_code == 201 and made.json()["key"].startswith("ffk-")
    listed = call(hub, "GET", "/keys", alice).json()
    assert [k["name"] for k in listed] == ["laptop"] and "key" not in listed[0]
    client = openai.OpenAI(base_url=hub.url + "/services/forge/v1", api_key=made.json()["key"])
    answer = client.completions.create(model="tiny", prompt="the", max_tokens=3)
    assert answer.choices[0].text and answer.usage is not None
    with pytest.raises(openai.PermissionDeniedError, match="staff-only"):  # her groups hold
        client.completions.create(model="staff-only", prompt="the", max_tokens=3)
    bob = hub.token_for("bob")
    assert call(hub, "DELETE", f"/keys/{made.json()['id']}", bob).status_code == 404  # not his
    assert call(hub, "DELETE", "/keys/" + "x" * 65, alice).status_code == 400  # over the limit
    assert call(hub, "DELETE", f"/keys/{made.json()['id']}", alice).status_code == 200
    with pytest.raises(openai.AuthenticationError):
        client.completions.create(model="tiny", prompt="the", max_tokens=3)


def test_a_hub_users_kernel_finds_the_service_with_no_configuration(hub: Hub) -> None:
    """What a kernel in Alice's server has: the hub's API URL and her token, no FORGE_*."""
    code = (
        "from ferrousforge import notebook\n"
        "e = notebook.shared()\n"
        "r = e.generate('tiny', 'the', raw=True, options={'max_tokens': 3})\n"
        "print(type(e).__name__, r.stats.eval_count)\n"
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith(("FORGE_", "JUPYTERHUB_"))}
    env |= {
        "JUPYTERHUB_API_URL": hub.url + "/hub/api",
        "JUPYTERHUB_API_TOKEN": hub.token_for("alice"),
    }
    r = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120
    )
    assert r.returncode == 0, r.stderr
    kind, count = r.stdout.split()
    assert kind == "RemoteEngine" and int(count) >= 1


def test_the_hub_restarts_a_crashed_service(hub: Hub) -> None:
    alice = hub.token_for("alice")
    os.kill(hub.forge_pid(), signal.SIGKILL)  # a native crash, as far as the hub can tell
    hub.wait_healthy(120)  # the hub polls its services about every 30 s
    assert generate(hub, alice, 3).status_code == 200


def test_a_browser_logs_in_through_the_hub_and_gets_the_keys_page(hub: Hub) -> None:
    with httpx.Client(base_url=hub.url, timeout=60) as browser:
        browser.get("/hub/login")
        form = {"username": "alice", "password": "any", "_xsrf": browser.cookies["_xsrf"]}
        assert browser.post("/hub/login", data=form).status_code == 302  # logged in to the hub
        page = browser.get(
            "/services/forge/keys", headers={"Accept": "text/html"}, follow_redirects=True
        )  # -> the hub's authorize -> our oauth_callback -> back here, with our cookie
        assert page.status_code == 200 and "Personal keys of alice" in page.text
        assert str(page.url).endswith("/services/forge/keys")
        origin = {"Origin": hub.url}  # the page's own script: same origin, the cookie
        made = browser.post("/services/forge/keys", json={"name": "web"}, headers=origin)
        assert made.status_code == 201 and made.json()["key"].startswith("ffk-")
        mine = browser.get("/services/forge/usage", headers={"Accept": "text/html"})
        assert mine.status_code == 200 and "Usage (alice)" in mine.text
    forged = httpx.get(hub.url + "/services/forge/oauth_callback?code=x&state=y")
    assert forged.status_code == 403 and "state" in forged.json()["error"]


@pytest.mark.slow
def test_alices_notebook_uses_the_service_with_no_configuration(hub: Hub) -> None:
    """Alice's own server, spawned by the hub with this project's extension: a kernel
    started there runs the magics against the hub's engine, configured by nothing."""
    if smollm2_file() is None:
        pytest.skip(f"{SMOLLM2} is not in the test home; ./dev.sh test pulls it first")
    import asyncio

    from .kernels import run_in_kernel

    hub.spawn("alice")
    code = (
        "%load_ext ferrousforge\n"
        "%forge load smollm2:135m\n"
        "get_ipython().run_cell_magic('forge', 'smollm2:135m --temperature 0 --max-tokens 30', "
        "'What is the capital of France? Answer in one word.')\n"
        "from ferrousforge import notebook\n"
        "print('engine:', type(notebook.shared()).__name__)\n"
    )
    out = asyncio.run(run_in_kernel(hub.url + "/user/alice", hub.token_for("alice"), code, 180))
    assert "ERROR" not in out, out
    assert "Paris" in out and "engine: RemoteEngine" in out, out
    loaded = call(hub, "GET", "/api/ps", hub.token_for("carol")).json()["models"]
    assert SMOLLM2 in [m["name"] for m in loaded]  # in the shared engine, not the kernel
