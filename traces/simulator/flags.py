"""Which version each simulated agent runs, asked of Causeway's OFREP endpoint as a real agent would.

Through the OpenFeature SDK and its OFREP provider: the flag is a string flag whose value is the
version, the agent's instance (run id and agent name) is the targeting key, and the ingest key is
the Bearer token. The launcher asks for each agent before starting it, as a deployment decides the
version an agent starts with. The baseline version is the SDK's default, but a failed evaluation
fails the run: a simulation that silently ran the baseline would mislead a canary analysis.
"""

from __future__ import annotations

import time

from .config import SimulationConfig, agent_name

ATTEMPTS = 5  # a 429 or a restarting server is retried, after Retry-After (at least a second)
DOMAIN = "causeway-simulator"


class FlagEvaluationError(Exception):
    pass


def targeting_key(config: SimulationConfig, index: int) -> str:
    """The agent instance: stable for a given --run-id, so an agent keeps its version across runs."""
    return f"{config.run_id}/{agent_name(index)}"


def flag_versions(config: SimulationConfig) -> tuple[str, ...]:
    """The version OFREP gives each agent of the run, by agent index."""
    from openfeature import api
    from openfeature.contrib.provider.ofrep import OFREPProvider
    from openfeature.evaluation_context import EvaluationContext

    headers = {"Authorization": f"Bearer {config.export.key}"} if config.export.key else {}
    provider = OFREPProvider(config.ofrep_url, headers_factory=lambda: dict(headers), timeout=10.0)
    api.set_provider(provider, domain=DOMAIN)
    client = api.get_client(DOMAIN)
    try:
        return tuple(_evaluate(client, provider, config, EvaluationContext(targeting_key=targeting_key(config, i)))
                     for i in range(config.agents))
    finally:
        provider.session.close()


def _evaluate(client, provider, config: SimulationConfig, context) -> str:
    from openfeature.exception import ErrorCode

    for attempt in range(1, ATTEMPTS + 1):
        details = client.get_string_details(config.flag_key, config.service_version, context)
        if details.error_code is None:
            return details.value
        # GENERAL: rate limited, unreachable or unavailable, worth another try; a refused key or a
        # missing flag is not.
        transient = details.error_code == ErrorCode.GENERAL and details.error_message not in ("unauthorized",
                                                                                              "forbidden")
        if not transient or attempt == ATTEMPTS:
            break
        time.sleep(1.0)
        provider.retry_after = None
    raise FlagEvaluationError(
        f"OFREP at {config.ofrep_url} could not evaluate flag {config.flag_key!r} for {context.targeting_key}: "
        f"{details.error_code.value}: {details.error_message}")
