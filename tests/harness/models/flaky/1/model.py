"""y = 2x; answers UNAVAILABLE while time() < the number in <model dir>/unavailable_until."""

import os
import time

import numpy as np
import triton_python_backend_utils as pb_utils


class TritonPythonModel:
    def initialize(self, args):
        self.state_file = os.path.join(args["model_repository"], "unavailable_until")

    def _unavailable(self):
        try:
            with open(self.state_file) as handle:
                return time.time() < float(handle.read().strip() or 0)
        except OSError:
            return False

    def execute(self, requests):
        if self._unavailable():
            error = pb_utils.TritonError("warming up, try later", pb_utils.TritonError.UNAVAILABLE)
            return [pb_utils.InferenceResponse(error=error) for _ in requests]
        responses = []
        for request in requests:
            x = pb_utils.get_input_tensor_by_name(request, "x").as_numpy()
            y = pb_utils.Tensor("y", (x * 2).astype(np.float32))
            responses.append(pb_utils.InferenceResponse([y]))
        return responses
