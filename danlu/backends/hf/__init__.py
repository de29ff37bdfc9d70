"""The transformers backend's parts: loading (refusals, placement, files), the causal and seq2seq
engines, and token bytes for streaming. The backend's entry point is `danlu/backends/transformers_backend.py`."""
