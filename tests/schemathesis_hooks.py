"""Hooks for the schemathesis run (tests/test_api_schema.py, SCHEMATHESIS_HOOKS).

A YAML response is a stream of documents (RFC 9512: application/yaml may hold several, as the
OpenSLO export does); schemathesis reads one document only, so it is read here as the list of
its documents, which is what the export's schema describes."""

import schemathesis
import yaml
from schemathesis.core.media_types import YAML_MEDIA_TYPES


# Every YAML media type: schemathesis takes the first registered one of the family that matches.
@schemathesis.deserializer(*YAML_MEDIA_TYPES)
def yaml_stream(ctx, response):
    return list(yaml.safe_load_all(response.content.decode(response.encoding or "utf-8")))
