"""The HTTP layer: the API over aiohttp (app.py, routes/), its fast path for single
enqueues (fast_path.py), the listener and connection limits, the OpenAPI document and the
dashboard. It calls the core through JobServer; nothing in the core imports it but the
composition root (server.py)."""
