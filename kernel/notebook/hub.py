"""Inside a JupyterHub user's server: find the hub's shared forge service, so kernels, the
widgets and the server extension use it with no configuration.

The hub gives every single-user server ``JUPYTERHUB_API_URL`` and a token
(``JUPYTERHUB_API_TOKEN``). The service's URL comes from ``FORGE_URL`` when the spawner sets
it, else from the hub's API (``GET /services/forge``, which needs the token scope
``read:services!service=forge``; the shipped ``deploy/jupyterhub_config.py`` grants it). The
same token authenticates every request to the service.
"""

from __future__ import annotations

import logging
import os

import httpx

log = logging.getLogger(__name__)


def hub_service() -> tuple[str, str] | None:
    """The forge service's URL and this user's hub token, or None outside a hub (or when
    the hub has no such service: then the caller runs its own engine, and says so)."""
    token, api = os.environ.get("JUPYTERHUB_API_TOKEN"), os.environ.get("JUPYTERHUB_API_URL")
    if not token or not api:
        return None
    if url := os.environ.get("FORGE_URL"):
        return url, os.environ.get("FORGE_API_KEY") or token
    name = os.environ.get("FORGE_HUB_SERVICE", "forge")
    try:
        r = httpx.get(
            f"{api.rstrip('/')}/services/{name}",
            headers={"Authorization": f"token {token}"},
            timeout=10,
        )
    except httpx.HTTPError as e:
        log.warning("the hub at %s did not answer (%s): using an engine of this server", api, e)
        return None
    url = r.json().get("url") if r.status_code == 200 else None
    if not url:
        log.warning(
            "the hub has no %r service this server's token may read (HTTP %d): using an "
            "engine of this server",
            name,
            r.status_code,
        )
        return None
    return str(url), token
