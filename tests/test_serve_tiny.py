"""The server on a real model: SmolLM2-135M as both draft and target, through the openai
client, with small settings so it stays short on two shared cores (how long is not asserted:
the machine's load decides it)."""

from __future__ import annotations

import openai

from atts.serve.service import AttsService
from atts.serve.settings import ServeSettings, server_config
from test_serve_helpers import running, settled

MESSAGES = [
    {"role": "system", "content": "Solve step by step; put the final answer in \\boxed{}."},
    {"role": "user", "content": "What is 2 + 3?"},
]


def test_tiny_model_serves_a_completion_and_a_stream(tiny_model, tmp_path):
    cfg = server_config(dict(
        engine="llama_cpp", draft=str(tiny_model), target=str(tiny_model), n_ctx=512,
        draft_threads=1, target_threads=1, draft_tokens=16, target_tokens=16, rounds=2,
        alpha=0.25, max_active_samples=2, draft_concurrency=2, target_concurrency=2,
    ))
    settings = ServeSettings(bank_path=str(tmp_path / "bank.json"), request_timeout=60)
    svc = AttsService.build(cfg, settings)
    assert svc.model_id == "atts:smollm2-135m+smollm2-135m"
    with running(svc) as server:
        api = openai.OpenAI(base_url=server.url + "/v1", api_key="x", max_retries=0,
                            timeout=60)
        reply = api.chat.completions.create(
            model=svc.model_id, messages=MESSAGES, n=2, seed=0,
            extra_body={"atts": {"trace": True}},
        )
        assert len(reply.choices) == 2
        assert all(c.message.content for c in reply.choices)
        assert reply.usage.prompt_tokens > 10 and reply.usage.completion_tokens > 0
        samples = reply.model_extra["atts"]["samples"]
        assert all(s["status"] == "ok" for s in samples)
        drafts = [st for s in samples for st in s["steps"] if st["author"] == "draft"]
        assert drafts and all(st["score"] > 0 for st in drafts)  # target perplexities
        stream = api.chat.completions.create(model="atts", messages=MESSAGES, stream=True,
                                             seed=1)
        text = "".join(c.choices[0].delta.content or "" for c in stream if c.choices)
        assert text
    assert settled(svc)
    assert (tmp_path / "bank.json").exists()  # saved at shutdown
