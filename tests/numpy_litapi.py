"""A LitAPI without torch, as a user writes one: nearest neighbour of a query among 20,000 vectors of 128
(numpy's BLAS does the work). Each answer also says how many threads numpy's BLAS ran while predict() ran, so a
test reads the pools a worker serves with from the answers themselves."""

import litserve as ls
import numpy as np
from threadpoolctl import threadpool_info

ROWS, WIDTH = 20_000, 128


class NearestNeighbourAPI(ls.LitAPI):
    def setup(self, device):
        self.index = np.random.default_rng(0).standard_normal((ROWS, WIDTH)).astype(np.float32)

    def decode_request(self, request):
        return np.asarray(request["vector"], dtype=np.float32)

    def batch(self, inputs):
        return np.stack(inputs)

    def predict(self, x):
        queries = x if x.ndim == 2 else x[None]
        nearest = np.argmax(queries @ self.index.T, axis=1)  # a (batch x 128) x (128 x 20,000) BLAS product
        blas = sorted({pool["num_threads"] for pool in threadpool_info() if pool["user_api"] == "blas"})
        answers = [{"nearest": int(i), "blas_threads": blas} for i in nearest]
        return answers if x.ndim == 2 else answers[0]

    def unbatch(self, output):
        return output

    def encode_response(self, output):
        return output
