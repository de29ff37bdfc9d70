"""What comes back from a model, read or held to a shape: parsers and constraints of what models emit.

`formats/` renders prompts; this package is its other half. `grammar.py` describes what an output must
match (JSON, a JSON schema, a GBNF grammar, a tool call) and `guide.py` enforces it token by token while
an engine samples. Streaming parsers of think blocks and tool calls (`reasoning.py`, `tool_calls.py`)
belong here too.
"""
