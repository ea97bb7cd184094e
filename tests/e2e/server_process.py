"""A real ``nnserve serve`` process on 127.0.0.1 for a test (the same launcher ``nnserve bench`` uses)."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from service.hosting.launcher import serve_subprocess


@contextmanager
def nnserve_process(repository: Path, *args: str) -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    with serve_subprocess(repository, args) as (url, process, _):
        yield url, process
