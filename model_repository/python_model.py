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
embedding is pooled at the first end-of-text token (id 0 never outranks it). Triton puts requests
of different lengths in one batch only for inputs with ``allow_ragged_batch``; the committed
``cpu.pbtxt`` sets none (the gateway pads to token buckets), so there a batch holds one length.

One bad request fails alone. Before any run, a request is refused (``INVALID_ARG``) when inputs
padded together differ in length within it (padding would hide what a run of it alone rejects) or
when an integer input holds a negative value (a token id or a mask; a negative id would silently
index the vocabulary from its end). When the run of a shape group raises (a token id beyond the
vocabulary, from a client that calls Triton directly), each request of the group runs again on its
own: the good ones get their results and each bad one gets its own error response, which names its
inputs and onnxruntime's reason. Other shape groups of the batch are not affected.
"""

from __future__ import annotations

import json
import os
from typing import Any

import numpy as np
import onnxruntime as ort
import triton_python_backend_utils as pb_utils
from onnxruntime.capi.onnxruntime_pybind11_state import InvalidArgument as OrtInvalidArgument


class TritonPythonModel:
    """Runs one ONNX model; the requests of a dynamic batch run as one call per compatible shape."""

    def initialize(self, args: dict[str, Any]) -> None:
        """Load the ONNX file next to this script with settings from the model config."""
        config = json.loads(args["model_config"])
        self.model_name = config["name"]
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
        """Group requests by input shape, run each group once, and split the outputs back.

        Every request gets its own response: a request that is invalid, or that fails when run on its
        own, gets an error response; the others get their outputs.
        """
        responses: list[Any] = [None] * len(requests)
        inputs: dict[int, dict[str, np.ndarray]] = {}
        for index, request in enumerate(requests):
            tensors = {name: pb_utils.get_input_tensor_by_name(request, name).as_numpy() for name in self.input_names}
            problem = self._problem(tensors)
            if problem is None:
                inputs[index] = tensors
            else:
                responses[index] = self._error(problem, pb_utils.TritonError.INVALID_ARG)
        groups: dict[tuple, list[int]] = {}
        for index, tensors in inputs.items():
            key = tuple(tensors[name].shape[2 if name in self.pad_to_longest else 1 :] for name in self.input_names)
            groups.setdefault(key, []).append(index)
        for indices in groups.values():
            self._answer(indices, inputs, responses)
        return responses

    def _problem(self, tensors: dict[str, np.ndarray]) -> str | None:
        """Why one request cannot run, or None."""
        padded = [name for name in self.input_names if name in self.pad_to_longest]
        lengths = {tensors[name].shape[1] for name in padded if tensors[name].ndim > 1}
        if len(lengths) > 1:
            shapes = ", ".join(f"{name} {list(tensors[name].shape)}" for name in padded)
            return f"{self.model_name}: {' and '.join(padded)} must have the same length in a request ({shapes})"
        for name, value in tensors.items():
            if value.dtype.kind == "i" and value.size and int(value.min()) < 0:
                return f"{self.model_name}: {name} holds negative values (the smallest is {int(value.min())}); token ids and masks are never negative"
        return None

    def _answer(self, indices: list[int], inputs: dict[int, dict[str, np.ndarray]], responses: list[Any]) -> None:
        """Run the requests ``indices`` as one call; when it raises, run each on its own, so that only bad ones fail."""
        try:
            feed = {name: self._feed(name, [inputs[i][name] for i in indices]) for name in self.input_names}
            outputs = self.session.run(self.output_names, feed)
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own classes; one request's input must not fail the others
            if len(indices) > 1:
                pb_utils.Logger.log_warn(f"{self.model_name}: a run of {len(indices)} requests failed ({exc}); running them one at a time")
                for i in indices:
                    self._answer([i], inputs, responses)
                return
            shapes = ", ".join(f"{name} {value.dtype}{list(value.shape)}" for name, value in inputs[indices[0]].items())
            code = pb_utils.TritonError.INVALID_ARG if isinstance(exc, OrtInvalidArgument) else pb_utils.TritonError.INTERNAL
            responses[indices[0]] = self._error(f"{self.model_name}: onnxruntime could not run this request ({shapes}): {exc}", code)
            return
        start = 0
        for i in indices:
            size = inputs[i][self.input_names[0]].shape[0]
            tensors = [pb_utils.Tensor(name, np.ascontiguousarray(value[start : start + size])) for name, value in zip(self.output_names, outputs, strict=True)]
            responses[i] = pb_utils.InferenceResponse(output_tensors=tensors)
            start += size

    def _error(self, message: str, code: Any) -> Any:
        pb_utils.Logger.log_warn(message)
        return pb_utils.InferenceResponse(output_tensors=[], error=pb_utils.TritonError(message, code))
