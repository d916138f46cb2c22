#!/usr/bin/env python3
"""Splits SIPp `-trace_msg` logs into fuzz corpus files.

usage: python3 scripts/fuzz-sipp-split.py SIPP_MESSAGES_LOG...

Every message SIPp sent or received becomes one sip_datagram input; the
messages of each log, back to back, one tcp_stream input; SDP bodies sdp
inputs; INFO bodies info_body inputs (first line the Content-Type). How to
make the logs: fuzz/README.md ("Corpus").
"""
import hashlib, os, re, sys

ROOT = "fuzz/corpus"
SEP = re.compile(r"^-{20,} .*$", re.M)

def put(target, data):
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

def messages(text):
    for block in SEP.split(text):
        head, sep, rest = block.lstrip("\n").partition("\n\n")
        if not sep or "message" not in head:
            continue
        raw = rest.encode("latin-1")
        h, sep, body = raw.partition(b"\r\n\r\n")
        if not sep:
            continue
        m = re.search(rb"(?im)^(?:content-length|l)\s*:\s*(\d+)", h)
        length = int(m.group(1)) if m else 0
        yield h + b"\r\n\r\n" + body[:length], h, body[:length]

for path in sys.argv[1:]:
    text = open(path, encoding="latin-1", newline="").read()
    stream = b""
    for msg, head, body in messages(text):
        put("sip_datagram", msg)
        stream += msg
        ctype = re.search(rb"(?im)^(?:content-type|c)\s*:\s*(.+?)\s*$", head)
        if ctype and body:
            if ctype.group(1).lower().startswith(b"application/sdp"):
                put("sdp", body)
            if head.startswith(b"INFO "):
                put("info_body", ctype.group(1) + b"\n" + body)
    if stream:
        put("tcp_stream", b"\x05" + stream)
