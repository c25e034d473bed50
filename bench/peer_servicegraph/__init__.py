"""Our server beside the OpenTelemetry Collector's servicegraph connector (issue 12); run
``python -m bench.peer_servicegraph --help``."""
