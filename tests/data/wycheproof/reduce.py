"""Write the reduced Wycheproof files of this folder from upstream's originals.

    python3 tests/data/wycheproof/reduce.py WYCHEPROOF/testvectors_v1 [OUT_DIR]

WYCHEPROOF is a checkout of https://github.com/C2SP/wycheproof at the commit named in
README.md; OUT_DIR defaults to this script's folder. Each source file must have the SHA-256 that
README.md lists. Only the fields tests/test_wycheproof.py reads are kept, and every test case;
one test case per line, so a diff shows which cases changed.
"""

import hashlib
import json
import pathlib
import sys

SOURCES = {   # upstream file -> SHA-256 of the file at the snapshot commit
    "rsa_signature_2048_sha256_test.json":
        "94a917b01ff50fb874cfc05bf29b4af44868d944a6558201cf18380da93fb393",
    "rsa_signature_3072_sha256_test.json":
        "0f5f18cabfaad3e2792e82f7e9882f8999049b456714de924b8a5e202f61ca43",
    "rsa_pkcs1_2048_sig_gen_test.json":
        "587b3d27d3429f2118cb02818da4d08eb3f36f50c747939eb550fae4337ccbf0",
    "rsa_pkcs1_3072_sig_gen_test.json":
        "45153219d486fd135d35aa968a957a0c015c7829e8dc59bea5f87e6c30912677",
}
TOP_FIELDS = ("schema", "numberOfTests")
GROUP_FIELDS = {
    "RsassaPkcs1Verify": ("type", "sha", "publicKey", "publicKeyDer", "publicKeyPem",
                          "publicKeyAsn"),
    "RsassaPkcs1Generate": ("type", "sha", "privateKey", "keyDer", "keyPem", "privateKeyPem"),
}
KEY_FIELDS = ("modulus", "publicExponent")          # of publicKey / privateKey
TEST_FIELDS = ("tcId", "comment", "msg", "sig", "result", "flags")


def compact(value):
    return json.dumps(value, separators=(",", ":"), ensure_ascii=True)


def reduce_file(data):
    """The reduced document as text: valid JSON, one test case per line."""
    lines = ["{" + compact({name: data[name] for name in TOP_FIELDS})[1:-1] + ',"testGroups":[']
    for g, group in enumerate(data["testGroups"]):
        head = {}
        for name in GROUP_FIELDS[group["type"]]:
            value = group[name]
            if name in ("publicKey", "privateKey"):
                value = {field: value[field] for field in KEY_FIELDS}
            head[name] = value
        lines.append("{" + compact(head)[1:-1] + ',"tests":[')
        tests = group["tests"]
        for t, case in enumerate(tests):
            lines.append(compact({name: case[name] for name in TEST_FIELDS})
                         + ("," if t < len(tests) - 1 else ""))
        lines.append("]}" + ("," if g < len(data["testGroups"]) - 1 else ""))
    lines.append("]}")
    return "\n".join(lines) + "\n"


def main(argv):
    if len(argv) not in (1, 2):
        sys.exit(__doc__)
    source = pathlib.Path(argv[0])
    out = pathlib.Path(argv[1]) if len(argv) == 2 else pathlib.Path(__file__).resolve().parent
    for name, digest in SOURCES.items():
        raw = (source / name).read_bytes()
        if hashlib.sha256(raw).hexdigest() != digest:
            sys.exit("%s: SHA-256 differs from the snapshot's (see README.md)" % (source / name))
        data = json.loads(raw)
        text = reduce_file(data)
        reduced = json.loads(text)
        assert sum(len(g["tests"]) for g in reduced["testGroups"]) == data["numberOfTests"]
        (out / name).write_text(text, encoding="utf-8")
        print("%s: %d tests, %d -> %d bytes" % (name, data["numberOfTests"], len(raw),
                                                len(text.encode())))


if __name__ == "__main__":
    main(sys.argv[1:])
