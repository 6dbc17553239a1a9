"""Bounded meta_schedule tuning for ``forge convert --to tvm --tune N``, with progress.

The builder runs one process with a long timeout (DESIGN.md §6: the defaults fail here);
each measured trial is reported through the progress callback.
"""

from __future__ import annotations

import inspect
import logging
import sys
from pathlib import Path
from typing import Any

from ..progress import Progress, ProgressCallback


def import_tensor_intrin() -> None:
    """Import TVM's tensor intrinsics in ~7 s instead of ~70.

    Each of their ~500 TVMScript functions calls ``inspect.stack()``, which reads source
    for every frame and scans ``sys.modules`` each time. The parser only needs the frames,
    so a frame-only stack is swapped in for this import. Tuning needs the import in this
    process and in every builder process (as their initializer).
    """
    if "tvm.s_tir.tensor_intrin" in sys.modules:
        return

    def frames_only(context: int = 1) -> list[inspect.FrameInfo]:
        frame, found = sys._getframe(1), []
        while frame is not None:
            code = frame.f_code
            found.append(
                inspect.FrameInfo(frame, code.co_filename, frame.f_lineno, code.co_name, None, None)
            )
            frame = frame.f_back  # type: ignore[assignment]
        return found

    real, inspect.stack = inspect.stack, frames_only
    try:
        import tvm.s_tir.tensor_intrin  # noqa: F401
    finally:
        inspect.stack = real


def tune(
    mod: Any, target: Any, trials: int, work: Path, label: str, progress: ProgressCallback
) -> Any:
    """Tune ``mod``'s kernels with ``trials`` measurements in all; returns the database."""
    from tvm.ir.utils import derived_object
    from tvm.s_tir import meta_schedule as ms
    from tvm.s_tir.meta_schedule.builder import PyBuilder

    import_tensor_intrin()
    quiet = logging.getLogger("tvm.s_tir.meta_schedule")
    if quiet.level == logging.NOTSET:  # its console handler takes this level; logs go to work/
        quiet.setLevel(logging.WARNING)
    tasks = ms.relax_integration.extract_tasks(mod, target)
    per_task = max(1, -(-trials // max(len(tasks), 1)))
    local = ms.builder.LocalBuilder(
        timeout_sec=180, max_workers=1, initializer=import_tensor_intrin
    )
    done = [0]

    @derived_object
    class Counting(PyBuilder):  # type: ignore[misc]
        """The local builder, reporting each batch: measurements follow builds closely."""

        def build(self, inputs: Any) -> Any:
            results = local.build(inputs)
            done[0] += len(inputs)
            progress(Progress(f"tuning {label}", trials, min(done[0], trials), unit="trial"))
            return results

    progress(Progress(f"tuning {label}", trials, 0, unit="trial"))
    contexts, weights = ms.relax_integration.extracted_tasks_to_tune_contexts(
        extracted_tasks=tasks, work_dir=str(work), strategy="replay-trace"
    )
    return ms.tune.tune_tasks(
        tasks=contexts,
        task_weights=weights,
        work_dir=str(work),
        max_trials_global=trials,
        max_trials_per_task=per_task,
        num_trials_per_iter=min(per_task, 8),
        builder=Counting(),
        runner=ms.runner.LocalRunner(),
        cost_model="random",  # xgboost is not a dependency
    )
