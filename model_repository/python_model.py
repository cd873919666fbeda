"""Triton python-backend model that runs ``model.onnx`` from its version folder with onnxruntime.

This file is the single source of the CPU wrapper: ``t2i export`` copies it from the template
repository to ``<repo>/<model>/<version>/model.py``, where Triton loads it. It runs inside Triton's
python-backend stub, never in the gateway, so it may only import numpy, onnxruntime and
``triton_python_backend_utils``.
Input and output names come from the model's ``config.pbtxt``; the same ONNX file is served in
production by Triton's native onnxruntime backend.

Parameters (``config.pbtxt``): ``intra_op_threads``, ``allow_spinning`` ("0" stops idle
onnxruntime threads from spinning) and ``pad_to_longest``: comma-separated inputs that may differ
in length along axis 1; requests in one dynamic batch are zero-padded to the longest so they run
as one call. For CLIP text this is exact: the mask hides the padding, attention is causal and the
embedding is pooled at the first end-of-text token (id 0 never outranks it).
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Runs one ONNX model; the requests of a dynamic batch run as one call per compatible shape."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Load the ONNX file next to this script with settings from the model config."""
        config = json.loads(args["model_config"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        self.pad_to_longest = {name.strip() for name in params.get("pad_to_longest", "").split(",") if name.strip()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        # Idle onnxruntime threads spin by default, taking a core from Triton and the gateway.
        options.add_session_config_entry("session.intra_op.allow_spinning", params.get("allow_spinning", "1"))
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.session = ort.InferenceSession(
            os.path.join(version_dir, params.get("onnx_file", "model.onnx")),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    def _feed(self, name: str, parts: list[np.ndarray]) -> np.ndarray:
        if name in self.pad_to_longest and len(parts) > 1:
            longest = max(part.shape[1] for part in parts)
            parts = [np.pad(part, [(0, 0), (0, longest - part.shape[1])] + [(0, 0)] * (part.ndim - 2)) for part in parts]
        return np.concatenate(parts)

    def execute(self, requests: list[Any]) -> list[Any]:
        """Group requests by input shape, run each group once, and split the outputs back."""
        inputs = [{name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names} for request in requests]
        groups: dict[tuple, list[int]] = {}
        for index, tensors in enumerate(inputs):
            key = tuple(tensors[name].shape[2 if name in self.pad_to_longest else 1 :] for name in self.input_names)
            groups.setdefault(key, []).append(index)
        responses: list[Any] = [None] * len(requests)
        for indices in groups.values():
            feed = {name: self._feed(name, [inputs[i][name] for i in indices]) for name in self.input_names}
            outputs = self.session.run(self.output_names, feed)
            start = 0
            for i in indices:
                size = inputs[i][self.input_names[0]].shape[0]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size])) for name, value in zip(self.output_names, outputs, strict=True)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += size
        return responses
