"""Run exported ONNX towers with the onnxruntime of the interpreter that runs this file.

A standalone script for ``.venv-ort-gpu`` (``requirements-ort-gpu.txt``: onnxruntime-gpu and numpy,
nothing of the project), started by ``export.ort_gpu`` as ``python -I ort_gpu_worker.py SPEC``.
``SPEC`` is a JSON file::

    {"models": {"clip_text": "/path/model.onnx", ...}, "providers": ["CUDAExecutionProvider", ...],
     "inputs": "/path/inputs.npz", "cases": [{"name": "...", "model": "clip_text",
     "inputs": {"input_ids": "<key in inputs.npz>"}}], "repeats": 0, "outputs": "/path/outputs.npz",
     "report": "/path/report.json"}

For each case it runs the model's session once (its first output is kept in ``outputs``, under the
case's name) and then, when ``repeats`` > 0, times ``repeats`` more calls after a warm-up and
records their median in milliseconds. ``report`` gets the onnxruntime version, the providers this
build offers (``available``) and, per model, the providers its session really uses (``sessions``):
onnxruntime falls back to the CPU when CUDA cannot start, with only a warning on stderr, so the
caller decides from ``sessions``, never from ``available``.
"""

from __future__ import annotations

import contextlib
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

WARMUP = 3


def run(spec: dict[str, Any]) -> dict[str, Any]:
    import numpy as np
    import onnxruntime as ort

    providers = list(spec["providers"])
    if providers[0] != "CPUExecutionProvider" and hasattr(ort, "preload_dlls"):
        # CUDA and cuDNN from the nvidia-* wheels when they are installed (onnxruntime-gpu[cuda,cudnn]), else the system's.
        with contextlib.redirect_stdout(sys.stderr):
            ort.preload_dlls()
    arrays = np.load(spec["inputs"])
    sessions: dict[str, Any] = {}
    report: dict[str, Any] = {"onnxruntime": ort.__version__, "available": ort.get_available_providers(), "sessions": {}, "median_ms": {}}
    outputs = {}
    for case in spec["cases"]:
        model = case["model"]
        if model not in sessions:
            sessions[model] = ort.InferenceSession(spec["models"][model], providers=providers)
            report["sessions"][model] = sessions[model].get_providers()
        session = sessions[model]
        feeds = {name: arrays[key] for name, key in case["inputs"].items()}
        outputs[case["name"]] = session.run(None, feeds)[0]
        repeats = int(spec.get("repeats", 0))
        if repeats > 0:
            for _ in range(WARMUP):
                session.run(None, feeds)
            timings = []
            for _ in range(repeats):
                start = time.perf_counter()
                session.run(None, feeds)
                timings.append(time.perf_counter() - start)
            report["median_ms"][case["name"]] = statistics.median(timings) * 1000
    np.savez(spec["outputs"], **outputs)
    Path(spec["report"]).write_text(json.dumps(report))
    return report


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: ort_gpu_worker.py SPEC.json", file=sys.stderr)
        return 2
    run(json.loads(Path(args[0]).read_text()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
