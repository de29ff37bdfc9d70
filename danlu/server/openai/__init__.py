"""The OpenAI wire protocol: request models (protocol.py), response and stream shapes (views.py), thin routes
(routes.py) for /v1/chat/completions, /v1/completions, /v1/models. Everything after the protocol is shared with
the Ollama routes through server/service.py."""
