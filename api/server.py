"""The hub for `sanic api.server:app` users (`qdash serve` does the same with one process).

    sanic api.server:app --host 127.0.0.1 --port 8080 --single-process
Settings come from settings.ini and QDASH__* variables, as for `qdash serve`.
"""
from qdash.hub.app import create_app
from qdash.config import load_settings

app = create_app(load_settings())
