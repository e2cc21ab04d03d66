"""The STS AssumeRole request signature (Alibaba Cloud RPC signature v1.0) against vectors made
by independent implementations (aliyun-python-sdk-core, alibabacloud-openapi-util,
alibabacloud-credentials; see tests/data/sts_vectors.md for how), never by appserver."""

import json
import unittest

import appserver
from tests.support import REPO

VECTORS = json.loads((REPO / "tests" / "data" / "sts_vectors.json").read_text())["vectors"]


class RpcSignature(unittest.TestCase):

    def test_signatures_match_the_independent_vectors(self):
        self.assertGreaterEqual(len(VECTORS), 3)
        for vector in VECTORS:
            with self.subTest(vector=vector["name"]):
                params = {k: v for k, v in vector["params"].items() if k != "Signature"}
                self.assertEqual(appserver.rpc_signature(vector["method"], params,
                                                         vector["access_key_secret"]),
                                 vector["signature"])

    def test_any_changed_parameter_changes_the_signature(self):
        vector = VECTORS[0]
        params = {k: v for k, v in vector["params"].items() if k != "Signature"}
        for name in params:
            with self.subTest(parameter=name):
                changed = dict(params, **{name: params[name] + "x"})
                self.assertNotEqual(appserver.rpc_signature(vector["method"], changed,
                                                            vector["access_key_secret"]),
                                    vector["signature"])
        self.assertNotEqual(appserver.rpc_signature("POST" if vector["method"] == "GET"
                                                    else "GET", params,
                                                    vector["access_key_secret"]),
                            vector["signature"])


if __name__ == "__main__":
    unittest.main()
