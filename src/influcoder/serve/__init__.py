"""``influcoder serve``: attribution over HTTP, a JSON API and a web page in one process.

* ``server.py``   who may connect (token, loopback), loading the index, running uvicorn
* ``app.py``      the FastAPI routes, JSON errors, the offline OpenAPI page
* ``guard.py``    ASGI gate: token, body size limit, ``Server-Timing``
* ``schemas.py``  the request bodies
* ``service.py``  the answers: exact scores, percentiles, filters, aggregation, cleaned file
* ``batcher.py``  micro-batching of concurrent queries
* ``scores.py``   top rows, percentiles and histograms of one query's pool scores
* ``ground_truth.py``  the gradient ranking beside the encoder's
* ``static/``     the web page (plain HTML, CSS and JS; works offline)

Importing this package imports nothing heavy; FastAPI and uvicorn load with the modules that
need them.
"""
