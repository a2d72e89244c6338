"""moectl_client: lets an engine other than moe-engine feed moectld.

Start with ``Publisher`` (publisher.py); the wire format is in wire.py and
docs/telemetry.md, the integration guide in docs/integrations.md.
"""

from .publisher import (Command, CommandRefused, CurveKeys, EngineInfo, LayerStats,
                        LayerTiming, Publisher, PublisherOptions, generate_curve_keys)
from .wire import SCHEMA_VERSION, WireError, decode, encode

__all__ = [
    "Command", "CommandRefused", "CurveKeys", "EngineInfo", "LayerStats", "LayerTiming",
    "Publisher", "PublisherOptions", "SCHEMA_VERSION", "WireError", "decode", "encode",
    "generate_curve_keys",
]
