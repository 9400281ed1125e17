#!/usr/bin/env python3
"""A gRPC client of cinta-controller built from the .proto files alone (grpcio).

usage: grpc_console.py --target HOST:PORT --cert C --key K --ca CA --server-name NAME
                       [--run CONTROL_GROUP]
Compiles proto/cinta/v1/*.proto with grpcio-tools into a temporary directory,
lists the agents over mutual TLS and, with --run, starts a control group's
job; prints one JSON document.
"""
import argparse
import json

import grpc_common


def main():
    ap = argparse.ArgumentParser()
    grpc_common.add_tls_args(ap)
    ap.add_argument("--run")
    a = ap.parse_args()
    pb, rpc = grpc_common.modules("console")
    ch = grpc_common.channel(a)
    stub = rpc.ConsoleServiceStub(ch)
    agents = stub.ListAgents(pb.ListAgentsRequest(), timeout=10).agents
    doc = {"agents": [{"name": x.name, "role": x.role, "connected": x.connected} for x in agents]}
    if a.run:
        j = stub.RunControlGroup(pb.RunControlGroupRequest(control_group=a.run), timeout=10)
        doc["job"] = {"id": j.id, "agent": j.agent, "state": j.state, "control_group": j.control_group}
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
