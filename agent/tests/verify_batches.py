"""An auditor's check of a college's batches, with code the agent's authors did not write.

Usage: python3 verify_batches.py DIR   (DIR from `kasip-registry export-batches`)

Loads DIR/agent.pub (PEM, the key the agent enrolled with) with Python's `cryptography`,
verifies every DIR/<seq>.jws (Ed25519 over the JWS signing input) under the key current
at that point, and walks the chain: seq 1, 2, 3, ... with no gap, each `prev` the SHA-256
(hex) of the previous file's exact bytes, `agent` the enrolment key's RFC 7638 thumbprint,
the header's `kid` the signing key's. A `key_rotation` batch, verified under the old key,
names the next key (its thumbprint checked); later batches must verify under it.
From format 2 on, attendance records carry every field of the agent's hash chain: the
chain is re-walked from genesis across all attendance batches, each record the next event
and hashing (SHA-256 over the previous hash and the length-prefixed row, its evidence as
canonical JSON) to its `chain_hash`, so a rewrite of history shows without trusting the
registry's code either. Records of format-1 batches are taken at their stated hash.
Prints "N batches verified, M records, K key rotation(s), E attendance events re-walked"
or exits 1 naming the fault.

Then the registry's timeline rules, from the export alone (DIR/college.json gives the
college's UTC offset; the constants are the registry's, `registry/src/timeline.rs`):
a batch created before the one it follows; a non-kiosk mark stamped more than 60 s
before the previous sealing pass; a mark outside its lesson's window (15 min before its
start to 60 min after its end) that is not a late entry; a late entry without a reason
or a marker; a kiosk scan received more than 2 h after it was made; a mark for a month
whose statement came earlier that is not an adjustment. Prints "T timeline finding(s)"
and one line per finding, "KIND: ids". Findings are for a person to judge, so they do
not fail the check.
"""
import calendar
import base64
import hashlib
import json
import os
import sys

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_public_key


def b64(part):
    return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))


def fail(message):
    print("FAILED: " + message)
    sys.exit(1)


def canonical(value):
    # RFC 8785 for what records hold (strings, integers, objects): sorted keys, no spaces.
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


def row_bytes(record):
    out = bytearray()

    def field(text):
        data = text.encode()
        out.extend(len(data).to_bytes(4, "big"))
        out.extend(data)

    for name in ("id", "lesson", "student_iin", "status", "method", "recorded_at"):
        field(str(record[name]))
    for name in ("device", "token_step", "marked_by", "reason", "corrects"):
        if record.get(name) is None:
            field("0")
        else:
            field("1")
            field(str(record[name]))
    if record.get("evidence") is not None:
        field(canonical(record["evidence"]))
    return bytes(out)


def thumbprint_of(raw):
    jwk = '{"crv":"Ed25519","kty":"OKP","x":"%s"}' % base64.urlsafe_b64encode(raw).decode().rstrip("=")
    return base64.urlsafe_b64encode(hashlib.sha256(jwk.encode()).digest()).decode().rstrip("=")


folder = sys.argv[1]
key = load_pem_public_key(open(os.path.join(folder, "agent.pub"), "rb").read())
thumbprint = thumbprint_of(key.public_bytes(Encoding.Raw, PublicFormat.Raw))
agent_id, key_id, rotations = thumbprint, thumbprint, 0

seqs = sorted(int(name[:-4]) for name in os.listdir(folder) if name.endswith(".jws"))
if seqs != list(range(1, len(seqs) + 1)):
    fail("sequence numbers are not 1..%d: %s" % (len(seqs), seqs))
