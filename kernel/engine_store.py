"""The engine's store methods: every caller's one road to the store. The HTTP API, the
CLI and the notebooks list, show, pull, remove, copy and convert through these, so the
engine's settings and its delete rule (unload, then remove) apply everywhere."""

from __future__ import annotations

import builtins
import logging
from collections.abc import AsyncGenerator, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from .access import current_access
from .errors import ForgeError
from .progress import Progress, ProgressCallback, ignore
from .pulls import Pulls
from .store.manifest import Manifest
from .store.policy import PullPolicy
from .store.store import Store
from .worker import bridged

if TYPE_CHECKING:
    from .backends import Backends

T = TypeVar("T")
log = logging.getLogger(__name__)


class EngineStore:
    """Mixed into ``AsyncEngine``, which supplies ``store``, ``pulls`` and ``unload``."""

    store: Store
    pulls: Pulls
    backends: Backends

    if TYPE_CHECKING:

        async def unload(self, model: str) -> bool: ...

    async def list(self) -> list[Manifest]:
        """Every model in the store the caller may use, by name."""
        access = current_access.get()
        return [m for m in self.store.list() if access.allows(m.name)]

    async def show(self, model: str) -> Manifest:
        current_access.get().require_model(model)
        return self.store.get(model)

    async def pull(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        progress: ProgressCallback = ignore,
        force: bool = False,
        policy: PullPolicy | None = None,
    ) -> Manifest:
        """Pull a catalog model, register a local file or folder, or download a URL, on the
        engine's pull threads (``progress`` is called there). Cancelling the caller stops
        the pull; ``policy`` bounds what it may reach (the HTTP API passes its own);
        ``force`` lets a derived name replace a model from another source."""
        current_access.get().require_admin("pull models")
        self.store.check_spec(spec, policy)  # refused at once, before it waits for a thread

        def work(report: ProgressCallback) -> Manifest:
            pulled = self.store.pull(
                spec, name=name, sha256=sha256, progress=report, policy=policy, force=force
            )
            return self._with_specs(pulled)

        return await self.pulls.run(f"the pull of {spec}", work, progress)

    def pull_stream(
        self,
        spec: str,
        *,
        name: str | None = None,
        sha256: str | None = None,
        force: bool = False,
        policy: PullPolicy | None = None,
    ) -> AsyncGenerator[Progress | Manifest, None]:
        """``pull`` as a stream: Progress items on this loop as they come, then the
        Manifest. Checks the spec first, so a refusal raises before the stream exists."""
        current_access.get().require_admin("pull models")
        self.store.check_spec(spec, policy)

        async def work(report: Callable[[Progress | Manifest], None]) -> None:
            report(
                await self.pull(
                    spec, name=name, sha256=sha256, progress=report, force=force, policy=policy
                )
            )

        return bridged(work)

    def _with_specs(self, manifest: Manifest) -> Manifest:
        """``manifest`` with the specs of its tensor inputs and outputs, as the backend of
        its format reads them (one with a ``signature`` method), stored. A model it cannot
        read keeps none: it may still load, and its runtime gives them then."""
        try:
            backend = self.backends.for_format(manifest.format)
        except ForgeError:
            return manifest
        signature = getattr(backend, "signature", None)
        if not callable(signature) or not backend.available():
            return manifest
        try:
            inputs, outputs = signature(manifest)
        except Exception as e:  # a model the runtime cannot read: say so, keep the pull
            log.warning("%s: no tensor specs: %s", manifest.name, str(e).splitlines()[0][:200])
            return manifest
        meta = manifest.metadata
        if (inputs, outputs) == (meta.input_shapes, meta.output_shapes):
            return manifest
        meta = meta.model_copy(update={"input_shapes": inputs, "output_shapes": outputs})
        manifest = manifest.model_copy(update={"metadata": meta})
        self.store.save(manifest)
        return manifest

    async def rm(self, model: str) -> None:
        """Unload ``model`` (once its running requests end), then remove it from the store;
        its blob goes when no other name and no other engine's loaded model uses it."""
        current_access.get().require_admin("remove models")
        name = self.store.get(model).name
        await self.unload(name)
        self.store.rm(name)

    async def cp(self, source: str, destination: str) -> Manifest:
        current_access.get().require_admin("copy models")
        return self.store.cp(source, destination)

    async def convert(
        self, model: str, to: str, *, progress: ProgressCallback = ignore, **kw: Any
    ) -> Manifest:
        """``forge convert``: ``model`` in format ``to`` as a new entry linked to it."""
        from .convert import convert

        current_access.get().require_admin("convert models")
        return await self.pulls.run(
            f"converting {model}",
            lambda report: self._with_specs(convert(self.store, model, to, report, **kw)),
            progress,
        )

    async def sweep(self) -> builtins.list[Path]:
        """Remove what crashes left in the store (see ``Store.sweep``)."""
        return await self.pulls.run("sweep", lambda _: self.store.sweep(), ignore)

    async def verify(self, progress: ProgressCallback = ignore) -> dict[str, str]:
        """Check every model's files against its manifest: {name: problem}."""
        return await self.pulls.run("check", self.store.check, progress)

    async def store_job(
        self,
        what: str,
        work: Callable[[Store, ProgressCallback], T],
        progress: ProgressCallback = ignore,
    ) -> T:
        """``work(store, report)`` on a pull thread, bounded and cancellable like a pull:
        for store work the methods above do not cover (the browser's conversions)."""
        return await self.pulls.run(what, lambda report: work(self.store, report), progress)
