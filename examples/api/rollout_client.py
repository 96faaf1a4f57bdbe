#!/usr/bin/python3
"""Drive a Tern rollout over the coordinator's gRPC API from Python.

A stock gRPC client (Debian's python3-grpcio and python3-protobuf), not
ternctl: this is what ops tooling does. The tern.v1 stubs are generated at
first use from proto/ with protoc and grpc_python_plugin (Debian's
protobuf-compiler and protobuf-compiler-grpc) into a cache directory.

    rollout_client.py start web 2.0 --waves 1,50%,100% --bake 30s
    rollout_client.py watch web-7 [--until baking]
    rollout_client.py abort web-7 [--reason TEXT]
    rollout_client.py rollback web-7

Exit codes (the same as ternctl's where they overlap):
    0 success (watch: the rollout succeeded, or --until was reached)
    1 the coordinator refused, or the rollout ended another way
    3 the coordinator could not be reached
    4 no such rollout, service or release
"""

import argparse
import hashlib
import os
import pathlib
import re
import subprocess
import sys
import tempfile
import time

HERE = pathlib.Path(__file__).resolve().parent
PROTO_ROOT = HERE.parent.parent / "proto"


def load_stubs():
    """Generates (once per proto content) and imports the tern.v1 stubs."""
    protos = sorted(PROTO_ROOT.glob("tern/v1/*.proto"))
    digest = hashlib.sha256(b"".join(p.read_bytes() for p in protos)).hexdigest()[:16]
    cache = pathlib.Path(os.environ.get("XDG_CACHE_HOME", pathlib.Path.home() / ".cache"))
    out = cache / "tern-python-stubs" / digest
    if not (out / "tern" / "v1" / "rollout_pb2_grpc.py").exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = pathlib.Path(tempfile.mkdtemp(dir=out.parent))
        cmd = ["protoc", f"-I{PROTO_ROOT}", f"--python_out={tmp}", f"--grpc_out={tmp}",
               "--plugin=protoc-gen-grpc=/usr/bin/grpc_python_plugin"] + [str(p) for p in protos]
        try:
            subprocess.run(cmd, check=True, capture_output=True, text=True)
        except FileNotFoundError:
            sys.exit("rollout_client: protoc not found; apt-get install protobuf-compiler protobuf-compiler-grpc")
        except subprocess.CalledProcessError as e:
            sys.exit(f"rollout_client: generating the tern.v1 stubs failed: {e.stderr.strip()}")
        try:
            tmp.rename(out)
        except OSError:
            pass  # another run generated them at the same time
    sys.path.insert(0, str(out))


try:
    import grpc
    from google.protobuf import duration_pb2
except ImportError:
    sys.exit("rollout_client: needs python3-grpcio and python3-protobuf "
             "(apt-get install python3-grpcio python3-protobuf; run it with /usr/bin/python3)")

load_stubs()
from tern.v1 import rollout_pb2, rollout_pb2_grpc  # noqa: E402  (generated above)

EXIT_REFUSED, EXIT_UNREACHABLE, EXIT_NOT_FOUND = 1, 3, 4
PHASE = {v.number: v.name.removeprefix("ROLLOUT_PHASE_").lower()
         for v in rollout_pb2.RolloutPhase.DESCRIPTOR.values}
STEP = {v.number: v.name.removeprefix("WAVE_STEP_").lower() for v in rollout_pb2.WaveStep.DESCRIPTOR.values}
EVENT = {v.number: v.name.removeprefix("ROLLOUT_EVENT_KIND_").lower()
         for v in rollout_pb2.RolloutEventKind.DESCRIPTOR.values}
TERMINAL = {rollout_pb2.ROLLOUT_PHASE_SUCCEEDED, rollout_pb2.ROLLOUT_PHASE_FAILED,
            rollout_pb2.ROLLOUT_PHASE_ROLLED_BACK, rollout_pb2.ROLLOUT_PHASE_ABORTED}


def fail(what, err):
    """One line: what was asked, what the coordinator said; the exit code by status."""
    code = err.code()
    print(f"rollout_client: {what}: {err.details()} ({code.name})", file=sys.stderr)
    if code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED):
        return EXIT_UNREACHABLE
    if code == grpc.StatusCode.NOT_FOUND:
        return EXIT_NOT_FOUND
    return EXIT_REFUSED


def parse_duration(text):
    m = re.fullmatch(r"(\d+)(ms|s|m|h)", text)
    if not m:
        raise argparse.ArgumentTypeError(f"bad duration {text!r}: use e.g. 500ms, 30s, 5m, 1h")
    ms = int(m.group(1)) * {"ms": 1, "s": 1000, "m": 60_000, "h": 3_600_000}[m.group(2)]
    d = duration_pb2.Duration()
    d.FromMilliseconds(ms)
    return d


def describe(r):
    step = f", wave {r.current_wave + 1}/{len(r.spec.waves)} {STEP[r.wave_step]}" if r.spec.waves else ""
    return (f"{r.id} {PHASE[r.phase]}{step}; {r.failed_hosts} failed of {r.total_hosts} "
            f"(generation {r.generation})")


