"""Learns while it serves: ``OnlineModel`` (one live pipeline for predictions and training),
its journal and prequential log, the builders (``build``) and the HTTP app (``app``, needs
the optional ``serve`` extra: FastAPI and uvicorn)."""
