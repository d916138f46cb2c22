#!/usr/bin/env python3
"""Writes the hand-made and derived seed files of the fuzz corpus.

Run from the repository root: python3 scripts/fuzz-seeds.py
Sources: tests/data/rfc4475 (RFC 4475 torture messages), tests/data/dtmf
(SIPp's RFC 4733 captures), scenarios/*.toml, and small hand-written
examples of SDP, INFO bodies, admin JSON bodies and CSV imports. SIP
messages captured from SIPp traffic are added by scripts/fuzz-sipp-corpus.sh.
File names are the content's SHA-1, as libFuzzer names corpus entries.
"""
import glob, hashlib, os, struct

ROOT = "fuzz/corpus"

def put(target, data):
    if isinstance(data, str):
        data = data.encode()
    d = os.path.join(ROOT, target)
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, hashlib.sha1(data).hexdigest()), "wb") as f:
        f.write(data)

# SIP: every torture message as a datagram, and as a TCP stream (first byte
# = chunk size selector), plus one stream of three messages back to back.
torture = [open(p, "rb").read() for p in sorted(glob.glob("tests/data/rfc4475/*.sip"))]
for m in torture:
    put("sip_datagram", m)
    put("tcp_stream", b"\x07" + m)
put("tcp_stream", b"\x00" + b"\r\n\r\n".join(torture[:3]) + b"\r\n\r\n")

# SDP bodies found in the torture messages, and the shapes the tests use.
for m in torture:
    head, sep, body = m.partition(b"\r\n\r\n")
    if sep and b"v=0" in body:
        put("sdp", body)
put("sdp", "v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nc=IN IP4 127.0.0.1\r\nt=0 0\r\n"
    "m=audio 40000 RTP/AVP 0 8 101\r\na=rtpmap:0 PCMU/8000\r\na=rtpmap:8 PCMA/8000\r\n"
    "a=rtpmap:101 telephone-event/8000\r\na=fmtp:101 0-15\r\na=ptime:20\r\na=sendrecv\r\n")
put("sdp", "v=0\r\no=user1 53655765 2353687637 IN IP6 ::1\r\ns=-\r\nc=IN IP6 ::1\r\nt=0 0\r\n"
    "m=video 5000 RTP/AVP 31\r\nm=audio 6000 RTP/AVP 18 8\r\nc=IN IP4 0.0.0.0\r\na=recvonly\r\n")

# RTP: the packets of SIPp's RFC 4733 captures, as [len][gap ms][packet]
# records; one file per capture.
def pcap_udp_payloads(path):
    data = open(path, "rb").read()
    magic = struct.unpack("<I", data[:4])[0]
    endian = "<" if magic in (0xA1B2C3D4, 0xA1B23C4D) else ">"
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    off, out = 24, []
    while off + 16 <= len(data):
        _, _, incl, _ = struct.unpack(endian + "IIII", data[off:off + 16])
        frame = data[off + 16:off + 16 + incl]
        off += 16 + incl
        l2 = {1: 14, 113: 16, 0: 4}.get(linktype, 14)
        ip = frame[l2:]
        ihl = (ip[0] & 0x0F) * 4
        out.append(ip[ihl + 8:])
    return out

for p in sorted(glob.glob("tests/data/dtmf/*.pcap")):
    recs = b""
    for pkt in pcap_udp_payloads(p):
        recs += bytes([min(len(pkt), 255), 20]) + pkt[:255]
    put("rtp", recs)
# A PCMU frame of silence from another SSRC, then an event packet.
pcmu = bytes([0x80, 0x00, 0x00, 0x01, 0, 0, 0, 160, 1, 2, 3, 4]) + b"\xff" * 160
ev = bytes([0x80, 0xE5, 0x00, 0x02, 0, 0, 1, 64, 1, 2, 3, 4, 5, 0x0A, 0x00, 0xA0])
put("rtp", bytes([len(pcmu), 20]) + pcmu + bytes([len(ev), 20]) + ev)

# SIP INFO bodies: first line the Content-Type.
put("info_body", "application/dtmf-relay\nSignal=5\r\nDuration=160\r\n")
put("info_body", "application/dtmf-relay\nSignal= #\r\nDuration= 250\r\n")
put("info_body", "application/dtmf\n*")
put("info_body", "Application/DTMF-Relay; charset=utf-8\nsignal=11\n")

# Scenarios as shipped.
for p in sorted(glob.glob("scenarios/*.toml")):
    put("scenario", open(p, "rb").read())

# Admin API bodies: first byte = route (a = PATCH /api/tenant, ...).
admin = [
    'a{"name": "Fabrikam", "conference_id_mode": "static", "leader_pin_length": 5}',
    'a{"send_emails_automatically": false, "migrate_meetings_automatically": true}',
    'b{"number": "+14255550199", "kind": "toll_free", "default": true}',
    'b{"number": "tel:+442071234567"}',
    'c{"email": "bob@contoso.com", "display_name": "Bob"}',
    'd{"display_name": "Alice", "conference_id": "7654321", "no_email": true}',
    'd{"provider": {"third_party": {"name": "InterCall", "numbers": ["+18005550100"]}}, "conference_id": "12345678", "replace_provider": true}',
    'e{"no_email": true}',
    'e',
    'f{"conference_id": "7654321"}',
    'g{}',
    'h{"organizer": "alice@contoso.com", "subject": "Weekly", "start": "+2h"}',
    'h{"organizer": "alice@contoso.com", "subject": "Review", "start": "2027-01-05T10:00:00Z"}',
    'i{"user": "alice@contoso.com"}',
    'j{"by": "2h 30m"}',
]
for b in admin:
    put("admin_json", b)

# CSV imports.
put("csv_import", "email,display_name\nbob@contoso.com,Bob\ncarol@contoso.com,Carol\n")
put("csv_import", "email,display_name,provider,conference_id,provider_numbers,default_service_number\n"
    "dan@contoso.com,\"Dan \"\"D\"\" Smith\",InterCall,12345678,+18005550100;+18005550101,\n"
    "eve@contoso.com,Eve,microsoft,7777777,,+14255550100\n")
put("csv_import", "email\r\nnot-an-email\r\n")
