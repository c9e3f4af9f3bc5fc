"""Live chat over HTTP: the routes that start, retry and follow the engine's replies, and
their Server-Sent Events."""