prev = "0" * 64
records = 0
chain_head, chain_events = bytes(32), 0
for seq in seqs:
    data = open(os.path.join(folder, "%d.jws" % seq), "rb").read()
    header, payload, signature = data.decode().split(".")
    protected = json.loads(b64(header))
    if protected["alg"] not in ("Ed25519", "EdDSA"):
        fail("batch %d: unexpected alg" % seq)
    if protected["kid"] != key_id:
        fail("batch %d: kid is not the current key's thumbprint" % seq)
    try:
        key.verify(b64(signature), (header + "." + payload).encode())
    except InvalidSignature:
        fail("batch %d: the signature does not verify" % seq)
    batch = json.loads(b64(payload))
    if batch["seq"] != seq:
        fail("batch file %d carries seq %d" % (seq, batch["seq"]))
    if batch["prev"] != prev:
        fail("batch %d: prev does not match the hash of batch %d" % (seq, seq - 1))
    if batch["agent"] != agent_id:
        fail("batch %d: agent is not the enrolment key's thumbprint" % seq)
    records += len(batch["records"])
    if batch["kind"] == "attendance":
        for record in batch["records"]:
            if record["id"] != chain_events + 1:
                fail("batch %d: attendance event %d follows event %d" % (seq, record["id"], chain_events))
            if batch["v"] >= 2:
                computed = hashlib.sha256(chain_head + row_bytes(record)).hexdigest()
                if computed != record["chain_hash"]:
                    fail("batch %d: attendance event %d does not hash to its chain_hash: history was rewritten" % (seq, record["id"]))
            chain_head, chain_events = bytes.fromhex(record["chain_hash"]), record["id"]
    if batch["kind"] == "key_rotation":
        for record in batch["records"]:
            raw = b64(record["new_key"])
            if thumbprint_of(raw) != record["new_kid"]:
                fail("batch %d: new_kid is not the thumbprint of new_key" % seq)
            key, key_id = Ed25519PublicKey.from_public_bytes(raw), record["new_kid"]
            rotations += 1
    prev = hashlib.sha256(data).hexdigest()
print("%d batches verified, %d records, %d key rotation(s), %d attendance events re-walked"
      % (len(seqs), records, rotations, chain_events))

# The timeline rules.
BACKFILL_TOLERANCE, OPENS_EARLY, GRACE, LATE_SCAN = 60, 15 * 60, 60 * 60, 2 * 3600
college = json.load(open(os.path.join(folder, "college.json")))
offset = college["utc_offset_secs"]
findings = {}


def finding(kind, ident):
    findings.setdefault(kind, []).append(ident)


def local_unix(date, time):
    year, month, day = (int(part) for part in date.split("-"))
    hours, minutes = (int(part) for part in time.split(":"))
    return calendar.timegm((year, month, day, hours, minutes, 0)) - offset


batches = []
for seq in seqs:
    data = open(os.path.join(folder, "%d.jws" % seq), "rb").read()
    batches.append(json.loads(b64(data.decode().split(".")[1])))
closed = set()
for index, batch in enumerate(batches):
    if index > 0 and batch["created"] < batches[index - 1]["created"]:
        finding("batch_created_not_monotone", batches[index - 1]["seq"])
        finding("batch_created_not_monotone", batch["seq"])
    if batch["kind"] == "month_close":
        closed.update(record["month"] for record in batch["records"])
    if batch["kind"] != "attendance":
        continue
    # The previous sealing pass: skip this pass's own attendance batches (consecutive,
    # one `created`), then the latest attendance batch before them.
    sealed, back, in_pass = None, index - 1, True
    while back >= 0:
        earlier = batches[back]
        if in_pass and earlier["kind"] == "attendance" and earlier["created"] == batch["created"]:
            back -= 1
            continue
        in_pass = False
        if earlier["kind"] == "attendance":
            sealed = earlier["created"]
            break
        back -= 1
    for record in batch["records"]:
        evidence = record.get("evidence") or {}
        if sealed is not None and record["method"] != "qr_kiosk" and record["recorded_at"] < sealed - BACKFILL_TOLERANCE:
            finding("backfilled_mark", record["id"])
        if record.get("end") and record["method"] != "late_entry":
            opens = local_unix(record["date"], record["start"]) - OPENS_EARLY
            closes = local_unix(record["date"], record["end"]) + GRACE
            if not opens <= record["recorded_at"] <= closes:
                finding("mark_outside_window", record["id"])
        blank = lambda name: not (record.get(name) or "").strip()
        if (record["method"] == "late_entry" and (blank("reason") or blank("marked_by"))) or (
            evidence.get("entry") == "adjustment" and record["method"] == "manual" and blank("marked_by")
        ):
            finding("entry_without_reason", record["id"])
        if evidence.get("scanned_at") is not None and evidence.get("received_at") is not None:
            if evidence["received_at"] - evidence["scanned_at"] > LATE_SCAN:
                finding("late_kiosk_scan", record["id"])
        if evidence and record["date"][:7] in closed and evidence.get("entry") != "adjustment":
            finding("mark_after_statement", record["id"])
print("%d timeline finding(s)" % sum(len(ids) for ids in findings.values()))
for kind in sorted(findings):
    print("%s: %s" % (kind, ",".join(str(ident) for ident in findings[kind])))
