"""Where the processes of one host keep their Prometheus samples, and clearing out those of dead
processes. No prometheus_client or Django import: the supervisor (governance/stack.py) and
gunicorn's master (gunicorn.conf.py) run this before anything reads the directory's variable.

prometheus_client chooses its multiprocess mode when it is first imported, from
PROMETHEUS_MULTIPROC_DIR; so this sets the variable, and every process started from here inherits it.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
_FILE_PID = re.compile(r"_(\d+)\.db$")


def multiproc_dir() -> Path:
    """PROMETHEUS_MULTIPROC_DIR, by default DATA_DIR/prometheus; created, and set in the environment."""
    data_dir = Path(os.environ.get("CAUSEWAY_DATA_DIR") or ROOT / "data")
    directory = Path(os.environ.get("PROMETHEUS_MULTIPROC_DIR") or data_dir / "prometheus")
    directory.mkdir(parents=True, exist_ok=True)
    os.environ["PROMETHEUS_MULTIPROC_DIR"] = str(directory)
    return directory


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def dead_files_remove(directory: Path | None = None) -> int:
    """Remove the sample files of processes that are gone; returns how many. Files of live processes
    stay, so the supervisor and gunicorn may both call this at start, beside running Celery processes."""
    directory = directory or multiproc_dir()
    removed = 0
    for path in directory.glob("*.db"):
        found = _FILE_PID.search(path.name)
        if found and not _alive(int(found.group(1))):
            path.unlink(missing_ok=True)
            removed += 1
    return removed
