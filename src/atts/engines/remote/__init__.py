"""Remote engines: models served over HTTP by vLLM, SGLang or any OpenAI-compatible server.

Tokenisation and chat templates stay on the client (``tokenizer.ClientTokenizer``), so the
ids are exact end to end; the servers see and return token ids.  ``http`` holds the one retry
policy, the typed errors and the least-loaded routing over several endpoints.  Backends are
imported by the engine registry (``atts.engines.BACKENDS``) on first use; httpx and
transformers load only when an engine is built.  Guide: docs/REMOTE.md.
"""