def cmd_start(stub, args):
    spec = rollout_pb2.RolloutSpec(service=args.service, selector=args.selector or "")
    spec.release.version = args.version
    for size in args.waves.split(","):
        w = spec.waves.add(bake=parse_duration(args.bake))
        if size.endswith("%"):
            w.percent = int(size[:-1])
        else:
            w.hosts = int(size)
    spec.failure_budget.max_failed_hosts = args.max_failed
    try:
        r = stub.StartRollout(rollout_pb2.StartRolloutRequest(spec=spec), timeout=10)
    except grpc.RpcError as e:
        return fail(f"start {args.service} {args.version}", e)
    print(r.id)
    print(describe(r), file=sys.stderr)
    return 0


def cmd_watch(stub, args):
    """Follows the rollout's events. The stream replays the journal first;
    after a dropped connection it resumes after the last sequence seen."""
    after, backoff = 0, 0.2
    while True:
        try:
            for e in stub.WatchRollout(rollout_pb2.WatchRolloutRequest(id=args.id, after_sequence=after)):
                after = max(after, e.sequence)
                backoff = 0.2
                r = e.rollout
                print(f"[{e.sequence:>4}] {EVENT.get(e.kind, e.kind):<22} {e.message}")
                if args.until and r.phase == rollout_pb2.ROLLOUT_PHASE_RUNNING and STEP[r.wave_step] == args.until:
                    print(describe(r))
                    return 0
                if r.phase in TERMINAL:
                    print(describe(r))
                    return 0 if r.phase == rollout_pb2.ROLLOUT_PHASE_SUCCEEDED else EXIT_REFUSED
            return EXIT_REFUSED  # the stream ended without a final phase
        except grpc.RpcError as e:
            if e.code() != grpc.StatusCode.UNAVAILABLE or backoff > 10:
                return fail(f"watch {args.id}", e)
            print(f"rollout_client: coordinator unavailable; retrying in {backoff:.1f}s", file=sys.stderr)
            time.sleep(backoff)
            backoff *= 2


def cmd_command(stub, args):
    """Abort or rollback, fenced by the generation just read: if the rollout
    changes in between, the coordinator refuses (FAILED_PRECONDITION) and
    nothing happens; we read it again and retry once."""
    rpc = {"abort": stub.AbortRollout, "rollback": stub.RollbackRollout}[args.cmd]
    for attempt in range(2):
        try:
            current = stub.GetRollout(rollout_pb2.GetRolloutRequest(id=args.id), timeout=10)
            r = rpc(rollout_pb2.RolloutCommandRequest(id=args.id, generation=current.generation,
                                                      reason=args.reason), timeout=10)
            print(describe(r))
            return 0
        except grpc.RpcError as e:
            if e.code() == grpc.StatusCode.FAILED_PRECONDITION and attempt == 0 and "generation" in e.details():
                continue
            return fail(f"{args.cmd} {args.id}", e)
    return EXIT_REFUSED


def open_channel(args):
    """Mutual TLS (certificate) or TLS plus a bearer token; plaintext only when asked."""
    if args.insecure:
        return grpc.insecure_channel(args.coordinator)
    if not args.ca:
        sys.exit("rollout_client: give --ca with --cert/--key or --token, or --insecure")
    read = lambda path: open(path, "rb").read() if path else None
    creds = grpc.ssl_channel_credentials(read(args.ca), read(args.key), read(args.cert))
    if args.token:
        creds = grpc.composite_channel_credentials(creds, grpc.access_token_call_credentials(args.token))
    return grpc.secure_channel(args.coordinator, creds)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--coordinator", default=os.environ.get("TERN_COORDINATOR", "127.0.0.1:7400"),
                   help="host:port (default: $TERN_COORDINATOR or 127.0.0.1:7400)")
    p.add_argument("--ca", default=os.environ.get("TERN_CA"), help="fleet CA certificate (PEM)")
    p.add_argument("--cert", default=os.environ.get("TERN_CERT"), help="client certificate (PEM); OU is the role")
    p.add_argument("--key", default=os.environ.get("TERN_KEY"), help="client private key (PEM)")
    p.add_argument("--token", default=os.environ.get("TERN_TOKEN"), help="bearer token instead of a certificate")
    p.add_argument("--insecure", action="store_true", default=os.environ.get("TERN_INSECURE") == "1",
                   help="plaintext, for a coordinator started with --insecure")
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("start", help="start a rollout; prints its id")
    s.add_argument("service")
    s.add_argument("version")
    s.add_argument("--waves", default="1,10%,50%,100%")
    s.add_argument("--bake", default="0s")
    s.add_argument("--selector")
    s.add_argument("--max-failed", type=int, default=0)
    w = sub.add_parser("watch", help="follow a rollout until it ends (or --until a wave step)")
    w.add_argument("id")
    w.add_argument("--until", choices=["deploying", "baking", "awaiting_approval"])
    for verb in ("abort", "rollback"):
        c = sub.add_parser(verb, help=f"{verb} a rollout (fenced by its generation)")
        c.add_argument("id")
        c.add_argument("--reason", default="")
    args = p.parse_args()
    with open_channel(args) as channel:
        stub = rollout_pb2_grpc.RolloutServiceStub(channel)
        if args.cmd == "start":
            return cmd_start(stub, args)
        if args.cmd == "watch":
            return cmd_watch(stub, args)
        return cmd_command(stub, args)


if __name__ == "__main__":
    sys.exit(main())
