"""A JupyterHub that starts FerrousForge as its managed service ``forge``.

The hub starts ``forge serve --hub`` with its own token and proxies it at
``/services/forge/``; users reach it with their hub tokens, kernels find it with no
configuration, and the hub restarts it if it dies. Put the engine's group allowlists and
quotas in its config (``FORGE_CONFIG``, default ``$FORGE_HOME/config.toml``):

    [hub.groups.students]
    models = ["smollm2:135m"]
    [hub.quotas]
    tokens_per_day = 200000

Environment: FORGE_PORT (11434), FORGE_HOME (/srv/forge), FORGE_CONFIG, FORGE_ADMIN_GROUP
(staff: its members administer the engine).
"""

import os
import sys

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)

port = int(os.environ.get("FORGE_PORT", "11434"))
home = os.environ.get("FORGE_HOME", "/srv/forge")
engine_env = {"FORGE_HOME": home}
if os.environ.get("FORGE_CONFIG"):
    engine_env["FORGE_CONFIG"] = os.environ["FORGE_CONFIG"]

load_subconfig(os.path.join(os.path.dirname(__file__), "forge_roles.py"))  # noqa: F821
c.JupyterHub.services = [
    {
        "name": "forge",
        "url": f"http://127.0.0.1:{port}",
        "command": [sys.executable, "-m", "ferrousforge", "serve", "--hub", "--port", str(port)],
        "environment": engine_env,
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": ["custom:forge:admin"],
    },
]
