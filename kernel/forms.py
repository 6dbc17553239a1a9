"""One model name on every backend: the form of a model that a backend reads.

A model is stored in one format (minilm:l6 is safetensors); ``forge convert`` makes forms of
it in others (minilm:l6-onnx), store entries linked to their source by ``parent``. A model,
its source and every form made from either are its family. ``readable_form`` picks the
family member a backend reads, or converts one on demand (the new entry stays in the
store), so callers name the model and the backend, never a form.
"""

from __future__ import annotations

from collections.abc import Collection

from . import convert
from .backends import Backends
from .errors import MissingExtra, ModelNotFound, UnsupportedFormat
from .progress import Progress, ProgressCallback, ignore
from .store.locks import pull_lock
from .store.manifest import Manifest
from .store.store import Store


def readable_form(
    store: Store,
    backends: Backends,
    manifest: Manifest,
    backend: str,
    progress: ProgressCallback = ignore,
) -> Manifest:
    """The manifest ``backend`` reads for ``manifest``: the model itself when the backend
    reads its format; else a stored form of it, in the backend's own format first
    (minilm:l6-tvm for tvm); else one converted now. Raises ``UnsupportedFormat`` naming
    what would make one, and ``MissingExtra`` when the conversion needs an extra."""
    reads = backends.get(backend).formats
    found = form_in(store, manifest, reads, f"the {backend} backend", backend, progress)
    if found is not None:
        return found
    readers = [b.name for b in backends if manifest.format in b.formats]
    other = f", or run it with --backend {readers[0]}" if readers else ""
    raise UnsupportedFormat(
        f"backend {backend} does not read {manifest.format} models (it reads: "
        f"{', '.join(sorted(reads))}) and no conversion makes one from {manifest.name}: "
        f"pull a form in one of those formats with `forge pull`{other}"
    )


def form_in(
    store: Store,
    manifest: Manifest,
    formats: Collection[str],
    reader: str,
    prefer: str | None = None,
    progress: ProgressCallback = ignore,
) -> Manifest | None:
    """The member of ``manifest``'s family in one of ``formats`` (``prefer`` first), made
    with ``forge convert`` when none is stored; None when no conversion can make one.
    ``reader`` says who needs it ("the onnx backend"), for the messages."""
    if manifest.format in formats:
        return manifest
    members = family(store, manifest)
    stored = [m for m in members if m.format in formats]
    if stored:
        return min(stored, key=lambda m: m.format != prefer)  # min keeps the first of ties
    targets = sorted((t for t in convert.TARGETS if t in formats), key=lambda t: t != prefer)
    for target in targets:
        source = next((m for m in members if m.format in convert.SOURCES[target]), None)
        if source is not None:
            return _convert(store, source, target, reader, progress)
    return None


def family(store: Store, manifest: Manifest) -> list[Manifest]:
    """``manifest``'s source (its ``parent``, while stored), then every form made from it,
    nearest first. A form whose source was removed heads its own family."""
    root, seen = manifest, {manifest.name}
    while root.parent and root.parent not in seen:
        try:
            root = store.get(root.parent)
        except ModelNotFound:
            break
        seen.add(root.name)
    children: dict[str, list[Manifest]] = {}
    for m in store.list():
        if m.parent:
            children.setdefault(m.parent, []).append(m)
    members, names = [root], {root.name}
    for member in members:  # breadth first: it grows as it goes
        for child in children.get(member.name, []):
            if child.name not in names:
                names.add(child.name)
                members.append(child)
    return members


def _convert(
    store: Store, source: Manifest, target: str, reader: str, progress: ProgressCallback
) -> Manifest:
    # One conversion of a source at a time, across threads and processes (a server and a
    # CLI on one home): the second waits, then finds the first one's entry.
    with pull_lock(store.locks, f"forge convert {source.name} --to {target}", progress):
        made = [m for m in store.derived(source.name) if m.format == target]
        if made:
            return made[0]
        progress(Progress(f"converting {source.name} to {target} for {reader}"))
        try:
            return convert.convert(store, source.name, target, progress)
        except MissingExtra as e:
            what = e.module.partition(" (")[0]  # "torch (for the ONNX export)" -> "torch"
            why = f"{what} (to convert {source.name} to {target} for {reader})"
            raise MissingExtra(why, e.extra) from e
