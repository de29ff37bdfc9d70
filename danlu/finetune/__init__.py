"""Fine-tuning: LoRA supervised training on dialogue files, adapters by name, export to GGUF.

    data.py        dialogue files (OpenAI messages, ShareGPT, Alpaca) → token ids with an assistant-only loss mask
    base.py        the base as a transformers folder (a GGUF is dequantized once and cached) and its prompt format
    train.py       the peft LoRA loop: held-out loss before/after, progress with loss and tokens/s, CPU or CUDA/QLoRA
    checkpoint.py  atomic checkpoints so a killed run resumes
    adapters.py    $DANLU_HOME/adapters: list, describe, served model ids (`BASE+NAME`)
    export.py      merge an adapter and convert with llama.cpp's own convert_hf_to_gguf.py, then quantize
    cli.py         the typer functions behind `danlu finetune`, `danlu adapters`, `danlu export`
"""
