"""atts.serve: ATTS as a model behind an OpenAI-compatible HTTP API (``atts serve``).

- ``settings``: ``ServeSettings``, the server's limits and switches (one frozen value);
- ``errors``: ``ApiError`` and the OpenAI error body every 4xx/5xx answer carries;
- ``schemas``: request validation of both answer routes, chat and legacy completions (strict
  JSON, then the server's limits); ``stops``: the stop strings of a legacy completion;
- ``calibration``: the one online, marginal bank shared by all requests, and the per-request
  calibrator the strategies call (warm-up policy included);
- ``service``: engines, admission control, solving one conversation with n samples and a
  majority vote, and stopping what runs at shutdown;
- ``metrics``: prometheus_client counters, histograms and gauges in a registry per server;
- ``responses``: the OpenAI response and chunk shapes; ``streaming``: the SSE stream both
  routes share;
- ``app``: the FastAPI app (``create_app(service, settings)``); ``server``: uvicorn, in the
  foreground (the CLI) or on a background thread (tests, benchmarks).

Importing this package stays light: fastapi and uvicorn load only in ``app``, ``streaming``
and ``server``; prometheus_client only in ``metrics``.
"""

from atts.serve.settings import ServeSettings

__all__ = ["ServeSettings"]
