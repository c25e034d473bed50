// Loaded by ScriptFileGremlinPlugin when the server starts: exposes one traversal source per graph.
// The graphs themselves (network, ipc, trace, catalog) are declared in server.yaml.
def globals = [:]
globals << [g_network : network.traversal()]
globals << [g_ipc : ipc.traversal()]
globals << [g_trace : trace.traversal()]
globals << [g_catalog : catalog.traversal()]
globals
