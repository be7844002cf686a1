"""y = 2x; negative x is rejected (INVALID_ARG) until <model dir>/open exists."""

import os

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.open_flag = os.path.join(args["model_repository"], "open")

    def execute(self, requests):
        is_open = os.path.exists(self.open_flag)
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            if (x < 0).any() and not is_open:
                error = pb_utils.TritonError(
                    f"negative input {float(x.min())} is not allowed",
                    pb_utils.TritonError.INVALID_ARG,
                )
                responses.append(pb_utils.InferenceResponse(error=error))
                continue
            y = pb_utils.Tensor("y", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
