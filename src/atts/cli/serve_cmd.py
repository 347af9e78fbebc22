"""`atts serve`: ATTS as a model behind an OpenAI-compatible HTTP API (docs/SERVE.md).

The server's ATTS defaults are ``RunConfig`` keys (flags below, ``--recipe``, ``--set``); a
request may override alpha, rounds and step tokens within the limits set here.  The shared
calibration bank is loaded from ``--bank`` when it exists and saved there as it grows.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import TYPE_CHECKING

from atts.cli.run_cmd import config_values

if TYPE_CHECKING:
    from atts.config import RunConfig
    from atts.serve.settings import ServeSettings

LOOPBACK = ("127.0.0.1", "localhost", "::1")
CONFIG_FLAGS = {
    "engine": "llama_cpp (default) | transformers | vllm | sglang | fake",
    "draft": "draft model: a name from `atts models list` or a GGUF path",
    "target": "target model (must share the draft's tokenizer)",
    "alpha": "default alpha: reject a draft step iff its p-value <= alpha",
    "alpha_discard": "default: regenerate instead of continue iff p <= alpha_discard (unset: "
                     "equal to alpha, every rejection regenerated)",
    "rounds": "default T: most rounds per sample",
    "draft_tokens": "default K_d: most tokens per draft step",
    "target_tokens": "default K_t: most tokens per target step",
    "temperature": "default sampling temperature",
    "top_p": "default nucleus sampling top_p",
    "force_answer": "who completes a forced answer: auto | target | draft | none",
    "n_ctx": "tokens per llama.cpp context",
    "draft_url": "engine vllm or sglang: the draft servers' base URLs, comma-separated "
                 "(docs/REMOTE.md)",
    "target_url": "engine vllm or sglang: the target server's base URL",
    "draft_tokenizer": "engine vllm or sglang: the draft's tokenizer folder (default: asked "
                       "of the server)",
    "target_tokenizer": "engine vllm or sglang: the target's tokenizer folder",
    "remote_timeout": "engine vllm or sglang: seconds one request may take",
    "cores": "compute budget: cores both engines share (default: every core)",
    "draft_threads": "override: llama.cpp threads of one draft worker outside the pool",
    "target_threads": "override: llama.cpp threads of one target worker outside the pool",
    "draft_concurrency": "draft calls in flight at once",
    "target_concurrency": "target calls in flight at once",
    "max_active_samples": "samples running at once, over all requests",
    "max_retries": "retries of a failed engine call",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "serve", help="serve ATTS as an OpenAI-compatible model (chat and legacy completions)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--host", default="127.0.0.1",
                        help="address to bind (default 127.0.0.1: this machine only)")
    parser.add_argument("--port", type=port_number, default=8000,
                        help="port, 1-65535 (default 8000; 0: any free port)")
    parser.add_argument("--api-key", default=os.environ.get("ATTS_API_KEY"),
                        help="require 'Authorization: Bearer KEY' (default: $ATTS_API_KEY)")
    parser.add_argument("--served-model-name", metavar="NAME",
                        help="the model id in /v1/models and in requests (default: "
                        "atts:<draft>+<target>; the alias 'atts' is accepted either way)")
    parser.add_argument("--bank", metavar="FILE",
                        help="calibration bank file: loaded at start, saved as it grows")
    parser.add_argument("--force-bank", action="store_true",
                        help="load --bank even if its fingerprint does not match")
    parser.add_argument("--bank-save-every", type=int, default=20, metavar="K",
                        help="save the bank every K new scores (and at shutdown)")
    parser.add_argument("--bank-max", type=int, default=100_000,
                        help="stop growing the bank past this many scores")
    limits = parser.add_argument_group("admission and limits")
    limits.add_argument("--max-queue", type=int, default=32,
                        help="requests admitted at once (running + waiting); past it: 429")
    limits.add_argument("--request-timeout", type=float, default=300.0, metavar="SECONDS",
                        help="stop a request after this long (504)")
    limits.add_argument("--max-body-bytes", type=int, default=1 << 20,
                        help="largest request body (413)")
    limits.add_argument("--max-n", type=int, default=8, help="largest n per request")
    limits.add_argument("--max-rounds", type=int, default=32,
                        help="largest atts.rounds per request")
    limits.add_argument("--max-step-tokens", type=int, default=1024,
                        help="largest atts.draft_tokens / atts.target_tokens")
    limits.add_argument("--max-completion-tokens", type=int, default=16384,
                        help="largest max_tokens per request")
    parser.add_argument("--log-level", default="info",
                        choices=("critical", "error", "warning", "info", "debug"))
    parser.add_argument("--recipe", help="YAML file of RunConfig keys (server defaults)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one RunConfig key")
    group = parser.add_argument_group("ATTS defaults and engines (RunConfig keys)")
    for key, help_text in CONFIG_FLAGS.items():
        group.add_argument("--" + key.replace("_", "-"), dest=key, default=argparse.SUPPRESS,
                           help=help_text)
    parser.set_defaults(func=handle)


def port_number(text: str) -> int:
    """argparse type of --port: an integer in 0..65535, else a usage error (exit 2)."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 0 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not a port number (0-65535)")
    return port


