"""The server extension's old module name, kept because installed Jupyter configs name it
(``jpserver_extensions = {"ferrousforge.jupyter_ext": true}``): without this module such a
server would silently skip the extension. It lives in ``ferrousforge.notebook.jupyter_ext``.
"""

from __future__ import annotations

from .notebook.jupyter_ext import (
    _jupyter_server_extension_points,
    _load_jupyter_server_extension,
)

__all__ = ["_jupyter_server_extension_points", "_load_jupyter_server_extension"]
