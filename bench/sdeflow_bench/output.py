"""The output folder of a run: checked before anything is measured, written whole or not at all.

A run writes into a hidden temporary folder beside ``--out`` and renames it to ``--out`` at the
end, so an interrupted run leaves ``--out`` as it was, and a folder never mixes the files of two
runs. An existing ``--out`` is replaced only if it is empty or holds a previous ``bench.json``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path


class OutputFolder:
    """A checked output folder; files go to :attr:`tmp` until :meth:`commit`.

    Args:
        path: the folder the results end up in.
        name: the argument's name in error messages (``"--out"``, ``"out"``).

    Raises:
        ValueError: ``path`` is a file, a non-empty folder without ``bench.json``, or its parent
            cannot be created or written.
    """

    def __init__(self, path: str | os.PathLike[str], name: str = "out") -> None:
        if not isinstance(path, (str, os.PathLike)) or str(path) == "":
            raise ValueError(f"{name}: expected a folder path, got {path!r}")
        self.name = name
        self.path = Path(path).absolute()
        p = self.path
        if p.exists() and not p.is_dir():
            raise ValueError(f"{name}: {str(path)!r} exists and is not a folder")
        if p.is_dir() and any(p.iterdir()) and not (p / "bench.json").is_file():
            raise ValueError(f"{name}: {str(path)!r} is a non-empty folder without a bench.json; "
                             "expected a new or empty folder, or a previous bench output folder "
                             "(which is replaced whole)")
        try:
            p.parent.mkdir(parents=True, exist_ok=True)
            self.tmp = Path(tempfile.mkdtemp(prefix=f".{p.name}.", suffix=".partial",
                                             dir=p.parent))
        except OSError as exc:
            raise ValueError(f"{name}: cannot write into {str(p.parent)!r} "
                             f"({exc.strerror or exc})") from None
        self.committed = False

    def commit(self) -> Path:
        """Move the finished files to :attr:`path` (replacing a previous run's folder)."""
        old = None
        if self.path.exists():
            old = Path(tempfile.mkdtemp(prefix=f".{self.path.name}.", suffix=".old",
                                        dir=self.path.parent))
            os.rmdir(old)
            self.path.rename(old)
        self.tmp.rename(self.path)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)
        self.committed = True
        return self.path

    def discard(self) -> None:
        """Remove the temporary folder (after a failure or an interruption)."""
        if not self.committed:
            shutil.rmtree(self.tmp, ignore_errors=True)
