"""Concurrent, OpenTelemetry-instrumented agents that can inject concurrency bugs.

A plain Python package (no Django import): `python -m traces.simulator --help`,
or the `simulate` management command, which calls `run_from_options`.
"""

from .config import BUGS, SimulationConfig
from .run import SimulationError, SimulationSummary, add_arguments, run_from_options, simulate

__all__ = [
    "BUGS",
    "SimulationConfig",
    "SimulationError",
    "SimulationSummary",
    "add_arguments",
    "run_from_options",
    "simulate",
]
