"""The three EVA2.0 catalog entries: runnable, the reference decoding in the schema, sizes and sources, and
`danlu fit` estimating them as encoder–decoders."""

from __future__ import annotations

import pytest

from danlu import catalog
from danlu.catalog.schema import GenerationDefaults
from danlu.fit.estimate import encoder_decoder_kv_bytes
from danlu.fit.plan import plan_model
from danlu.fit.shape import shape_from_spec
from danlu.hardware import GiB, Hardware, with_budget
from danlu.loader import availability, default_params

EVA = ("eva2-base", "eva2-large", "eva2-xlarge")
#: pytorch_model.bin as the Hub's file lists give it (fp16), and the model card's shapes.
HUB = {"eva2-base": (602e6, 12, 768, 3072), "eva2-large": (2.12e9, 24, 1024, 4096), "eva2-xlarge": (6.11e9, 24, 2048, 5120)}


def machine(vram_gb: float = 0, ram_gb: float = 16) -> Hardware:
    return with_budget(Hardware(cpu_cores=4, ram_total_bytes=GiB, ram_available_bytes=GiB), vram_gb, ram_gb)


@pytest.mark.parametrize("model_id", EVA)
def test_eva2_is_runnable_with_the_reference_decoding(model_id):
    spec = catalog.get(model_id)
    assert spec.unsupported is None and availability(spec).code == "not_downloaded"
    g = spec.generation
    assert (g.temperature, g.top_p, g.top_k, g.num_beams, g.length_penalty, g.repetition_penalty) == (0.9, 0.9, 0, 4, 1.6, 1.6)
    params = default_params(spec)
    assert (params.num_beams, params.length_penalty) == (4, 1.6)
    assert spec.prompt_format == "eva2" and spec.stop_strings == ["<sep>"] and spec.context_length == 512


@pytest.mark.parametrize("model_id", EVA)
def test_eva2_sizes_and_sources_come_from_the_hub_repositories(model_id):
    spec = catalog.get(model_id)
    variant = spec.variant()
    weights, layers, width, _ = HUB[model_id]
    assert variant.format == "pytorch" and variant.bits_per_weight == 16 and not variant.size_estimated
    assert weights < variant.size_bytes < weights + 1e6  # + vocab.txt and config.json
    assert {(s.kind, s.repo) for s in variant.sources} == {("hf", f"thu-coai/EVA2.0-{model_id[5:]}"),
                                                           ("modelscope", f"thu-coai/EVA2.0-{model_id[5:]}")}
    assert (spec.shape.n_layers, spec.shape.n_embd, spec.shape.head_dim) == (layers, width, 64)


def test_the_schema_defaults_mean_no_beams():
    assert (GenerationDefaults().num_beams, GenerationDefaults().length_penalty) == (1, 1.0)
    with pytest.raises(ValueError):
        GenerationDefaults(num_beams=0)


@pytest.mark.parametrize("model_id", EVA)
def test_the_feed_forward_width_is_recovered_for_an_encoder_decoder(model_id):
    _, _, _, d_ff = HUB[model_id]
    assert abs(shape_from_spec(catalog.get(model_id)).n_ff - d_ff) / d_ff < 0.03


def test_fit_counts_fp32_weights_on_the_cpu_and_the_decoder_caches_of_every_beam():
    spec = catalog.get("eva2-base")
    result = plan_model(spec, spec.variant(), machine(ram_gb=16), 4096)
    assert result.verdict == "cpu" and result.n_ctx == 512
    host = result.estimate.host
    assert host.weights == 2 * spec.variant().size_bytes  # the fp16 file is loaded as fp32 on a CPU
    # 12 decoder layers × (K + V of 768) × (128 reply tokens × 4 beams + 512 encoder tokens for cross-attention) × 4 B
    assert host.kv_cache == 12 * 2 * 768 * (128 * 4 + 512) * 4
    assert encoder_decoder_kv_bytes(shape_from_spec(spec), 512, 128, 1, 4) < host.kv_cache


def test_fit_puts_eva2_xlarge_on_a_12_gb_card_in_half_precision():
    spec = catalog.get("eva2-xlarge")
    on_gpu = plan_model(spec, spec.variant(), machine(vram_gb=12, ram_gb=16), 512)
    assert on_gpu.verdict == "gpu" and on_gpu.estimate.gpu.weights == spec.variant().size_bytes
    too_small = plan_model(spec, spec.variant(), machine(vram_gb=4, ram_gb=8), 512)
    assert too_small.verdict == "no-fit" and "GiB" in too_small.reason
