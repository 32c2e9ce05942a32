"""`aloekit serve` on the real default model (SmolLM2-135M-Instruct, bf16 on the CPU) through the `openai` client:
a medical answer, streaming that matches the plain answer, concurrent requests batched without changing answers."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest
from test_serve import Recording, client, live

pytestmark = pytest.mark.real_model
NAME = "tiny"  # the served name test_serve.live gives


def test_real_model_answers_streams_and_batches(real_backend):
    rec = Recording(real_backend)
    with live(rec, default_max_tokens=48) as (url, engine):
        c = client(url)
        q = [{"role": "user", "content": "What are common symptoms of type 2 diabetes?"}]
        r = c.chat.completions.create(model=NAME, messages=q)
        text = r.choices[0].message.content
        assert len(text.split()) >= 10 and r.usage.completion_tokens <= 48
        assert rec.chats[-1][0]["content"].startswith("You are a careful medical assistant")
        pieces = [ch.choices[0].delta.content for ch in c.chat.completions.create(model=NAME, messages=q, stream=True)
                  if ch.choices and ch.choices[0].delta.content]
        assert len(pieces) > 5 and "".join(pieces).strip() == text

        questions = ["How is asthma diagnosed?", "What causes iron-deficiency anaemia?", "What is sepsis?",
                     "How do vaccines work?"]

        def ask(question):
            return c.chat.completions.create(model=NAME, max_tokens=24, messages=[
                {"role": "user", "content": question}]).choices[0].message.content
        alone = [ask(x) for x in questions]
        rec.calls.clear()
        with ThreadPoolExecutor(4) as pool:
            together = list(pool.map(ask, questions))
        assert max(rec.calls) > 1
        # greedy answers do not depend on the batch (bf16 rounding can flip a late near-tie: compare the openings)
        assert [a[:40] for a in together] == [a[:40] for a in alone]
