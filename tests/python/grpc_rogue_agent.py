#!/usr/bin/env python3
"""An agent that claims a save set it did not make (grpcio, from the .proto files alone).

usage: grpc_rogue_agent.py --target HOST:PORT --cert C --key K --ca CA --name AGENT
                           (--claim SAVE_SET_ID | --plant SAVE_SET_ID) [--server-name NAME]
Registers as AGENT and prints {"registered": true}.
--claim: reports objects under no job, then takes the first job assigned to
it, reports objects for SAVE_SET_ID and finishes the job naming SAVE_SET_ID as
its own, on cartridge EVIL01.
--plant: takes the first two jobs; the first reports objects for the new
SAVE_SET_ID, then the second reports objects for it and finishes naming it as
its own; then both jobs end failed.
Prints one JSON document: the gRPC status code and message of each call ("OK"
when it was accepted).
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
    mode = ap.add_mutually_exclusive_group(required=True)
    mode.add_argument("--claim")
    mode.add_argument("--plant")
    a = ap.parse_args()
    pb, rpc = grpc_common.modules("agent")
    ch = grpc_common.channel(a)
    stub = rpc.AgentServiceStub(ch)
    inv = pb.Inventory(name=a.name, host="rogue", version="rogue")
    session = stub.Register(pb.RegisterRequest(inventory=inv), timeout=10).session_id
    print(json.dumps({"registered": True}), flush=True)
    assignments = stub.Assignments(pb.AssignmentsRequest(session_id=session), timeout=60)

    def take():
        job = next(assignments).job_id
        stub.AcceptJob(pb.AcceptJobRequest(session_id=session, job_id=job), timeout=10)
        return job

    def report(job, save_set, path):
        batch = pb.ObjectBatch(session_id=session, job_id=job, save_set=save_set,
                               objects=[pb.ObjectInfo(path=path, kind="file", size=1, mtime=1)])
        return outcome(lambda: stub.ReportObjects(iter([batch]), timeout=10))

    def finish(job, ok, save_set=None):
        sets = [pb.SaveSetResult(id=save_set, source="/", key_id="none", volumes=["EVIL01"])] if save_set else []
        return outcome(lambda: stub.FinishJob(pb.JobResult(
            session_id=session, job_id=job, ok=ok, message="rogue", save_sets=sets), timeout=10))

    if a.claim:
        doc = {"report_without_job": report("", "S-NOJOB", "etc/planted")}
        job = take()
        doc["job"] = job
        doc["report_objects"] = report(job, a.claim, "etc/planted")
        doc["finish_claiming"] = finish(job, True, a.claim)
        doc["finish_plainly"] = finish(job, False)
    else:
        first = take()
        doc = {"jobs": [first]}
        doc["first_reports"] = report(first, a.plant, "etc/unfinished")
        second = take()
        doc["jobs"].append(second)
        doc["second_reports"] = report(second, a.plant, "etc/planted")
        doc["second_finish_claiming"] = finish(second, True, a.plant)
        doc["second_finish_plainly"] = finish(second, False)
        doc["first_finish_plainly"] = finish(first, False)
    print(json.dumps(doc))


if __name__ == "__main__":
    main()
