"""The scopes and roles a hub needs for the forge service; both hub configs here load it
(``load_subconfig``). FORGE_ADMIN_GROUP (staff) names the group that administers forge."""

import os

c = get_config()  # noqa: F821 (JupyterHub's config loader provides it)

# Admin rights are a custom scope: the hub's identity model carries scopes, not `admin`.
c.JupyterHub.custom_scopes = {
    "custom:forge:admin": {"description": "pull, remove and preload models; see all usage"},
}
c.JupyterHub.load_roles = [
    {
        "name": "user",  # every user: use the service, and let kernels find it
        "scopes": ["self", "access:services!service=forge", "read:services!service=forge"],
    },
    {
        "name": "forge-admin",
        "groups": [os.environ.get("FORGE_ADMIN_GROUP", "staff")],
        "scopes": ["custom:forge:admin"],
    },
]
# The single-user servers' own tokens: what kernels send to the service.
c.Spawner.server_token_scopes = [
    "access:servers!server",
    "users:activity!user",
    "access:services!service=forge",
    "read:services!service=forge",
]
