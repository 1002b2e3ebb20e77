"""The asyncio sidecar that ``superserve serve`` runs: the KServe v2 HTTP and gRPC front ends, the engine that
drives the core's life cycle with futures and timers, the worker pool, the Triton workers (gRPC, HTTP, Ray) and the
processes, limits, auth and metrics around them."""
