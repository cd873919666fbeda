"""Triton python-backend model that runs ``model.onnx`` from its version folder with onnxruntime.

This file is the single source of the CPU wrapper: ``t2i export`` copies it to
``<repo>/<model>/<version>/model.py``. It runs inside Triton's python-backend stub, not in the
gateway, so it may only import numpy, onnxruntime and ``triton_python_backend_utils``.
Input and output names come from the model's ``config.pbtxt``; the same ONNX file is served in
production by Triton's native onnxruntime backend.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    """Runs one ONNX model; requests of equal shape in a dynamic batch run as one call."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Load the ONNX file next to this script with settings from the model config."""
        config = json.loads(args["model_config"])
        self.input_names = [tensor["name"] for tensor in config["input"]]
        self.output_names = [tensor["name"] for tensor in config["output"]]
        params = {key: value["string_value"] for key, value in config.get("parameters", {}).items()}
        options = ort.SessionOptions()
        options.intra_op_num_threads = int(params.get("intra_op_threads", "0"))
        options.inter_op_num_threads = 1
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        version_dir = os.path.join(args["model_repository"], args["model_version"])
        self.session = ort.InferenceSession(
            os.path.join(version_dir, params.get("onnx_file", "model.onnx")),
            sess_options=options,
            providers=["CPUExecutionProvider"],
        )

    def execute(self, requests: list[Any]) -> list[Any]:
        """Group requests by input shape, run each group once, and split the outputs back."""
        inputs = [
            {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            for request in requests
        ]
        groups: dict[tuple, list[int]] = {}
        for index, tensors in enumerate(inputs):
            key = tuple(tensors[name].shape[1:] for name in self.input_names)
            groups.setdefault(key, []).append(index)
        responses: list[Any] = [None] * len(requests)
        for indices in groups.values():
            feed = {name: np.concatenate([inputs[i][name] for i in indices]) for name in self.input_names}
            outputs = self.session.run(self.output_names, feed)
            start = 0
            for i in indices:
                size = inputs[i][self.input_names[0]].shape[0]
                tensors = [
                    pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size]))
                    for name, value in zip(self.output_names, outputs)
                ]
                responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
                start += size
        return responses
