"""Sends spans with the OpenTelemetry Python SDK and prints what it sent, as JSON.

usage: send_spans.py grpc|http ENDPOINT TRACES

Each trace is a SERVER span with attributes of every scalar type and an event, and a CLIENT
child. The printed list uses OTLP/JSON conventions (hex ids, OTLP kind numbers) so the test can
compare it field by field with what tracescale wrote.
"""

import json
import os
import sys

from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind


def main() -> int:
    protocol, endpoint, traces = sys.argv[1], sys.argv[2], int(sys.argv[3])
    # TLS and auth, as an application would configure them: a CA file and a bearer header.
    ca_file = os.environ.get("TRACESCALE_CA_FILE")
    token = os.environ.get("TRACESCALE_TOKEN")
    headers = {"authorization": f"Bearer {token}"} if token else None
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        if ca_file:
            import grpc

            with open(ca_file, "rb") as f:
                credentials = grpc.ssl_channel_credentials(root_certificates=f.read())
            exporter = OTLPSpanExporter(endpoint=endpoint, credentials=credentials, headers=headers)
        else:
            exporter = OTLPSpanExporter(endpoint=endpoint, insecure=True, headers=headers)
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(
            endpoint=endpoint + "/v1/traces", certificate_file=ca_file or None, headers=headers
        )

    provider = TracerProvider(resource=Resource.create({"service.name": f"interop-{protocol}"}))
    sent = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(sent))
    provider.add_span_processor(BatchSpanProcessor(exporter, max_export_batch_size=16))
    tracer = provider.get_tracer("tracescale.interop", "1.0")

    for i in range(traces):
        attributes = {"http.route": "/cart", "i": i, "ratio": 0.25, "cached": i % 2 == 0}
        with tracer.start_as_current_span("GET /cart", kind=SpanKind.SERVER, attributes=attributes) as parent:
            parent.add_event("cache miss", {"key": f"cart-{i}"})
            with tracer.start_as_current_span("SELECT carts", kind=SpanKind.CLIENT) as child:
                child.set_attribute("db.system", "postgresql")

    flushed = provider.force_flush(30_000)
    provider.shutdown()
    if not flushed:
        print("flush timed out", file=sys.stderr)
        return 1

    out = []
    for s in sent.get_finished_spans():
        out.append(
            {
                "traceId": format(s.context.trace_id, "032x"),
                "spanId": format(s.context.span_id, "016x"),
                "parentSpanId": format(s.parent.span_id, "016x") if s.parent else "",
                "name": s.name,
                "kind": s.kind.value + 1,
                "startTimeUnixNano": str(s.start_time),
                "endTimeUnixNano": str(s.end_time),
                "attributes": dict(s.attributes),
                "events": [
                    {"name": e.name, "timeUnixNano": str(e.timestamp), "attributes": dict(e.attributes)}
                    for e in s.events
                ],
                "service": s.resource.attributes["service.name"],
            }
        )
    json.dump(out, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
