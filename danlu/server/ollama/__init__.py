"""Ollama's wire protocol on the same port as /v1: request models (protocol.py), NDJSON and JSON answers
(views.py), thin routes (routes.py) for /api/chat, /api/generate, /api/tags, /api/show, /api/ps, /api/version,
/api/embed, /api/embeddings, /api/pull and /api/delete, with Ollama's `{"error": "…"}` errors. Generation goes
through the same service as the OpenAI routes."""
