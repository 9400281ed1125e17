"""(Not named grpc_reflection: that is the name of grpcio's own reflection package, which grpc imports.) Asks the controller's server reflection for its services over both protocols, grpc.reflection.v1 and v1alpha (grpcio's descriptor database speaks only v1alpha), with raw bytes: ServerReflectionRequest{list_services: ""}."""
import argparse
import sys

from grpc_common import add_tls_args, channel

ap = argparse.ArgumentParser()
add_tls_args(ap)
a = ap.parse_args()
ch = channel(a)
for pkg in ("grpc.reflection.v1", "grpc.reflection.v1alpha"):
    call = ch.stream_stream("/%s.ServerReflection/ServerReflectionInfo" % pkg,
                            request_serializer=lambda b: b, response_deserializer=lambda b: b)
    answers = list(call(iter([b"\x3a\x00"]), timeout=10))
    if not any(b"cinta.v1.ConsoleService" in r for r in answers):
        sys.exit("%s: no cinta.v1.ConsoleService in %r" % (pkg, answers))
    print(pkg, "lists cinta.v1.ConsoleService")
