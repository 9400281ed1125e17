"""What the gRPC test clients share: the .proto files compiled with grpcio-tools, and a mutual-TLS channel."""
import importlib
import os
import sys
import tempfile

from grpc_tools import protoc
import grpc


def add_tls_args(ap):
    ap.add_argument("--target", required=True)
    for a in ("--cert", "--key", "--ca"):
        ap.add_argument(a, required=True)
    ap.add_argument("--server-name", default="localhost")


def modules(proto):
    """Compiles proto/cinta/v1/*.proto into a temporary directory; returns
    (messages, stubs) of PROTO ("agent" or "console")."""
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
    out = tempfile.mkdtemp(prefix="cinta-grpc-")
    protos = [os.path.join("cinta", "v1", p + ".proto") for p in ("agent", "console")]
    rc = protoc.main(["protoc", "-I" + root, "--python_out=" + out, "--grpc_python_out=" + out] + protos)
    if rc != 0:
        sys.exit("protoc failed: %d" % rc)
    sys.path.insert(0, out)
    return (importlib.import_module("cinta.v1.%s_pb2" % proto),
            importlib.import_module("cinta.v1.%s_pb2_grpc" % proto))


def channel(a):
    """A mutual-TLS channel to --target with --cert/--key, trusting --ca."""
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(read(a.ca), read(a.key), read(a.cert))
    return grpc.secure_channel(a.target, creds, options=[("grpc.ssl_target_name_override", a.server_name)])
