"""y = 3x; a request is one item (the model does not batch)."""

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def execute(self, requests):
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if x.shape != (4,):
                error = pb_utils.TritonError(f"expected one item of shape [4], got {x.shape}")
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            y = pb_utils.Tensor("y", (x * 3).astype(np.float32))
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
