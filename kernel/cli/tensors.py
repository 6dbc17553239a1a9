"""``forge infer``: a tensor model's outputs for inputs given as ``.npy`` files, an ``.npz``
archive or JSON arrays, shown as a table, or saved, or printed as JSON."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from ..errors import UsageError
from ..humanize import table
from ..inference_wire import InferCall, encode_response
from ..notebook.infer import preview, shape
from .commands import ensure_pulled, loaded, local_engine
from .render import out


def infer(args: argparse.Namespace) -> int:
    inputs = _inputs(args.inputs, args.npz)
    outputs = [n for n in args.outputs.split(",") if n] if args.outputs else None
    with local_engine() as engine:
        model = ensure_pulled(engine, args.model)
        served = loaded(engine, model, args)
        result = engine.infer(served, inputs, outputs=outputs, keep_alive=args.keep_alive)
    tensors = result.tensors
    if args.save:
        import numpy as np

        np.savez(args.save, **tensors)
    if args.json:  # the Open Inference Protocol's own JSON answer
        body, _ = encode_response(model, tensors, InferCall({}, outputs))
        out(body.decode())
        return 0
    rows = [(name, str(a.dtype), shape(a), preview(a)) for name, a in tensors.items()]
    out(table(("OUTPUT", "DTYPE", "SHAPE", "VALUES"), rows))
    if args.save:
        out(f"saved {len(tensors)} outputs to {args.save}")
    return 0


def _inputs(pairs: list[str], npz: str | None) -> dict[str, Any]:
    """Inputs by name: an ``.npz`` archive's arrays, then each NAME=VALUE (a ``.npy`` file,
    or a JSON array whose datatype the model's specs give)."""
    import numpy as np

    found: dict[str, Any] = {}
    if npz:
        try:
            with np.load(npz, allow_pickle=False) as archive:
                found.update({k: archive[k] for k in archive.files})
        except (OSError, ValueError) as e:
            raise UsageError(f"cannot read {npz}: {e}") from None
    for pair in pairs:
        name, eq, value = pair.partition("=")
        if not (name and eq and value):
            raise UsageError(f"{pair!r} is not NAME=VALUE, e.g. images=x.npy or x='[[1, 2]]'")
        if value.lstrip().startswith("["):
            try:
                found[name] = json.loads(value)
            except ValueError as e:
                raise UsageError(f"{name}: not a JSON array: {e}") from None
            continue
        try:
            found[name] = np.load(Path(value), allow_pickle=False)
        except (OSError, ValueError) as e:
            raise UsageError(f"{name}: cannot read {value} as a .npy file: {e}") from None
    if not found:
        raise UsageError("no inputs: give NAME=FILE.npy, NAME='[...]' or --npz FILE.npz")
    return found
