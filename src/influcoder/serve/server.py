"""Starting a server: who may reach it, opening the index once, and uvicorn.

Attribution shows training data, which may be private, so a server reachable from other
machines must ask for a token: binding to anything but a loopback address without ``token``
(or an explicit ``no_auth``) is refused before anything is loaded.
"""

from __future__ import annotations

import ipaddress
import logging
import os

from influcoder.errors import InflucoderError

logger = logging.getLogger(__name__)

LOOPBACK_NAMES = ("localhost",)


def is_loopback(host: str) -> bool:
    """Whether ``host`` is a loopback address (127.0.0.0/8, ::1) or ``localhost``."""
    if host.lower() in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def check_binding(host: str, token: str | None, no_auth: bool) -> None:
    """Refuse an open server beyond this machine, and contradictory options."""
    if token is not None and not token.strip():
        raise InflucoderError("the token is empty")
    if token and no_auth:
        raise InflucoderError("give --token or --no-auth, not both")
    if not is_loopback(host) and not token and not no_auth:
        raise InflucoderError(
            f"refusing to serve on {host!r} without a token: anyone who can "
            f"reach it could read the training data. Give --token (or set "
            f"INFLUCODER_TOKEN), bind to 127.0.0.1, or pass --no-auth if "
            f"the network is trusted"
        )


def open_service(
    index_dir: str | os.PathLike,
    *,
    ground_truth: str | None = None,
    encoder: str | None = None,
    backend: str = "auto",
    workers: int | None = None,
    max_batch: int = 16,
    device: str = "cpu",
    query_gradients: str | None = None,
):
    """Load the index, its encoder and the optional gradient store into a
    :class:`~influcoder.serve.service.Service`. The ONNX query encoder runs one
    thread per batch worker (``workers`` batches are encoded at once, see batcher.py), and
    its threads sleep rather than spin between runs: on a shared machine spinning threads
    took a core from every other request. ``workers``: None means one per core (2 to 8).
    ``device``: where a torch back end runs (the ONNX ones always use the CPU).

    ``index_dir`` may be a fit directory (``influcoder fit``): its index is served, with its
    encoder (wherever the directory moved) and, unless ``ground_truth`` says otherwise, its
    training sample's gradient store as the ground truth. With ``query_gradients`` (a gradient
    store taken like the encoder's ground truth) a query may also be its own gradient in the
    encoder's gradient basis (the default of each request); the decoder loads here, once."""
    from influcoder.attribution.attributor import Attributor
    from influcoder.serve.ground_truth import GroundTruth
    from influcoder.serve.service import Service
    from influcoder.workflows.fit import resolve_fit_dir

    fitted = resolve_fit_dir(index_dir)
    if fitted is not None:
        index_dir, encoder = fitted["index"], encoder or str(fitted["encoder"])
        ground_truth = ground_truth or str(fitted["ground_truth"])
    attributor = Attributor.load(index_dir, encoder, backend=backend, threads=1, device=device)
    exact = None
    if query_gradients is not None:
        exact = attributor.with_query_gradients(query_gradients, device=device)
        exact.encoder.load()
    gt = None if ground_truth is None else GroundTruth(ground_truth, attributor.index.ids)
    workers = workers or min(8, max(2, os.cpu_count() or 2))
    return Service(attributor, ground_truth=gt, workers=workers, max_batch=max_batch, exact=exact)


def serve(
    index_dir: str | os.PathLike,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    token: str | None = None,
    no_auth: bool = False,
    ground_truth: str | None = None,
    encoder: str | None = None,
    backend: str = "auto",
    max_body: int | None = None,
    workers: int | None = None,
    log_level: str = "info",
    device: str = "cpu",
    query_gradients: str | None = None,
) -> None:
    """Serve the index until interrupted (see :mod:`influcoder.serve`)."""
    check_binding(host, token, no_auth)
    import uvicorn

    from influcoder.serve.app import MAX_BODY, create_app

    service = open_service(
        index_dir,
        ground_truth=ground_truth,
        encoder=encoder,
        backend=backend,
        workers=workers,
        device=device,
        query_gradients=query_gradients,
    )
    app = create_app(service, token=token, max_body=max_body or MAX_BODY)
    shown = "localhost" if is_loopback(host) else host
    logger.info(
        f"serving {service.index.n} pool samples on http://{shown}:{port}/ "
        f"(API: /api, OpenAPI page: /docs){'; token required' if token else ''}"
    )
    try:
        uvicorn.run(app, host=host, port=port, log_level=log_level, access_log=False)
    finally:
        service.close()
