"""atts.serve: ATTS as a model behind an OpenAI-compatible HTTP API (``atts serve``).

- ``settings``: ``ServeSettings``, the server's limits and switches (one frozen value);
- ``errors``: ``ApiError`` and the OpenAI error body every 4xx/5xx answer carries;
- ``schemas``: request validation (strict JSON, then the server's limits);
- ``calibration``: the one online, marginal bank shared by all requests, and the per-request
  calibrator the strategies call (warm-up policy included);
- ``service``: engines, admission control, and solving one conversation with n samples and a
  majority vote;
- ``metrics``: counters and histograms in the Prometheus text format;
- ``app``: the FastAPI app (``create_app(service, settings)``); ``server``: uvicorn, in the
  foreground (the CLI) or on a background thread (tests, benchmarks).

Importing this package stays light: fastapi and uvicorn load only in ``app`` and ``server``.
"""

from atts.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
