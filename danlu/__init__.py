"""danlu (丹炉): a local workbench for open-source Chinese LLMs.

fit → pull → run → chat → compare → evaluate → fine-tune → serve, on a consumer GPU or a CPU.
"""

__version__ = "0.1.0"

from danlu.threads import apply_wait_policy as _apply_wait_policy

_apply_wait_policy()  # before any llama.cpp import: libgomp reads it once, when it loads
