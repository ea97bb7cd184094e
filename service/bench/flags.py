"""The flags of ``nnserve bench`` (kept apart so that the CLI imports nothing heavy to build its parser)."""

from __future__ import annotations

import argparse
from pathlib import Path

PROTOCOLS = ("predict", "v2-json", "v2-binary")  # and, when asked, "grpc" (OIP over gRPC, with h2load) and
# "v2-shm" (OIP over HTTP, the tensors in system shared memory: service/bench/shared_payloads.py)


def add_bench_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=None, help="bench a running server (default: start one)")
    parser.add_argument("--repository", type=Path, default=Path("models"))
    parser.add_argument("--models", default="mlp,cnn,resnet,lstm")
    parser.add_argument("--protocols", default=",".join(PROTOCOLS), help="predict,v2-json,v2-binary,grpc,v2-shm")
    parser.add_argument("--grpc-target", default=None, help="with --url: the server's gRPC host:port (default :8001)")
    parser.add_argument("--concurrency", default="1,64", help="comma-separated connection counts")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per measurement")
    parser.add_argument("--warmup", type=float, default=2.0, help="seconds of unmeasured load before each")
    parser.add_argument("--samples", type=int, default=512, help="distinct real inputs to cycle through")
    parser.add_argument("--data-dir", type=Path, default=None)
    parser.add_argument("--server-args", default="",
                        help='extra `nnserve serve` flags for the started server, e.g. --server-args="--workers 2"')
    parser.add_argument("--unbatched", action="store_true",
                        help="also bench a server with --max-batch-size 1 and report the speed-up")
    parser.add_argument("--reference", action="store_true",
                        help="also bench the same models behind the simplest FastAPI endpoint calling onnxruntime in "
                             "its event loop (service/bench/reference_server.py; OIP protocols) and report what "
                             "nnserve adds to p50")
    parser.add_argument("--bare", action="store_true",
                        help="also load the least a Python server can do per HTTP request, as many processes as the "
                             "started server's (service/bench/bare_server.py: the body read into one buffer, a "
                             "fixed 200) and report its CPU per request beside nnserve's, and the share of raw "
                             "onnxruntime a server costing only that could reach")
    parser.add_argument("--soak", type=float, default=0.0,
                        help="seconds of one long run (first model and protocol, highest concurrency) "
                             "reporting the server's RSS growth")
    parser.add_argument("--baseline", default=None, metavar="REV",
                        help="compare with a server of git revision REV, alternating rounds (see --rounds)")
    parser.add_argument("--versus-args", default=None, metavar="ARGS",
                        help='compare with this checkout\'s server started with these flags instead of '
                             '--server-args, alternating rounds, e.g. --versus-args="--workers 1"')
    parser.add_argument("--rounds", type=int, default=None,
                        help="rounds of the whole matrix, alternating the models' order (default 1; with --baseline "
                             "or --versus-args: rounds of each side, default 2)")
    parser.add_argument("--raw-seconds", type=float, default=1.5,
                        help="seconds per batch size of the raw in-process onnxruntime measurement")
    parser.add_argument("--beside", default=None, metavar="MODEL[:RATE]",
                        help="while each measured run goes on, also send MODEL's OIP binary requests from one more "
                             "connection at RATE a second (default 100) and report their p50 / p99: how long one "
                             "model's load holds up another's")
    parser.add_argument("--markdown", type=Path, default=None, help="also write the tables to this file")
