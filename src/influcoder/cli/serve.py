"""``influcoder serve``: the index behind a JSON API and a web page."""

from __future__ import annotations

import click

from influcoder.cli.app import cli
from influcoder.cli.options import device_option, handle_errors, query_gradients_option
from influcoder.encoders.settings import BACKENDS


@cli.command()
@click.argument("index_dir", metavar="INDEX|FIT_DIR", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--ground-truth",
    default=None,
    metavar="POOL_STORE",
    type=click.Path(exists=True, file_okay=False),
    help="the pool's gradient store (from `collect`): for a query that is one of "
    "its samples, show the gradient ranking beside the encoder's",
)
@click.option(
    "--host",
    default="127.0.0.1",
    show_default=True,
    help="address to bind; anything but loopback needs --token or --no-auth",
)
@click.option("--port", "-p", type=int, default=8000, show_default=True)
@click.option(
    "--token",
    envvar="INFLUCODER_TOKEN",
    default=None,
    help="required on every API request (Authorization: Bearer TOKEN or ?token=); "
    "also read from INFLUCODER_TOKEN",
)
@click.option(
    "--no-auth", is_flag=True, help="serve beyond loopback without a token (a trusted network only)"
)
@click.option(
    "--encoder",
    "-e",
    default=None,
    help="the index's encoder, if it moved (its fingerprint must match)",
)
@click.option(
    "--backend",
    type=click.Choice(BACKENDS),
    default="auto",
    show_default=True,
    help="encoder inference for the queries",
)
@click.option(
    "--max-body",
    type=int,
    default=1_000_000,
    show_default=True,
    help="largest request body in bytes (larger: 413)",
)
@click.option(
    "--workers",
    type=click.IntRange(1, 64),
    default=None,
    help="batches answered at once [default: one per core, 2 to 8]",
)
@query_gradients_option(
    "also offer each query's own gradient (the decoder stays loaded; one backward pass "
    "per query, taken like the gradient store STORE the encoder was distilled from) against "
    "the index's embeddings, the default of every request (query_gradient: false asks for "
    "the encoder's); needs an encoder distilled with a head"
)
@device_option(
    extra=" for a torch backend; the onnx and int8 backends (auto's choice where "
    "ONNX Runtime is installed) always use the CPU"
)
@handle_errors
def serve(
    index_dir,
    ground_truth,
    host,
    port,
    token,
    no_auth,
    encoder,
    backend,
    max_body,
    workers,
    query_gradients,
    device,
):
    """Serve INDEX (or the index of a `fit` directory, with its training sample's gradients
    as --ground-truth): a web page at / (query box, hits, filters, histogram, downloads, and a
    view that cleans the training file) and a JSON API under /api (OpenAPI page: /docs).

    Nothing a request sends can change the index. Results are exact: every pool vector is
    held in memory (n x dim x 4 bytes).

    \b
    Examples:
      influcoder serve runs/index
      influcoder serve runs/fit
      influcoder serve runs/index --ground-truth runs/pool --port 8080
      influcoder serve runs/index --query-gradients runs/pool
      INFLUCODER_TOKEN=s3cret influcoder serve runs/index --host 0.0.0.0
      curl -s localhost:8000/api/attribute -H 'content-type: application/json' \\
           -d '{"text": "The capital of France is Paris.", "k": 5}'
    """
    from influcoder.serve.server import serve as run

    run(
        index_dir,
        host=host,
        port=port,
        token=token,
        no_auth=no_auth,
        ground_truth=ground_truth,
        encoder=encoder,
        backend=backend,
        max_body=max_body,
        workers=workers,
        device=device,
        query_gradients=query_gradients,
    )
