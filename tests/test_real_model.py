"""The protocol on the real default model (SmolLM2-135M-Instruct, converted from the packaged GGUF)."""

import json

import pytest
import torch

from aloekit.config import ModelConfig, SamplingConfig

pytestmark = pytest.mark.real_model

QUESTIONS = [
    "What are the first-line treatments for hypertension?",
    "What is the normal range of fasting blood glucose?",
    "Name two common side effects of metformin.",
    "What does an ECG measure?",
    "How is iron-deficiency anaemia usually treated?",
    "What is the most common cause of community-acquired pneumonia?",
    "Why are vaccines given?",
    "What is a normal adult resting heart rate?",
    "What does the pancreas do?",
]


def chats():
    return [[{"role": "user", "content": q}] for q in QUESTIONS]


def test_converted_folder_is_a_plain_hf_model(real_model_dir):
    cfg = json.loads((real_model_dir / "config.json").read_text())
    assert cfg["model_type"] == "llama" and cfg["num_hidden_layers"] == 30 and cfg["vocab_size"] == 49152
    assert (real_model_dir / "model.safetensors").is_file()
    stamp = json.loads((real_model_dir / "aloekit_source.json").read_text())
    assert stamp["gguf"].endswith("SmolLM2-135M-Instruct.Q4_1.gguf") and len(stamp["sha256"]) == 64


def test_real_model_answers_medical_question(real_backend):
    out = real_backend.generate(chats()[:1], SamplingConfig(max_new_tokens=48))[0][0]
    assert real_backend.dtype == torch.bfloat16
    assert len(out.text.split()) > 5
    assert "blood pressure" in out.text.lower() or "hypertension" in out.text.lower()


def test_real_greedy_deterministic_and_batch_1_equals_8(real_backend):
    s = SamplingConfig(max_new_tokens=24)
    b8 = real_backend.generate(chats(), s)
    again = real_backend.generate(chats(), s)
    old = real_backend.cfg.batch_size
    try:
        real_backend.cfg.batch_size = 1
        b1 = real_backend.generate(chats(), s)
    finally:
        real_backend.cfg.batch_size = old
    t8, t1 = [o[0].text for o in b8], [o[0].text for o in b1]
    assert t8 == [o[0].text for o in again]
    assert t8 == t1


def test_real_chat_template_is_the_models_own(real_backend):
    chat = [{"role": "user", "content": "Hi"}]
    text = real_backend.render(chat)
    # SmolLM2 inserts its own default system prompt when none is given
    assert text == ("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face"
                    "<|im_end|>\n<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n")


def test_real_loglikelihood_equals_transformers_fp32(real_model_dir):
    from transformers import AutoModelForCausalLM

    from aloekit.backends import load_backend
    be = load_backend(ModelConfig(dtype="float32", batch_size=4))
    ref = AutoModelForCausalLM.from_pretrained(real_model_dir, dtype=torch.float32).eval()
    reqs = [("Question: Which vitamin deficiency causes scurvy?\nAnswer:", [" Vitamin C", " Vitamin D",
                                                                           " Vitamin B12 and folate"]),
            ("Question: Is aspirin an anticoagulant?\nAnswer:", [" yes", " no", " maybe"])]
    got = be.loglikelihood_batch(reqs)
    for (ctx, conts), scores in zip(reqs, got):
        for c, v in zip(conts, scores):
            ci, co = be.encode_pair(ctx, c)
            with torch.no_grad():
                lp = torch.log_softmax(ref(torch.tensor([ci + co])).logits.float(), -1)[0]
            want = sum(lp[len(ci) - 1 + j, t].item() for j, t in enumerate(co))
            assert v == pytest.approx(want, abs=1e-4)
    assert got[0][0] > got[0][1]  # the model knows scurvy is vitamin C
