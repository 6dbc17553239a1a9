"""Ollama-style prompt templates (Go template syntax), for ``/api/generate``'s ``template``.

Only the part of the syntax prompt templates use: ``{{ .System }}``, ``{{ .Prompt }}``,
``{{ .Response }}`` and ``{{ if .X }}...{{ else }}...{{ end }}`` (not nested), with ``{{-``
and ``-}}`` trimming.
"""

from __future__ import annotations

import re

from .errors import InferenceError

_IF = re.compile(
    r"\{\{-?\s*if\s+\.(\w+)\s*-?\}\}(.*?)(?:\{\{-?\s*else\s*-?\}\}(.*?))?\{\{-?\s*end\s*-?\}\}",
    re.S,
)
_VAR = re.compile(r"\{\{-?\s*\.(\w+)\s*-?\}\}")
_TRIM_LEFT = re.compile(r"\s*\{\{-")
_TRIM_RIGHT = re.compile(r"-\}\}\s*")


def render_go_template(template: str, **values: str) -> str:
    """Fill ``template`` with ``values`` (keys as in the template: System, Prompt, Response)."""
    text = _TRIM_RIGHT.sub("-}}", _TRIM_LEFT.sub("{{-", template))
    text = _IF.sub(lambda m: m.group(2) if values.get(m.group(1)) else m.group(3) or "", text)

    def var(m: re.Match[str]) -> str:
        name = m.group(1)
        if name not in values:
            raise InferenceError(f"template uses .{name}; only .System, .Prompt, .Response exist")
        return values[name]

    text = _VAR.sub(var, text)
    if "{{" in text:
        raise InferenceError("template uses Go template syntax beyond .System/.Prompt and if")
    return text
