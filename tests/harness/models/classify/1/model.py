"""scores[c] = 0.1 * c, except scores[int(x) % 4] = 1.0."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy().reshape(-1)
            scores = np.tile(np.arange(4, dtype=np.float32) * 0.1, (len(x), 1))
            scores[np.arange(len(x)), x.astype(np.int64) % 4] = 1.0
            responses.append(pb_utils.InferenceResponse([pb_utils.Tensor("scores", scores)]))
        return responses
