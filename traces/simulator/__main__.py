"""`python -m traces.simulator`: the same options as `manage.py simulate`."""

import argparse
import sys

from .run import SimulationError, add_arguments, run_from_options


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m traces.simulator",
        description="Run concurrent OpenTelemetry-instrumented agents, optionally with injected bugs.",
    )
    add_arguments(parser)
    options = vars(parser.parse_args(argv))
    try:
        summary = run_from_options(options, sys.stdout, sys.stderr)
    except (SimulationError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0 if summary.ok else 1


if __name__ == "__main__":
    sys.exit(main())
