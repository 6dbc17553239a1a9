"""``%forge infer``: a tensor model's outputs for inputs taken from the notebook's names.

    %forge infer cls images=x --outputs probabilities     # x: a numpy array of yours
    r = %forge infer cls images=x[:2]                     # r: the outputs, by name

    %%forge infer cls -o r
    {"images": np.stack([a, b])}

Each ``NAME=EXPR`` is one input: EXPR is a Python expression evaluated in the user's
namespace, a variable's name most often (written as in a cell: a space inside brackets or
quotes does not end it; IPython still expands ``{...}`` and ``$name`` in a line). The cell
form's body is one expression giving a dict of inputs by name (a line's ``NAME=EXPR`` are
added to it). The answer is a ``Tensors``: a dict of numpy arrays by output name, which shows
itself as a table of each output's dtype, shape and first values.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from ..errors import UsageError
from ..humanize import table

PREVIEW = 6  # values shown of each output


def split(line: str) -> list[str]:
    """``line`` cut at the spaces outside brackets and quotes, each piece as written, so
    that an EXPR is Python as in a cell: ``images=x[:, 0]``, ``x=a.astype('float64')``."""
    pieces: list[str] = []
    piece, depth, quote, escaped = "", 0, "", False
    for ch in line:
        if quote:  # inside a string: only its closing quote (not an escaped one) counts
            quote = "" if ch == quote and not escaped else quote
            escaped = ch == "\\" and not escaped
        elif ch in "'\"":
            quote = ch
        elif ch in "([{":
            depth += 1
        elif ch in ")]}":
            depth = max(depth - 1, 0)
        elif ch.isspace() and not depth:
            pieces += [piece] if piece else []
            piece = ""
            continue
        piece += ch
    if quote or depth:
        raise UsageError(f"an unclosed {quote or 'bracket'} in {line.strip()[:80]!r}")
    return [*pieces, piece] if piece else pieces


def inputs_from(names: Mapping[str, Any], pairs: Sequence[str], cell: str | None) -> dict[str, Any]:
    """The inputs by name: the cell's dict (when there is a cell), then each NAME=EXPR."""
    found: dict[str, Any] = {}
    if cell is not None and cell.strip():
        value = _evaluate(cell.strip(), names, "the cell")
        if not isinstance(value, Mapping):
            raise UsageError(
                f"the cell must be a dict of inputs by name, not a {type(value).__name__}"
            )
        found.update({str(k): v for k, v in value.items()})
    for pair in pairs:
        name, eq, expr = pair.partition("=")
        if not (name and eq and expr):
            raise UsageError(f"{pair!r} is not NAME=EXPR, e.g. images=x (see %forge help)")
        found[name] = _evaluate(expr, names, name)
    return found


def _evaluate(expr: str, names: Mapping[str, Any], what: str) -> Any:
    """``expr`` evaluated in the user's namespace; any error is one line, naming ``what``."""
    try:
        code = compile(expr, f"<%forge infer {what}>", "eval")
    except SyntaxError as e:
        raise UsageError(f"{what}: not a Python expression ({e.msg}): {expr[:80]!r}") from None
    scope = names if isinstance(names, dict) else dict(names)
    try:
        return eval(code, scope)
    except NameError as e:
        raise UsageError(f"{what}: {e}") from None
    except Exception as e:
        raise UsageError(f"{what}: {type(e).__name__}: {e}") from None


class Tensors(dict[str, Any]):
    """A tensor model's outputs by name (numpy arrays), shown as a table of their dtypes,
    shapes and first values. ``model`` and ``ms`` say what answered and how fast."""

    def __init__(self, arrays: Mapping[str, Any], model: str = "", ms: float | None = None):
        super().__init__(arrays)
        self.model, self.ms = model, ms

    def rows(self) -> list[tuple[str, str, str, str]]:
        """(name, dtype, shape, first values) of each output."""
        return [(name, str(a.dtype), shape(a), preview(a)) for name, a in self.items()]

    def caption(self) -> str:
        took = f" in {self.ms:.1f} ms" if self.ms is not None else ""
        count = f"{len(self)} output{'s' if len(self) != 1 else ''}"
        return f"{self.model}: {count}{took}" if self.model else count + took

    def _repr_pretty_(self, p: Any, cycle: bool) -> None:  # IPython's text/plain
        p.text(self.caption() + "\n" + table(("OUTPUT", "DTYPE", "SHAPE", "VALUES"), self.rows()))

    def _repr_markdown_(self) -> str:
        lines = [f"**{_escape(self.caption())}**", "", "| output | dtype | shape | values |"]
        lines.append("|---|---|---|---|")
        for row in self.rows():
            lines.append("| " + " | ".join(f"`{_escape(c)}`" for c in row) + " |")
        return "\n".join(lines)


def shape(array: Any) -> str:
    return "[" + ", ".join(str(d) for d in array.shape) + "]"


def preview(array: Any, count: int = PREVIEW) -> str:
    """The first ``count`` values, flattened: ``[0.1234, -2, …]``."""
    flat = array.reshape(-1)
    items = []
    for x in flat[:count]:
        if array.dtype.kind == "f":
            items.append(f"{float(x):.4g}")
        elif array.dtype.kind in "biu":
            items.append(str(x))
        else:
            items.append(repr(x)[:24])
    more = ", …" if flat.size > count else ""
    return "[" + ", ".join(items) + more + "]"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("`", "'")
