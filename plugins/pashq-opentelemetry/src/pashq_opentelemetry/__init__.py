"""pashq-opentelemetry: OpenTelemetry spans and metrics for pashq messages.

Enable it per connection, on producers and workers alike::

    [queues.default]
    type = "database"
    plugins = ["opentelemetry"]

Each dispatch gets a producer span whose W3C trace context travels in the envelope
headers; each delivery a worker handles gets a ``process`` span in the same trace, with
the attempt number and the outcome. It depends on ``opentelemetry-api`` only: install and
configure the SDK (and an exporter) in the application. See ``docs/observability.md``.
"""

from __future__ import annotations

from pashq_opentelemetry.instruments import PROCESS_BUCKETS
from pashq_opentelemetry.plugin import OpenTelemetryPlugin
from pashq_opentelemetry.semconv import messaging_system

__all__ = ["PROCESS_BUCKETS", "OpenTelemetryPlugin", "__version__", "messaging_system"]

__version__ = "0.1.0"
