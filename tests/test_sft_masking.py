"""SFT trains on the answers only, also when packing puts several conversations into one padding-free batch.

The batch is the one `aloekit train sft` feeds the model (sft.run with its TRL config: packing, best-fit
decreasing, padding-free), taken at TRL's compute_loss. Each packed conversation is found by its position ids
(they restart at 0) and compared with the chat template rendered here, independently of TRL: every prompt token
(system, user and earlier assistant turns, the generation prompt) must carry label -100 and every answer token its
own id. Guards against a TRL change that would silently train on prompts.
"""

import json

import pytest
import torch
from conftest import save_tiny_llama

from aloekit.train import sft
from aloekit.train.config import SFTConfig

IGNORE = -100


@pytest.fixture(scope="module")
def tiny_dir(tmp_path_factory, real_tokenizer):
    return save_tiny_llama(tmp_path_factory.mktemp("tiny_mask"), real_tokenizer)


def rows() -> list[dict]:
    """Conversations of different lengths (so several share a packed row), a system prompt, and multi-turn rows
    whose first answer is context for the last one and so part of the prompt."""
    out = []
    for i in range(16):
        msgs = [{"role": "user", "content": f"What is the normal range of serum sodium? (case {i})"},
                {"role": "assistant", "content": "135 to 145 mmol/L." + " Recheck if abnormal." * (i % 3)}]
        if i % 4 == 1:
            msgs = [{"role": "system", "content": "You are a careful clinical assistant."}, *msgs]
        if i % 4 == 2:
            msgs = [*msgs, {"role": "user", "content": f"And potassium? ({i})"},
                    {"role": "assistant", "content": "3.5 to 5.0 mmol/L."}]
        out.append({"messages": msgs})
    return out


def capture_batches(tiny_dir, tmp_path, monkeypatch, **overrides) -> list[dict]:
    """Run the project's SFT for two steps and keep each batch as the model receives it."""
    from trl import SFTTrainer
    seen = []
    original = SFTTrainer.compute_loss

    def spy(self, model, inputs, *args, **kwargs):
        seen.append({k: v.detach().clone() for k, v in inputs.items() if torch.is_tensor(v)})
        return original(self, model, inputs, *args, **kwargs)

    monkeypatch.setattr(SFTTrainer, "compute_loss", spy)
    data = tmp_path / "sft.jsonl"
    data.write_text("".join(json.dumps(r) + "\n" for r in rows()))
    cfg = SFTConfig.model_validate(dict(
        model=str(tiny_dir), dataset=str(data), output=str(tmp_path / "out"), method="lora", precision="fp32",
        max_length=256, save_steps=100, eval_fraction=0.0, lora={"r": 4, "alpha": 8},
        optim={"lr": 1e-3, "max_steps": 2, "batch_size": 4}))
    assert cfg.packing  # the default this test is about
    if overrides:
        make_args = sft.trl_args

        def trl_args(*a, **kw):
            args = make_args(*a, **kw)
            for k, v in overrides.items():
                setattr(args, k, v)
            return args
        monkeypatch.setattr(sft, "trl_args", trl_args)
    sft.run(cfg)
    assert seen
    return seen


def expected(tok) -> dict[tuple, int]:
    """Each conversation's token ids -> how many of them are prompt (rendered here, as the model will see it)."""
    out = {}
    for r in rows():
        prompt, answer = r["messages"][:-1], r["messages"][-1:]
        p = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=True, return_dict=False)
        full = tok.apply_chat_template(prompt + answer, tokenize=True, return_dict=False)
        assert full[:len(p)] == p
        out[tuple(full)] = len(p)
    return out


def label_errors(batches, tok) -> tuple[list[str], int, int]:
    """Every disagreement with "prompt ignored, answer trained", the packed conversations checked, and the most
    conversations found in one batch."""
    want = expected(tok)
    errors, checked, most = [], 0, 0
    for b in batches:
        ids, labels, pos = b["input_ids"], b["labels"], b["position_ids"]
        assert ids.shape[0] == 1 and ids.shape == labels.shape == pos.shape  # padding-free: one flat sequence
        ids, labels, pos = ids[0].tolist(), labels[0].tolist(), pos[0].tolist()
        starts = [i for i, p in enumerate(pos) if p == 0] + [len(ids)]
        most = max(most, len(starts) - 1)
        for s, e in zip(starts, starts[1:]):
            seg, lab = tuple(ids[s:e]), labels[s:e]
            assert seg in want, f"packed segment at {s} is not a whole conversation: {tok.decode(list(seg))!r}"
            n_prompt = want[seg]
            checked += 1
            for j, (t, y) in enumerate(zip(seg, lab)):
                if j < n_prompt and y != IGNORE:
                    errors.append(f"prompt token {tok.decode([t])!r} at {s + j} has label {y}")
                if j >= n_prompt and y != t:
                    errors.append(f"answer token {tok.decode([t])!r} at {s + j} has label {y}")
    return errors, checked, most


def test_packed_sft_batch_trains_on_answers_only(tiny_dir, tmp_path, monkeypatch, real_tokenizer):
    batches = capture_batches(tiny_dir, tmp_path, monkeypatch)
    errors, checked, most = label_errors(batches, real_tokenizer)
    assert errors == []
    # 2 steps x 4 packed rows of 256 tokens hold all 16 conversations, several to a row
    assert checked == len(rows()) and most >= 4, (checked, most)
    n_answer = sum(int((b["labels"] != IGNORE).sum()) for b in batches)
    assert 0 < n_answer < sum(b["labels"].numel() for b in batches) / 2  # answers are the short part


def test_the_check_sees_prompt_loss(tiny_dir, tmp_path, monkeypatch, real_tokenizer):
    """The same check on TRL's full-sequence loss (completion_only_loss off) reports the prompt tokens."""
    batches = capture_batches(tiny_dir, tmp_path, monkeypatch, completion_only_loss=False)
    errors, checked, _ = label_errors(batches, real_tokenizer)
    assert checked == len(rows())
    assert errors and all(e.startswith("prompt token") for e in errors)
