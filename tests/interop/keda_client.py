"""An independent KEDA external scaler client for the interop tests.

Compiles the repository's externalscaler.proto with grpcio-tools (protoc as a Python
package), then takes one JSON command per line on stdin and answers each with one JSON line
on stdout:

  {"op": "spec" | "metrics" | "active", "namespace": NS, "name": NAME,
   "metadata": {...}, "metric_name": NAME}      -> {"op", "ok": true, ...} or
                                                    {"op", "ok": false, "code", "message"}
  {"op": "stream", "id": ID, ...same reference}  -> {"op": "stream", "id", "ok": true}, then
                                                    one {"stream": ID, "result": BOOL} per
                                                    message and {"stream": ID, "end": CODE}
  {"op": "quit"}

Usage: keda_client.py PROTO_FILE HOST:PORT OUT_DIR (where the generated modules go)
"""

import json
import os
import sys
import threading

import grpc
from grpc_tools import protoc

_print_lock = threading.Lock()


def emit(obj):
    with _print_lock:
        sys.stdout.write(json.dumps(obj) + "\n")
        sys.stdout.flush()


def compile_proto(proto_file, out):
    os.makedirs(out, exist_ok=True)
    status = protoc.main(
        [
            "protoc",
            "-I" + os.path.dirname(os.path.abspath(proto_file)),
            "--python_out=" + out,
            "--grpc_python_out=" + out,
            os.path.basename(proto_file),
        ]
    )
    if status != 0:
        raise SystemExit("protoc failed on %s" % proto_file)
    sys.path.insert(0, out)
    import externalscaler_pb2
    import externalscaler_pb2_grpc

    return externalscaler_pb2, externalscaler_pb2_grpc


def main():
    proto_file, address, out = sys.argv[1], sys.argv[2], sys.argv[3]
    pb, pb_grpc = compile_proto(proto_file, out)
    channel = grpc.insecure_channel(address)
    stub = pb_grpc.ExternalScalerStub(channel)

    def reference(cmd):
        return pb.ScaledObjectRef(
            name=cmd.get("name", "checkout"),
            namespace=cmd.get("namespace", ""),
            scalerMetadata=cmd.get("metadata", {}),
        )

    def refused(op, err):
        return {"op": op, "ok": False, "code": err.code().name, "message": err.details()}

    def follow(stream_id, call):
        try:
            for message in call:
                emit({"stream": stream_id, "result": message.result})
            emit({"stream": stream_id, "end": "OK"})
        except grpc.RpcError as err:
            emit({"stream": stream_id, "end": err.code().name, "message": err.details()})

    for line in sys.stdin:
        cmd = json.loads(line)
        op = cmd["op"]
        if op == "quit":
            break
        try:
            if op == "spec":
                r = stub.GetMetricSpec(reference(cmd), timeout=10)
                emit(
                    {
                        "op": op,
                        "ok": True,
                        "specs": [
                            {
                                "metricName": s.metricName,
                                "targetSize": s.targetSize,
                                "targetSizeFloat": s.targetSizeFloat,
                            }
                            for s in r.metricSpecs
                        ],
                    }
                )
            elif op == "metrics":
                request = pb.GetMetricsRequest(
                    scaledObjectRef=reference(cmd), metricName=cmd.get("metric_name", "")
                )
                r = stub.GetMetrics(request, timeout=10)
                emit(
                    {
                        "op": op,
                        "ok": True,
                        "values": [
                            {
                                "metricName": v.metricName,
                                "metricValue": v.metricValue,
                                "metricValueFloat": v.metricValueFloat,
                            }
                            for v in r.metricValues
                        ],
                    }
                )
            elif op == "active":
                r = stub.IsActive(reference(cmd), timeout=10)
                emit({"op": op, "ok": True, "result": r.result})
            elif op == "stream":
                call = stub.StreamIsActive(reference(cmd))
                threading.Thread(target=follow, args=(cmd["id"], call), daemon=True).start()
                emit({"op": op, "id": cmd["id"], "ok": True})
            else:
                emit({"op": op, "ok": False, "code": "UNKNOWN_COMMAND", "message": op})
        except grpc.RpcError as err:
            emit(refused(op, err))
    channel.close()


if __name__ == "__main__":
    main()
