"""Ollama-style prompt templates (Go template syntax), for ``/api/generate``'s ``template``.

Only the part of the syntax prompt templates use: ``{{ .System }}``, ``{{ .Prompt }}``,
``{{ .Response }}`` and ``{{ if .X }}...{{ else }}...{{ end }}`` (nesting allowed), with
``{{-`` and ``-}}`` trimming. One pass over the text with ``str.find``: the time is linear in
the template's length whatever it holds (a backtracking regex froze the server on 80 kB of
spaces).
"""

from __future__ import annotations

from ..errors import InvalidTemplate

_BEYOND = "template uses Go template syntax beyond .System/.Prompt/.Response and if/else/end"


def _lex(template: str) -> list[tuple[bool, str]]:
    """(is_action, text) pieces, with the trim markers applied to the text around them."""
    pieces: list[tuple[bool, str]] = []
    pos, n = 0, len(template)
    while (start := template.find("{{", pos)) >= 0:
        end = template.find("}}", start + 2)
        if end < 0:
            raise InvalidTemplate("template has '{{' without a closing '}}'")
        text, body = template[pos:start], template[start + 2 : end]
        if body.startswith("-"):
            text, body = text.rstrip(), body[1:]
        pos = end + 2
        if body.endswith("-"):
            body = body[:-1]
            while pos < n and template[pos].isspace():
                pos += 1
        pieces += [(False, text), (True, body.strip())]
    pieces.append((False, template[pos:]))
    return pieces


def _field(expr: str) -> str:
    if not (expr.startswith(".") and expr[1:].isidentifier()):
        raise InvalidTemplate(_BEYOND)
    return expr[1:]


def render_go_template(template: str, **values: str) -> str:
    """Fill ``template`` with ``values`` (keys as in the template: System, Prompt, Response)."""
    out: list[str] = []
    # One frame per open ``if``: (this branch is shown, the enclosing text is shown).
    frames: list[tuple[bool, bool]] = []
    shown = True
    for is_action, text in _lex(template):
        if not is_action:
            if shown:
                out.append(text)
            continue
        word, _, rest = text.partition(" ")
        if word == "if":
            frames.append((bool(values.get(_field(rest.strip()))), shown))
            shown = shown and frames[-1][0]
        elif text == "else":
            if not frames:
                raise InvalidTemplate("template has {{ else }} outside an {{ if }}")
            taken, outer = frames[-1]
            frames[-1] = (not taken, outer)
            shown = outer and not taken
        elif text == "end":
            if not frames:
                raise InvalidTemplate("template has {{ end }} without an {{ if }}")
            shown = frames.pop()[1]
        else:
            name = _field(text)
            if name not in values:
                raise InvalidTemplate(
                    f"template uses .{name}; only .System, .Prompt, .Response exist"
                )
            if shown:
                out.append(values[name])
    if frames:
        raise InvalidTemplate("template has an {{ if }} without {{ end }}")
    return "".join(out)
