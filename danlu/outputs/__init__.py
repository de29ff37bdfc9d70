"""What comes back from a model, read or held to a shape: the other half of `formats/`, which renders prompts.

Each parser is a small streaming state machine fed text pieces, so the server can send reasoning, content and
tool-call deltas as they arrive: `reasoning.py` splits thinking from the answer, `tool_calls.py` (with
`hermes_calls.py`, `glm_calls.py`) reads tool calls. `grammar.py` describes what an output must match (JSON, a JSON
schema, a GBNF grammar, a tool call) and `guide.py` enforces it token by token while an engine samples.
"""
