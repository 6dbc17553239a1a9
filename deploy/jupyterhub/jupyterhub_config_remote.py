"""A JupyterHub that uses a FerrousForge engine on another host (registered by URL).

The hub does not start or restart it (systemd or Kubernetes does: see deploy/). Start the
engine there with the same token and the hub's API in its environment:

    JUPYTERHUB_API_URL=http://hub.internal:8081/hub/api
    JUPYTERHUB_API_TOKEN=<FORGE_SERVICE_TOKEN>
    JUPYTERHUB_SERVICE_NAME=forge
    JUPYTERHUB_SERVICE_PREFIX=/services/forge/
    forge serve --hub --host 0.0.0.0 --allowed-host forge.internal

Environment: FORGE_URL (http://forge.internal:11434), FORGE_SERVICE_TOKEN (required: the
shared secret; `openssl rand -hex 32`), FORGE_ADMIN_GROUP (staff).
"""

import os

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)

load_subconfig(os.path.join(os.path.dirname(__file__), "forge_roles.py"))  # noqa: F821
c.JupyterHub.services = [
    {
        "name": "forge",
        "url": os.environ.get("FORGE_URL", "http://forge.internal:11434"),
        "api_token": os.environ["FORGE_SERVICE_TOKEN"],
        "oauth_no_confirm": True,
        "oauth_client_allowed_scopes": ["custom:forge:admin"],
    },
]
