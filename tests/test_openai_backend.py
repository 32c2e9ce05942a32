"""The openai backend against a small OpenAI-compatible server on loopback that this test runs itself."""

import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from aloekit.backends import load_backend
from aloekit.config import ModelConfig, SamplingConfig
from aloekit.errors import UserError

pytest.importorskip("openai", reason="the openai extra is part of the dev install")


class FakeServer(BaseHTTPRequestHandler):
    """Tokens are whitespace-led words; each token's log-prob is -(its length), so sums are checkable."""

    def log_message(self, *a):
        pass

    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        n = body.get("n") or 1
        if self.path.endswith("/chat/completions"):
            last = body["messages"][-1]["content"]
            choices = [{"index": i, "finish_reason": "stop", "message": {"role": "assistant",
                        "content": f"echo {i}: {last}"}} for i in range(n)]
            resp = {"id": "x", "object": "chat.completion", "created": 0, "model": body["model"],
                    "choices": choices, "usage": {"prompt_tokens": 7, "completion_tokens": 3 * n, "total_tokens": 0}}
        else:
            prompt = body["prompt"]
            toks = [(m.start(), m.group()) for m in re.finditer(r"\s*\S+", prompt)]
            logprobs = {"tokens": [t for _, t in toks], "text_offset": [o for o, _ in toks],
                        "token_logprobs": [None] + [-float(len(t)) for _, t in toks[1:]], "top_logprobs": None}
            text = prompt if body.get("echo") else " generated"
            resp = {"id": "x", "object": "text_completion", "created": 0, "model": body["model"],
                    "choices": [{"index": 0, "text": text, "finish_reason": "length",
                                 "logprobs": logprobs if body.get("echo") else None}],
                    "usage": {"prompt_tokens": len(toks), "completion_tokens": 1, "total_tokens": 0}}
        data = json.dumps(resp).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), FakeServer)
    t = threading.Thread(target=srv.serve_forever, daemon=True)
    t.start()
    yield f"http://127.0.0.1:{srv.server_address[1]}/v1"
    srv.shutdown()


def test_generate_chat_and_raw(server):
    be = load_backend(ModelConfig(backend="openai", name="served-model", base_url=server))
    out = be.generate([[{"role": "user", "content": "hello"}], "raw prompt"], SamplingConfig(max_new_tokens=5), n=2)
    assert [c.text for c in out[0]] == ["echo 0: hello", "echo 1: hello"]
    assert out[0][0].prompt_tokens == 7 and out[0][0].completion_tokens == 3
    assert out[1][0].text == " generated"


def test_loglikelihood_counts_only_continuation_tokens(server):
    be = load_backend(ModelConfig(backend="openai", name="m", base_url=server))
    got = be.loglikelihood("Question: is it?\nAnswer:", [" yes", " not really"])
    assert got == [-4.0, -4.0 - 7.0]
    # trailing context space moves to the continuation, as lm-eval does
    assert be.loglikelihood("Answer: ", ["maybe"]) == [-6.0]


def test_unreachable_server_is_user_error():
    be = load_backend(ModelConfig(backend="openai", name="m", base_url="http://127.0.0.1:9/v1"))
    be.client = be.client.with_options(max_retries=0, timeout=5)
    with pytest.raises(UserError, match="cannot reach the server"):
        be.generate(["hi"])
