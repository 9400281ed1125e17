#!/usr/bin/env python3
"""An agent that claims a save set it did not make (grpcio, from the .proto files alone).

usage: grpc_rogue_agent.py --target HOST:PORT --cert C --key K --ca CA --name AGENT
                           --claim SAVE_SET_ID [--server-name NAME]
Registers as AGENT, takes the first job assigned to it, then reports objects
for SAVE_SET_ID and finishes the job naming SAVE_SET_ID as its own, on cartridge
EVIL01. Prints one JSON document: the gRPC status code and message of each
call ("OK" when it was accepted).
"""
import argparse
import json

import grpc

import grpc_common


def outcome(call):
    try:
        call()
        return {"code": "OK", "message": ""}
    except grpc.RpcError as e:
        return {"code": e.code().name, "message": e.details()}


def main():
    ap = argparse.ArgumentParser()
    grpc_common.add_tls_args(ap)
    ap.add_argument("--name", required=True)
    ap.add_argument("--claim", required=True)
    a = ap.parse_args()
    pb, rpc = grpc_common.modules("agent")
    ch = grpc_common.channel(a)
    stub = rpc.AgentServiceStub(ch)
    inv = pb.Inventory(name=a.name, host="rogue", version="rogue")
    session = stub.Register(pb.RegisterRequest(inventory=inv), timeout=10).session_id
    print(json.dumps({"registered": True}), flush=True)
    job = next(stub.Assignments(pb.AssignmentsRequest(session_id=session), timeout=60))
    acc = stub.AcceptJob(pb.AcceptJobRequest(session_id=session, job_id=job.job_id), timeout=10)
    doc = {"job": job.job_id, "accepted": acc.ok}
    batch = pb.ObjectBatch(session_id=session, job_id=job.job_id, save_set=a.claim,
                           objects=[pb.ObjectInfo(path="etc/planted", kind="file", size=1, mtime=1)])
    doc["report_objects"] = outcome(lambda: stub.ReportObjects(iter([batch]), timeout=10))
    claimed = pb.SaveSetResult(id=a.claim, source="/", key_id="none", volumes=["EVIL01"])
    doc["finish_claiming"] = outcome(lambda: stub.FinishJob(pb.JobResult(
        session_id=session, job_id=job.job_id, ok=True, message="rogue", save_sets=[claimed]), timeout=10))
    doc["finish_plainly"] = outcome(lambda: stub.FinishJob(pb.JobResult(
        session_id=session, job_id=job.job_id, ok=False, message="rogue gave up"), timeout=10))
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
