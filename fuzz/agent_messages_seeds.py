#!/usr/bin/env python3
"""Writes the seed inputs of fuzz_agent_messages (agent_messages_fuzzer.cc)
into fuzz/corpus/fuzz_agent_messages/: one agent stream each, as that target
reads it (a flags byte, then AgentMessages, each after a 2-byte big-endian
length). The protobuf encoding is done by hand so that nothing beyond
python3 is needed; field numbers are those of proto/tern/v1/agent.proto and
common.proto.

    python3 fuzz/agent_messages_seeds.py
"""
import os
import struct


def varint(n):
    out = bytearray()
    while True:
        b = n & 0x7F
        n >>= 7
        if n:
            out.append(b | 0x80)
        else:
            out.append(b)
            return bytes(out)


def key(field, wire):
    return varint(field << 3 | wire)


def u(field, n):
    return key(field, 0) + varint(n)


def s(field, data):
    if isinstance(data, str):
        data = data.encode()
    return key(field, 2) + varint(len(data)) + data


def release(version, sha="ab" * 32):
    return s(1, version) + s(2, sha)


def slot(color, phase, version, active, weight=100, message=""):
    # SlotStatus: color 1, phase 2, release 3, port 4, pid 5, active 6, weight 7, message 8
    return (u(1, color) + u(2, phase) + s(3, release(version)) + u(4, 9000 + color) + u(5, 4242)
            + u(6, 1 if active else 0) + u(7, weight) + s(8, message))


def status(service, generation, slots, last_good=None):
    # ServiceStatus: service 1, spec_generation 2, slots 3, last_good 4
    out = s(1, service) + u(2, generation) + b"".join(s(3, x) for x in slots)
    if last_good:
        out += s(4, release(last_good))
    return out


def hello(host, labels, services=(), last_command=0):
    # Hello: host_id 1, labels 2 (map entries: key 1, value 2), agent_version 3, protocol 4, services 5
    body = s(1, host)
    for k, v in labels.items():
        body += s(2, s(1, k) + s(2, v))
    body += s(3, "0.1.0") + u(4, 1) + b"".join(s(5, x) for x in services) + u(6, last_command)
    return s(1, body)  # AgentMessage.hello


def heartbeat(sequence, services=None):
    body = u(1, sequence)
    if services is not None:
        body += s(2, b"".join(s(1, x) for x in services))  # ServiceReport.services
    return s(2, body)


def result(command, outcome, code=0, message="", service=None):
    # CommandResult: command_id 1, outcome 2, code 3, message 4, service 5
    body = u(1, command) + u(2, outcome) + u(3, code) + s(4, message)
    if service is not None:
        body += s(5, service)
    return s(3, body)


def event(service, kind, word, message, st=None, command=0):
    # AgentEvent: service 1, kind_word 2, message 3, status 4, command_id 5, kind 6
    body = s(1, service) + s(2, word) + s(3, message)
    if st is not None:
        body += s(4, st)
    return s(4, body + u(5, command) + u(6, kind))


def stream(flags, *messages):
    return bytes([flags]) + b"".join(struct.pack(">H", len(m)) + m for m in messages)


BLUE, GREEN = 1, 2
HEALTHY, UNHEALTHY, CRASHED = 4, 5, 8
SUCCEEDED, FAILED, REFUSED = 1, 2, 3
web_v1 = status("web", 1, [slot(BLUE, HEALTHY, "1.0", True), slot(GREEN, HEALTHY, "0.9", False, 0)], "1.0")
web_down = status("web", 1, [slot(BLUE, UNHEALTHY, "1.0", True, message="probe failed\nGET /healthz: 503")])
web_crashed = status("web", 1, [slot(BLUE, CRASHED, "1.0", True, message="exit 1")])

seeds = {
    # The first message of every stream.
    "hello": stream(0, hello("web-1", {"role": "web"})),
    # A reconnect that reports what runs; the certificate names the host.
    "hello_certified": stream(1, hello("web-1", {"role": "web", "zone": "a"}, [web_v1], last_command=7)),
    "heartbeat_report": stream(0, hello("web-2", {"role": "web"}), heartbeat(1), heartbeat(2, [web_v1])),
    # Answers the spec the coordinator pushes on hello (command 1 = the first sent).
    "result": stream(0, hello("web-3", {"role": "web"}),
                     event("web", 1, "progress", "staging", command=1),
                     result(1, SUCCEEDED, service=web_v1)),
    "result_refused": stream(0, hello("web-4", {"role": "web"}),
                             result(1, REFUSED, 9, "policy: service web not allowed here")),
    "result_foreign": stream(0, hello("db-1", {"role": "db"}),
                             result(0x100000005, FAILED, 2, "x"), result(0x100000006, FAILED, 2, "x"),
                             result(0x100000007, FAILED, 2, "x")),
    "events": stream(0, hello("web-5", {"role": "web"}),
                     event("web", 5, "health_changed", "unhealthy", web_down),
                     event("web", 3, "slot_crashed", "blue crashed", web_crashed),
                     event("web", 4, "slot_restarted", "blue restarted"),
                     event("web", 2, "switched", "to green"),
                     event("web", 6, "mapping_restored", ""),
                     event("web", 7, "operation_interrupted", "deploy 2.0"),
                     event("web", 8, "refused", "untrusted signature\x1b[31m")),
    # An agent from before AgentEventKind: only the word.
    "events_word_only": stream(0, hello("web-6", {"role": "web"}),
                               event("web", 0, "slot_crashed", "crashed", web_crashed)),
    "no_hello": stream(0, heartbeat(1)),
    "hello_twice": stream(0, hello("web-7", {}), hello("web-7", {})),
}

out = os.path.join(os.path.dirname(os.path.abspath(__file__)), "corpus", "fuzz_agent_messages")
os.makedirs(out, exist_ok=True)
for name, data in seeds.items():
    with open(os.path.join(out, name + ".bin"), "wb") as f:
        f.write(data)
