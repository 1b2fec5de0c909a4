"""The OpenTelemetry SDK for a test: global providers that keep spans and metrics in memory.

The API lets a process set its global providers once; tests set them for a block and put the
globals back as they were before any was set (as ``opentelemetry-test-utils``' ``reset_*_globals``
do), so every test — and the runnable example of docs/observability.md — starts from no provider.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import attrs
from opentelemetry import metrics, trace
from opentelemetry.metrics import _internal as metrics_internal
from opentelemetry.sdk.metrics import MeterProvider
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once


def reset_globals() -> None:
    """No global tracer or meter provider, as in a fresh process."""
    trace._TRACER_PROVIDER_SET_ONCE = Once()
    trace._TRACER_PROVIDER = None
    trace._PROXY_TRACER_PROVIDER = trace.ProxyTracerProvider()
    metrics_internal._METER_PROVIDER_SET_ONCE = Once()
    metrics_internal._METER_PROVIDER = None
    metrics_internal._PROXY_METER_PROVIDER = metrics_internal._ProxyMeterProvider()


@attrs.define
class Captured:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader

    def spans(self, name: str | None = None) -> list[ReadableSpan]:
        """Finished spans, in the order they ended (only ``name``'s when given)."""
        return [s for s in self.exporter.get_finished_spans() if name is None or s.name == name]

    def points(self, metric: str, **attributes: Any) -> list[Any]:
        """The data points of ``metric`` whose attributes include ``attributes``."""
        data = self.reader.get_metrics_data()
        found = []
        for resource in data.resource_metrics if data is not None else ():
            for scope in resource.scope_metrics:
                for m in scope.metrics:
                    if m.name == metric:
                        found += [p for p in m.data.data_points if _has(p.attributes, attributes)]
        return found

    def count(self, metric: str, **attributes: Any) -> float:
        """A counter's total over the points that match (0 when none)."""
        return sum(p.value for p in self.points(metric, **attributes))


def _has(found: Mapping[str, Any] | None, wanted: Mapping[str, Any]) -> bool:
    return all((found or {}).get(key) == value for key, value in wanted.items())


@contextmanager
def captured(*, tracing: bool = True) -> Iterator[Captured]:
    """SDK tracer and meter providers as the globals for the block, exporting to memory (no tracer
    provider at all with ``tracing=False``)."""
    reset_globals()
    exporter = InMemorySpanExporter()
    tracer_provider = TracerProvider()
    tracer_provider.add_span_processor(SimpleSpanProcessor(exporter))
    reader = InMemoryMetricReader()
    meter_provider = MeterProvider(metric_readers=[reader])
    if tracing:
        trace.set_tracer_provider(tracer_provider)
    metrics.set_meter_provider(meter_provider)
    try:
        yield Captured(exporter, reader)
    finally:
        tracer_provider.shutdown()
        meter_provider.shutdown()
        reset_globals()