def check_address(host: str, port: int) -> None:
    """A host this machine cannot bind (an unknown name, another machine's address) is found
    here, before the models load, not after."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except socket.gaierror as err:
        raise ValueError(f"--host {host!r} is not an address of this machine ({err.strerror}); "
                         "use 127.0.0.1 (this machine only) or 0.0.0.0 (every interface)"
                         ) from None
    family, kind, proto, _, address = infos[0]
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as err:
            raise ValueError(f"cannot listen on {host}:{port} ({err.strerror}); pick another "
                             "--port, or an address of this machine for --host") from None


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The server's RunConfig: recipe < --set < flags, then the serve invariants (ATTS with
    one online marginal bank)."""
    from atts.serve.settings import server_config

    return server_config(config_values(args))


def settings_from_args(args: argparse.Namespace) -> ServeSettings:
    from atts.serve.settings import ServeSettings

    if args.api_key is not None and not args.api_key.strip():
        raise ValueError("the API key is empty (--api-key or ATTS_API_KEY): give a key, or "
                         "unset it to serve without one")
    return ServeSettings(
        api_key=args.api_key,
        served_model_name=args.served_model_name,
        max_queue=args.max_queue,
        request_timeout=args.request_timeout,
        max_body_bytes=args.max_body_bytes,
        max_n=args.max_n,
        max_rounds=args.max_rounds,
        max_step_tokens=args.max_step_tokens,
        max_completion_tokens=args.max_completion_tokens,
        bank_path=args.bank,
        force_bank=args.force_bank,
        bank_save_every=args.bank_save_every,
        bank_max=args.bank_max,
    )


def handle(args: argparse.Namespace) -> int:
    from atts.conformal.persistence import check_bank_path
    from atts.serve.server import serve_forever
    from atts.serve.service import AttsService

    config = config_from_args(args)
    settings = settings_from_args(args)
    check_address(args.host, args.port)  # all before the models load
    if args.bank:
        check_bank_path(args.bank)  # not at shutdown, with the scores
    if args.host not in LOOPBACK and settings.api_key is None:
        print(f"atts serve: warning: listening on {args.host} without an API key; set "
              "ATTS_API_KEY or --api-key", file=sys.stderr)
    service = AttsService.build(config, settings)
    bank = f"{len(service.bank)} scores" + (f" in {args.bank}" if args.bank else
                                             " (in memory: pass --bank FILE to keep it)")
    print(f"atts serve: {service.model_id} on http://{args.host}:{args.port}/v1, bank {bank}",
          file=sys.stderr)
    serve_forever(service, settings, host=args.host, port=args.port, log_level=args.log_level)
    return 0
