"""llama.cpp backend on the real GGUF: greedy generation and scoring from raw logits agree with hf."""

import pytest

from aloekit.config import ModelConfig, SamplingConfig

llama_cpp = pytest.importorskip("llama_cpp", reason="extra 'llamacpp' not installed (pip install 'aloekit[llamacpp]')")
pytestmark = pytest.mark.real_model


@pytest.fixture(scope="module")
def lcpp():
    from aloekit.backends import load_backend
    return load_backend(ModelConfig(backend="llamacpp"))


def test_greedy_generation_is_deterministic(lcpp):
    chat = [{"role": "user", "content": "What are the first-line treatments for hypertension?"}]
    a = lcpp.generate([chat], SamplingConfig(max_new_tokens=32))[0][0]
    b = lcpp.generate([chat], SamplingConfig(max_new_tokens=32))[0][0]
    assert a.text == b.text and len(a.text.split()) > 3 and a.completion_tokens > 0


def test_scores_match_hf_on_the_same_weights(lcpp, real_model_dir):
    """Q4_1 weights dequantize exactly, but llama.cpp quantizes activations for its dot products: log-probs
    agree to ~0.2 nats and the ranking of options is the same."""
    from aloekit.backends import load_backend
    hf = load_backend(ModelConfig(dtype="float32"))
    reqs = [("Question: Which vitamin deficiency causes scurvy?\nAnswer:", [" Vitamin C", " Vitamin D", " Iron"]),
            ("Question: What organ produces insulin?\nAnswer:", [" The pancreas", " The liver"])]
    a, b = lcpp.loglikelihood_batch(reqs), hf.loglikelihood_batch(reqs)
    for x, y in zip(a, b):
        assert x == pytest.approx(y, abs=0.3)
        assert max(range(len(x)), key=x.__getitem__) == max(range(len(y)), key=y.__getitem__)
