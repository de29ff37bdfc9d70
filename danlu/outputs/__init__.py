"""Parsing what a model writes back: thinking (reasoning.py), tool calls (tool_calls.py) and the JSON grammar that
constrains sampling (grammar.py). Each parser is a small streaming state machine fed text pieces, so the server can
send reasoning, content and tool-call deltas as they arrive; formats/ renders prompts, this package reads replies.
"""
