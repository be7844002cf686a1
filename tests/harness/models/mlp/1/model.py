"""probs = softmax(relu(features @ W1) @ W2) with fixed random weights."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        rng = np.random.default_rng(0)
        self.w1 = rng.standard_normal((64, 64)).astype(np.float32) / 8
        self.w2 = rng.standard_normal((64, 10)).astype(np.float32) / 8

    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "features").as_numpy()
            logits = np.maximum(x @ self.w1, 0) @ self.w2
            logits -= logits.max(axis=1, keepdims=True)
            probs = np.exp(logits)
            probs /= probs.sum(axis=1, keepdims=True)
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("probs", probs)]))
        return responses
