"""Serve text-to-video search over a video index with an ONNX export (no torch needed).

Example::

    python tools/deployment/serve_search.py work_dirs/my_index --export work_dirs/tempme_onnx
    curl 'http://127.0.0.1:8000/search?q=a+dog+catches+a+frisbee&k=5'
    # -> [{"path": ..., "start": 24.0, "end": 36.0, "score": 0.31}, ...] (seconds)

The index comes from ``tools/search.py index`` (PyTorch or ``--onnx`` backend) and must
have been built with the exported model (same fingerprint). Endpoints: ``GET /search``,
``GET /health``, ``POST /reload`` (see ``projects/tempme_deploy/service.py``).
"""
import os

# One thread for numpy's BLAS and the tokenizer: the service ranks a whole batch of queries
# with one product, and BLAS or tokenizer threads left spinning after it slow ONNX
# Runtime's next run on the same cores (measured: 2x the throughput under 8 clients).
# Set before numpy is imported; an explicit setting in the environment wins.
os.environ.setdefault('OPENBLAS_NUM_THREADS', '1')
os.environ.setdefault('MKL_NUM_THREADS', '1')
os.environ.setdefault('TOKENIZERS_PARALLELISM', 'false')

import argparse  # noqa: E402
import socket  # noqa: E402
import sys  # noqa: E402

from projects.tempme_deploy.onnx_retriever import ExportFormatError  # noqa: E402
from projects.tempme_deploy.search import IndexModelMismatch  # noqa: E402
from projects.tempme_deploy.service import SearchBackend, create_app  # noqa: E402


def parse_args(argv=None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split('\n\n')[0])
    parser.add_argument('index', help='index folder')
    parser.add_argument('--export', required=True, help='ONNX export folder of the model')
    parser.add_argument('--host', default='127.0.0.1', help='address to listen on')
    parser.add_argument('--port', type=int, default=8000, help='port (0: any free port)')
    parser.add_argument('--threads', type=int, default=None,
                        help='ONNX Runtime threads per query (default: all cores)')
    parser.add_argument('--log-level', default='warning', help='uvicorn log level')
    return parser.parse_args(argv)


def main(argv=None) -> None:
    import uvicorn
    args = parse_args(argv)
    backend = SearchBackend(args.index, args.export, threads=args.threads)
    # bound here, so that the line below names the real port when --port is 0
    sock = socket.create_server((args.host, args.port))
    host, port = sock.getsockname()[:2]
    server = uvicorn.Server(uvicorn.Config(create_app(backend), log_level=args.log_level))
    index = backend.snapshot.index
    print(f'serving {index.num_files} videos ({len(index)} windows) from {args.index} on '
          f'http://{host}:{port} (GET /search?q=...&k=..., GET /health, POST /reload)',
          flush=True)
    server.run(sockets=[sock])


if __name__ == '__main__':
    try:
        main()
    # a bad index or export folder is named in one line at start-up, before serving
    except (OSError, ExportFormatError, IndexModelMismatch, ValueError) as err:
        sys.exit(f'error: {err}')
