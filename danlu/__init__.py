"""danlu (丹炉): a local workbench for open-source Chinese LLMs.

fit → pull → run → chat → compare → evaluate → fine-tune → serve, on a consumer GPU or a CPU.
"""

__version__ = "0.1.0"
