-- pgflow schema, version 6: the trace context current when a run was started (the W3C traceparent
-- and tracestate, as a json object; NULL when nothing traced the start), so the steps a worker runs
-- later are traced in the trace of the request that started the run (pgflow.telemetry).

ALTER TABLE {schema}.runs ADD COLUMN trace_context jsonb;
