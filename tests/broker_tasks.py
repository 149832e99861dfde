"""A task that leaves a trace on disk, for the embedded broker's test (imported by the worker with --include)."""

from celery import shared_task


@shared_task(name="tests.record")
def record(path: str, label: str) -> None:
    # One short O_APPEND write per task: lines from the prefork children never interleave.
    with open(path, "a") as out:
        out.write(label + "\n")
