"""gunicorn's configuration, read from the working directory by every gunicorn started in the checkout
(the run command, the tests, production as the README starts it). Command-line options override it.

It keeps Causeway's own metrics right with several workers (governance/metrics.py): the samples of
processes that are gone are removed when gunicorn starts, and a worker that exits has its live
gauges dropped.
"""

from governance.multiproc import dead_files_remove, multiproc_dir

# Set before any worker imports prometheus_client, which reads it once, at import.
multiproc_dir()


def on_starting(server):
    dead_files_remove()


def child_exit(server, worker):
    from prometheus_client import multiprocess

    multiprocess.mark_process_dead(worker.pid)
