"""The search service: the page and its JSON API, a FastAPI app under uvicorn.

``server`` binds the port and runs uvicorn; ``web_app`` is the app (routes, static page,
OpenAPI at ``/docs``); ``web_api.SearchService`` is the framework-free work (a photo in,
hits out); the other modules keep the HTTP edge honest (uploads read only within their
limit, bounded concurrency answering 503, every refusal as ``{"error", "kind", "status"}``).
"""
