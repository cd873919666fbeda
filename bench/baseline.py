"""The stack most teams write by hand, as the baseline: PyTorch CLIP in-process behind FastAPI,
one vector-database query per request, and an indexing loop that encodes one image at a time.

It uses the same weights as the exported model (``CLIPModel`` built from the same towers) and the
same Milvus collection, so only the serving path differs.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from PIL import Image
from pydantic import BaseModel
from transformers import CLIPConfig, CLIPImageProcessor, CLIPModel, CLIPTokenizerFast

from core.records import make_row
from export.checkpoint import load_towers


class SearchBody(BaseModel):
    """The baseline's request body."""

    query: str
    top_k: int = 10


def baseline_model(model: str) -> CLIPModel:
    """A ``CLIPModel`` holding exactly the weights of ``load_towers(model)``."""
    towers = load_towers(model)
    clip = CLIPModel(CLIPConfig(text_config=towers.text.config.to_dict(), vision_config=towers.vision.config.to_dict(), projection_dim=towers.dimension))
    state = {**towers.text.state_dict(), **{k: v for k, v in towers.vision.state_dict().items()}}
    missing, unexpected = clip.load_state_dict(state, strict=False)
    assert not unexpected and set(missing) <= {"logit_scale"}, (missing, unexpected)
    return clip.eval()


def create_app() -> Any:
    """The FastAPI app: ``POST /search {"query", "top_k"}`` → hits (config from ``BASELINE_*`` variables)."""
    from fastapi import FastAPI
    from pymilvus import MilvusClient

    model = baseline_model(os.environ.get("BASELINE_MODEL", "random"))
    tokenizer = CLIPTokenizerFast(tokenizer_file=os.environ["BASELINE_TOKENIZER"])
    client = MilvusClient(uri=os.environ["BASELINE_MILVUS_URI"])
    collection = os.environ["BASELINE_COLLECTION"]
    app = FastAPI()

    @app.post("/search")
    def search(body: SearchBody) -> dict[str, Any]:
        with torch.inference_mode():
            inputs = tokenizer([body.query], padding=True, truncation=True, max_length=77, return_tensors="pt")
            features = model.get_text_features(**inputs)
            vector = torch.nn.functional.normalize(features, dim=-1)[0].tolist()
        result = client.search(
            collection, data=[vector], limit=body.top_k, output_fields=["uri"], search_params={"metric_type": "COSINE", "params": {"ef": max(64, body.top_k)}}
        )
        return {"hits": [{"id": h["id"], "score": h["distance"], "uri": h["entity"].get("uri", "")} for h in result[0]]}

    return app


def index_one_at_a_time(model: CLIPModel, files: list[Path], write: Callable[[list[dict[str, Any]]], None]) -> float:
    """Encode and insert each image on its own, as simple start-up indexers do; returns img/s."""
    processor = CLIPImageProcessor()
    start = time.perf_counter()
    for path in files:
        with torch.inference_mode():
            pixels = processor(images=Image.open(path).convert("RGB"), return_tensors="pt")["pixel_values"]
            vector = torch.nn.functional.normalize(model.get_image_features(pixel_values=pixels), dim=-1)[0].numpy()
        write([make_row(f"baseline/{path.name}", vector, str(path), [], "")])
    return len(files) / (time.perf_counter() - start)


app = create_app() if os.environ.get("BASELINE_SERVE") == "1" else None
