"""Regenerate the Python modules of the .proto files beside this file:

    python -m service.protocols.grpc_proto.generate          # rewrites *_pb2.py, *_pb2.pyi, *_pb2_grpc.py here
    python -m service.protocols.grpc_proto.generate OUTDIR   # writes them to OUTDIR (the staleness test does)

It runs grpcio-tools' protoc (the ``dev`` extra), then makes two edits protoc has no option for: the modules
register in nnserve's own descriptor pool (``pool.POOL``) and import each other by their package path.
tests/grpc/test_proto.py fails when the committed modules differ from what this produces.
"""

from __future__ import annotations

import re
import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
PACKAGE = "service.protocols.grpc_proto"
PROTOS = ("oip.proto", "health.proto", "reflection.proto")


def generate(out: Path) -> list[Path]:
    from grpc_tools import protoc

    with tempfile.TemporaryDirectory() as tmp:
        args = ["protoc", f"-I{HERE}", f"--python_out={tmp}", f"--pyi_out={tmp}", f"--grpc_python_out={tmp}",
                *(str(HERE / p) for p in PROTOS)]
        if protoc.main(args) != 0:
            raise SystemExit("protoc failed")
        written = []
        for path in sorted(Path(tmp).iterdir()):
            text = path.read_text()
            text = text.replace("_descriptor_pool.Default()", "_nnserve_pool.POOL")
            if "_nnserve_pool.POOL" in text:
                text = text.replace("from google.protobuf import descriptor_pool as _descriptor_pool\n",
                                    f"from google.protobuf import descriptor_pool as _descriptor_pool\n"
                                    f"from {PACKAGE} import pool as _nnserve_pool\n")
            text = re.sub(r"^import (\w+_pb2) as ", rf"from {PACKAGE} import \1 as ", text, flags=re.M)
            target = out / path.name
            target.write_text(text)
            written.append(target)
        return written


if __name__ == "__main__":
    for file in generate(Path(sys.argv[1]) if len(sys.argv) > 1 else HERE):
        print(file)
