"""probs = softmax(MLP(image)) with the weights demo/train.py saved beside this file.

Plain numpy, so the Triton Python backend needs nothing beyond what the stub already imports.
"""

import json
from pathlib import Path

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        version_dir = Path(args["model_repository"]) / args["model_version"]
        weights = np.load(version_dir / "weights.npz")
        count = int(weights["layers"])
        self.layers = [
            (weights[f"w{i}"].astype(np.float32), weights[f"b{i}"].astype(np.float32))
            for i in range(count)
        ]
        config = json.loads(args["model_config"])
        self.output_dtype = pb_utils.triton_string_to_numpy(
            pb_utils.get_output_config_by_name(config, "probs")["data_type"]
        )

    def execute(self, requests):
        responses = []
        for request in requests:
            image = pb_utils.get_input_tensor_by_name(request, "image").as_numpy()
            x = image.reshape(len(image), -1)
            for i, (w, b) in enumerate(self.layers):
                x = x @ w + b
                if i < len(self.layers) - 1:
                    x = np.maximum(x, 0)  # ReLU: scikit-learn's MLPClassifier default
            x = x - x.max(axis=1, keepdims=True)
            probs = np.exp(x)
            probs /= probs.sum(axis=1, keepdims=True)
            out = pb_utils.Tensor("probs", probs.astype(self.output_dtype))
            responses.append(pb_utils.InferenceResponse([out]))
        return responses
