"""`danlu bench [MODEL]`: how fast a model runs on this machine, through the engine `danlu serve` uses.

`run.py` measures (prefill and decode tokens/s, time to first token, alone and with several concurrent
streams); `cli.py` is the command danlu/cli/commands.py registers. The project's own comparisons with llama.cpp live
in the repository's bench/ folder, not here.
"""
