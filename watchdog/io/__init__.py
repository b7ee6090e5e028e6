"""The thin edges that do I/O: HTTP to OpenCode, SSE, REST reads, probes, delivery, the endpoint."""
