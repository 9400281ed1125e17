#!/usr/bin/env python3
"""A gRPC client of cinta-controller built from the .proto files alone (grpcio).

usage: grpc_console.py --target HOST:PORT --cert C --key K --ca CA --server-name NAME
                       [--run CONTROL_GROUP]
Compiles proto/cinta/v1/*.proto with grpcio-tools into a temporary directory,
lists the agents over mutual TLS and, with --run, starts a control group's
job; prints one JSON document.
"""
import argparse
import importlib
import json
import os
import sys
import tempfile

from grpc_tools import protoc
import grpc


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--target", required=True)
    for a in ("--cert", "--key", "--ca"):
        ap.add_argument(a, required=True)
    ap.add_argument("--server-name", default="localhost")
    ap.add_argument("--run")
    a = ap.parse_args()
    root = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..", "proto")
    out = tempfile.mkdtemp(prefix="cinta-grpc-")
    protos = [os.path.join("cinta", "v1", p) for p in ("agent.proto", "console.proto")]
    rc = protoc.main(["protoc", "-I" + root, "--python_out=" + out, "--grpc_python_out=" + out] + protos)
    if rc != 0:
        sys.exit("protoc failed: %d" % rc)
    sys.path.insert(0, out)
    pb = importlib.import_module("cinta.v1.console_pb2")
    rpc = importlib.import_module("cinta.v1.console_pb2_grpc")
    read = lambda p: open(p, "rb").read()
    creds = grpc.ssl_channel_credentials(read(a.ca), read(a.key), read(a.cert))
    ch = grpc.secure_channel(a.target, creds, options=[("grpc.ssl_target_name_override", a.server_name)])
    stub = rpc.ConsoleServiceStub(ch)
    agents = stub.ListAgents(pb.ListAgentsRequest(), timeout=10).agents
    doc = {"agents": [{"name": x.name, "role": x.role, "connected": x.connected} for x in agents]}
    if a.run:
        j = stub.RunControlGroup(pb.RunControlGroupRequest(control_group=a.run), timeout=10)
        doc["job"] = {"id": j.id, "agent": j.agent, "state": j.state, "control_group": j.control_group}
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
