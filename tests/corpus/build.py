#!/usr/bin/env python3
"""Builds the agent corpus from the Windows events in events/*.xml.

For each agent, the same events are written as the requests that agent sends with its default
settings (and the project's examples/agents/ configuration): one `<agent>/dc01.http` (the DC01
events, as one batch or, for NXLog, one request per event) and one `<agent>/evtx-crate.http` (the
three real records from the evtx crate, one request each, since they lie years apart). Each
renderer below follows the agent's source code, cited in SOURCES.md and in the comment lines of
the files it writes.

Next to each request file, `<name>.truth.json` holds the events' own values, read from the XML
by `truth()` alone (Python's ElementTree), never from the connector's code or from a renderer.

Run from the repository root: python3 tests/corpus/build.py   (deterministic; no network)
"""

import datetime as dt
import json
import pathlib
import xml.etree.ElementTree as ET
from zoneinfo import ZoneInfo

HERE = pathlib.Path(__file__).resolve().parent
NS = "{http://schemas.microsoft.com/win/2004/08/events/event}"
# The DC's time zone for the agents that render local time (Fluent Bit, NXLog): Windows'
# "W. Europe Standard Time" (CET/CEST), the zone of Europe/Berlin.
DC_TZ = ZoneInfo("Europe/Berlin")
# When a Fluent Bit agent read a record: this long after the event (its HEC `time` is the read
# time, `flb_log_event_encoder_set_current_timestamp` in pack.c).
READ_DELAY = dt.timedelta(milliseconds=1520)
# The backlog case: the July 4740 is read (with the rest of the batch) in November.
FLUENT_BIT_READ_AT = dt.datetime(2026, 11, 21, 23, 30, 12, 410000, tzinfo=dt.timezone.utc)

DC01_ORDER = ["4740-july", "4624", "4672", "4625", "4634", "4720", "4728", "4740", "4768", "4769",
              "4776", "5136", "1102", "7045", "4771"]
REAL = ["4608", "4688", "4624"]


# ---------------------------------------------------------------------------------------------
# The event as Windows recorded it.

def parse(path):
    root = ET.parse(path).getroot()
    s = root.find(NS + "System")
    g = lambda tag: s.find(NS + tag)
    prov = g("Provider")
    eid = g("EventID")
    ex = g("Execution")
    sec = g("Security")
    e = {
        "file": path.name,
        "path": path,
        "provider": prov.get("Name"),
        "provider_guid": prov.get("Guid"),
        "event_source": prov.get("EventSourceName"),
        "event_id": int(eid.text),
        "qualifiers": int(eid.get("Qualifiers")) if eid.get("Qualifiers") is not None else None,
        "version": int(g("Version").text) if g("Version") is not None else None,
        "level": int(g("Level").text),
        "task": int(g("Task").text),
        "opcode": int(g("Opcode").text) if g("Opcode") is not None else 0,
        "keywords": int(g("Keywords").text, 16),
        "system_time": g("TimeCreated").get("SystemTime"),
        "record_id": int(g("EventRecordID").text),
        "pid": int(ex.get("ProcessID")) if ex is not None else 0,
        "tid": int(ex.get("ThreadID")) if ex is not None else 0,
        "channel": g("Channel").text,
        "computer": g("Computer").text,
        "user_id": sec.get("UserID") if sec is not None else None,
        "data": [],          # EventData: [(Name, value)]
        "user_data": None,   # (root element name, [(child, value)])
    }
    ed = root.find(NS + "EventData")
    if ed is not None:
        for d in ed.findall(NS + "Data"):
            e["data"].append((d.get("Name"), d.text or ""))
    ud = root.find(NS + "UserData")
    if ud is not None and len(ud):
        inner = ud[0]
        local = lambda t: t.split("}", 1)[-1]
        e["user_data"] = (local(inner.tag), [(local(c.tag), c.text or "") for c in inner])
    e["time"] = parse_system_time(e["system_time"])
    return e


def parse_system_time(s):
    """SystemTime to (datetime in whole microseconds, the 100 ns remainder)."""
    date, frac = s.rstrip("Z").split(".")
    base = dt.datetime.fromisoformat(date).replace(tzinfo=dt.timezone.utc)
    frac = (frac + "000000000")[:9]
    return base, int(frac)  # (whole seconds, nanoseconds)


def truth(e):
    fields = e["user_data"][1] if e["user_data"] else e["data"]
    return {
        "time": e["system_time"],
        "event_id": e["event_id"],
        "computer": e["computer"],
        "channel": e["channel"],
        "record_id": e["record_id"],
        "provider": e["provider"],
        "data": {k: v for k, v in fields},
    }


# ---------------------------------------------------------------------------------------------
# Shared helpers.

def epoch_ns(e):
    base, ns = e["time"]
    return int(base.timestamp()) * 1_000_000_000 + ns


def utc_at(ns):
    return dt.datetime.fromtimestamp(ns // 1_000_000_000, dt.timezone.utc)


def ms_floor_iso(e):
    ns = epoch_ns(e)
    return utc_at(ns).strftime("%Y-%m-%dT%H:%M:%S") + ".%03dZ" % (ns % 1_000_000_000 // 1_000_000)


def seconds(e):
    return epoch_ns(e) // 1_000_000_000


MESSAGES = {
    4608: "Windows is starting up.",
    4624: "An account was successfully logged on.",
    4625: "An account failed to log on.",
    4634: "An account was logged off.",
    4672: "Special privileges assigned to new logon.",
    4688: "A new process has been created.",
    4720: "A user account was created.",
    4728: "A member was added to a security-enabled global group.",
    4740: "A user account was locked out.",
    4768: "A Kerberos authentication ticket (TGT) was requested.",
    4769: "A Kerberos service ticket was requested.",
    4771: "Kerberos pre-authentication failed.",
    4776: "The computer attempted to validate the credentials for an account.",
    5136: "A directory service object was modified.",
    1102: "The audit log was cleared.",
    7045: "A service was installed in the system.",
}
TASKS = {12288: "Security State Change", 12544: "Logon", 12545: "Logoff", 12548: "Special Logon",
         13312: "Process Creation", 13824: "User Account Management",
         13826: "Security Group Management", 14336: "Credential Validation",
         14337: "Kerberos Service Ticket Operations", 14339: "Kerberos Authentication Service",
         14081: "Directory Service Changes", 104: "Log clear", 0: "None"}
LEVELS = {0: "Information", 4: "Information", 2: "Error", 3: "Warning", 1: "Critical"}


def keyword_names(e):
    k = e["keywords"]
    if k & 0x0020000000000000:
        return ["Audit Success"]
    if k & 0x0010000000000000:
        return ["Audit Failure"]
    if k & 0x0080000000000000:
        return ["Classic"]
    return []


def message(e):
    return MESSAGES[e["event_id"]]


def user_fields(e):
    return e["user_data"][1] if e["user_data"] else e["data"]


# The EVT_VARIANT type EvtRender(EvtRenderEventValues) gives each field (the manifest's inType),
# which decides how Fluent Bit packs it (pack_string_inserts in plugins/in_winevtlog/pack.c).
SID = {"SubjectUserSid", "TargetUserSid", "TargetSid", "MemberSid", "ServiceSid", "MandatoryLabel"}
HEX64 = {"SubjectLogonId", "TargetLogonId", "TargetLinkedLogonId"}
HEX32 = {"Status", "SubStatus", "TicketOptions", "TicketEncryptionType", "OldUacValue", "NewUacValue"}
UINT32 = {"LogonType", "KeyLength"}
POINTER = {"ProcessId", "NewProcessId"}
GUIDS = {"LogonGuid", "OpCorrelationID", "ObjectGUID"}


def fluent_bit_insert(name, value, event_id):
    if event_id == 7045 or value in ("", "-") and name not in SID:
        return value
    if name in UINT32:
        return int(value)
    if name in POINTER:
        return int(value, 16)
    if name in HEX64 or name in HEX32:
        return "0x%x" % int(value, 16)
    if name in GUIDS:
        return value.upper()            # StringFromCLSID: upper-case hex in braces
    return value


# ---------------------------------------------------------------------------------------------
# The agents.

def winlogbeat(e):
    """Winlogbeat 8.x event (winlog.* as in x-pack/winlogbeat/module/security/test/testdata/
    collection/*.golden.json) as Logstash's `http` output re-serialises it: @timestamp at the
    millisecond precision libbeat's Logstash output encodes it with (libbeat/outputs/codec/
    common.go, `yyyy-MM-dd'T'HH:mm:ss.SSS'Z'`), plus @version and the beats input's tag."""
    ok = bool(e["keywords"] & 0x0020000000000000)
    fail = bool(e["keywords"] & 0x0010000000000000)
    winlog = {
        "api": "wineventlog",
        "channel": e["channel"],
        "computer_name": e["computer"],
        "event_id": str(e["event_id"]),
        "keywords": keyword_names(e),
        "opcode": "Info",
        "process": {"pid": e["pid"], "thread": {"id": e["tid"]}},
        "provider_guid": e["provider_guid"].upper() if e["provider_guid"] else None,
        "provider_name": e["provider"],
        "record_id": e["record_id"],
        "task": TASKS.get(e["task"], str(e["task"])),
    }
    if e["provider_guid"] is None:
        del winlog["provider_guid"]
    if e["version"]:
        winlog["version"] = e["version"]
    if e["user_data"]:
        ud = dict(e["user_data"][1])
        ud["xml_name"] = e["user_data"][0]
        winlog["user_data"] = dict(sorted(ud.items()))
    elif e["data"]:
        winlog["event_data"] = {k: v for k, v in e["data"] if v != ""}
    if e["user_id"]:
        winlog["user"] = {"identifier": e["user_id"]}
    event = {"action": TASKS.get(e["task"], ""), "code": str(e["event_id"]), "kind": "event",
             "provider": e["provider"]}
    if ok or fail:
        event["outcome"] = "success" if ok else "failure"
    return {
        "@timestamp": ms_floor_iso(e),
        "@version": "1",
        "agent": {"ephemeral_id": "5b0e2f3c-2d41-4a8e-9a4f-0f1d7e6c3b21", "id": "0f4d8a6e-7c1b-4e55-8d2a-3b9c1e7f5a60",
                  "name": e["computer"].split(".")[0], "type": "winlogbeat", "version": "8.15.3"},
        "ecs": {"version": "8.0.0"},
        "event": event,
        "host": {"name": e["computer"]},
        "log": {"level": LEVELS.get(e["level"], "information").lower()},
        "message": message(e),
        "tags": ["beats_input_codec_plain_applied"],
        "winlog": winlog,
    }


def vector(e):
    """Vector `windows_event_log` (legacy namespace) record: src/sources/windows_event_log/
    parser.rs set_windows_fields + xml_parser.rs (EventData: named <Data> to event_data, unnamed
    to string_inserts; UserData: only <Data> children, so none for 1102's LogFileCleared),
    plus `source_type`. Vector objects are BTreeMaps: keys serialise sorted. The HEC sink
    (src/sinks/splunk_hec/logs/sink.rs process_log) removes `timestamp` from the event."""
    r = {
        "channel": e["channel"], "computer": e["computer"], "event_id": e["event_id"],
        "host": e["computer"], "level": LEVELS.get(e["level"], "Unknown"), "level_value": e["level"],
        "message": message(e), "process_id": e["pid"], "provider_name": e["provider"],
        "record_id": e["record_id"], "source_type": "windows_event_log", "thread_id": e["tid"],
    }
    if e["provider_guid"]:
        r["provider_guid"] = e["provider_guid"]
    if e["user_id"]:
        r["user_id"] = e["user_id"]
    if e["task"]:
        r["task"] = e["task"]
    if e["opcode"]:
        r["opcode"] = e["opcode"]
    if e["keywords"]:
        r["keywords"] = "0x%016X" % e["keywords"]
    if e["version"] is not None:
        r["version"] = e["version"]
    if e["qualifiers"] is not None:
        r["qualifiers"] = e["qualifiers"]
    named = {k: v for k, v in e["data"] if k}
    if named:
        r["event_data"] = dict(sorted(named.items()))
    inserts = [v for k, v in e["data"] if not k]
    if inserts:
        r["string_inserts"] = inserts
    return dict(sorted(r.items()))


def vector_hec(e):
    # encoder.rs HecData: event, fields, time, host (serde field order); time = timestamp_millis / 1000
    ms = epoch_ns(e) // 1_000_000
    return {"event": vector(e), "fields": {}, "time": ms / 1000, "host": e["computer"]}


def local_with_offset(e, read_at):
    """pack_filetime (plugins/in_winevtlog/pack.c): the event's local wall-clock time
    (SystemTimeToTzSpecificLocalTimeEx) with the offset of the zone's state *now*
    (GetDynamicTimeZoneInformation's current Bias + Standard/DaylightBias), seconds only."""
    local = utc_at(epoch_ns(e)).astimezone(DC_TZ)
    off = read_at.astimezone(DC_TZ).utcoffset()
    mins = int(off.total_seconds() // 60)
    sign = "+" if mins >= 0 else "-"
    mins = abs(mins)
    return local.strftime("%Y-%m-%d %H:%M:%S") + " %s%02d%02d" % (sign, mins // 60, mins % 60)


def fluent_bit_record(e, read_at):
    """in_winevtlog default record: winevtlog_pack_event in plugins/in_winevtlog/pack.c."""
    inserts = [fluent_bit_insert(k, v, e["event_id"]) for k, v in user_fields(e)]
    user = ""
    if e["user_id"]:
        user = e["user_id"] if not e["user_id"].startswith("S-1-5-21-") else "EXAMPLE\\opsadmin"
    return {
        "ProviderName": e["provider"],
        "ProviderGuid": e["provider_guid"].upper() if e["provider_guid"] else "",
        "Qualifiers": e["qualifiers"] if e["qualifiers"] is not None else "",
        "EventID": e["event_id"], "Version": e["version"] or 0, "Level": e["level"], "Task": e["task"],
        "Opcode": e["opcode"], "Keywords": "0x%x" % e["keywords"],
        "TimeCreated": local_with_offset(e, read_at),
        "EventRecordID": e["record_id"], "ActivityID": "", "RelatedActivityID": "",
        "ProcessID": e["pid"], "ThreadID": e["tid"], "Channel": e["channel"], "Computer": e["computer"],
        "UserID": user, "Message": message(e), "StringInserts": inserts,
    }


def compact_xml(e):
    """The event as EvtRender(EvtRenderEventXml) gives it: one line, single-quoted attributes.
    The DC01 files are already in that form; the evtx crate's renderings are re-serialised."""
    text = e["path"].read_text().strip()
    if text.startswith("<Event xmlns='"):
        return text
    root = ET.fromstring(text)
    ET.register_namespace("", NS[1:-1])
    out = ET.tostring(root, encoding="unicode", short_empty_elements=True)
    import re
    out = re.sub(r">\s+<", "><", out)
    out = re.sub(r'(\w+)="([^"]*)"', r"\1='\2'", out)
    out = out.replace(" />", "/>")
    return out


def fluent_bit_xml_record(e):
    """render_event_as_xml: winevtlog_pack_xml_event in pack.c: System (the event XML),
    Message, StringInserts."""
    inserts = [fluent_bit_insert(k, v, e["event_id"]) for k, v in user_fields(e)]
    return {"System": compact_xml(e), "Message": message(e), "StringInserts": inserts}


def otel_body(e):
    """windowseventlog receiver body (pkg/stanza/operator/input/windows xml.go formattedBody, as
    xml_test.go at 138b5c08 expects it): named Data only (unnamed as DataN), no UserData; Go
    serialises map keys sorted."""
    data = {}
    n = 0
    for k, v in e["data"]:
        if k:
            data[k] = v
        else:
            n += 1
            data["Data%d" % n] = v
    b = {
        "channel": e["channel"], "computer": e["computer"], "event_data": dict(sorted(data.items())),
        "event_id": {"id": e["event_id"], "qualifiers": e["qualifiers"] or 0},
        "execution": {"process_id": e["pid"], "thread_id": e["tid"]},
        "keywords": keyword_names(e) or ["0x%x" % e["keywords"]],
        "level": LEVELS.get(e["level"], str(e["level"])), "message": message(e),
        "opcode": "Info",
        "provider": {"event_source": e["event_source"] or "", "guid": e["provider_guid"] or "", "name": e["provider"]},
        "record_id": e["record_id"], "system_time": e["system_time"],
        "task": TASKS.get(e["task"], str(e["task"])), "version": e["version"] or 0,
    }
    if e["user_id"]:
        b["security"] = {"user_id": e["user_id"]}
    return dict(sorted(b.items()))


def otel_time(e):
    # splunkhecexporter nanoTimestampToEpochMilliseconds: Duration.Round(time.Millisecond).Seconds()
    ns = epoch_ns(e)
    return round(ns / 1_000_000) / 1000


def otel_hec(e, body):
    # splunk.Event field order: time, host, source, sourcetype, (index omitempty), event, fields
    return {"time": otel_time(e), "host": "unknown", "source": "windowseventlog",
            "sourcetype": "windows:eventlog", "event": body, "fields": {}}


def nxlog(e, utc=False):
    """im_msvistalog + to_json() (NXLog CE reference manual, im_msvistalog fields): datetimes as
    local time without a zone (xm_json's default DateFormat), EventData/UserData fields at the top
    level, Keywords signed. `utc`: with `DateFormat YYYY-MM-DDThh:mm:ss.sUTC` as
    examples/agents/nxlog.conf sets it (NXLog datetimes hold microseconds)."""
    k = e["keywords"]
    kw = k - (1 << 64) if k >= 1 << 63 else k
    ok = bool(k & 0x0020000000000000)
    fail = bool(k & 0x0010000000000000)
    etype = "AUDIT_SUCCESS" if ok else "AUDIT_FAILURE" if fail else "INFO"
    sev = (4, "ERROR") if fail else (2, "INFO")
    local = utc_at(epoch_ns(e)).astimezone(DC_TZ)
    us = epoch_ns(e) % 1_000_000_000 // 1000
    fmt = (lambda t: t.astimezone(dt.timezone.utc).replace(microsecond=us).strftime("%Y-%m-%dT%H:%M:%S.%fZ")) \
        if utc else (lambda t: t.strftime("%Y-%m-%d %H:%M:%S"))
    r = {
        "EventTime": fmt(local), "Hostname": e["computer"], "Keywords": kw,
        "EventType": etype, "SeverityValue": sev[0], "Severity": sev[1], "EventID": e["event_id"],
        "SourceName": e["provider"],
    }
    if e["provider_guid"]:
        r["ProviderGuid"] = e["provider_guid"].upper()
    r.update({"Version": e["version"] or 0, "Task": e["task"], "OpcodeValue": e["opcode"],
              "RecordNumber": e["record_id"], "ProcessID": e["pid"], "ThreadID": e["tid"],
              "Channel": e["channel"]})
    if e["user_id"]:
        r.update({"Domain": "EXAMPLE", "AccountName": "opsadmin", "UserID": e["user_id"], "AccountType": "User"})
    r.update({"Message": message(e), "Category": TASKS.get(e["task"], "None"), "Opcode": "Info"})
    for name, v in user_fields(e):
        if name:
            r[name] = v
    recv = fmt(local + dt.timedelta(seconds=1))
    r.update({"EventReceivedTime": recv, "SourceModuleName": "eventlog", "SourceModuleType": "im_msvistalog"})
    return r


# ---------------------------------------------------------------------------------------------
# Writing the files.

def dumps(v):
    return json.dumps(v, ensure_ascii=False, separators=(",", ":"))


def write_case(agent, name, header, requests, truths):
    d = HERE / agent
    d.mkdir(exist_ok=True)
    parts = []
    for i, (comment, line, headers, body) in enumerate(requests):
        block = "".join("# %s\n" % c for c in comment)
        block += line + "\n" + "".join("%s: %s\n" % h for h in headers) + "\n" + body + "\n"
        parts.append(block)
    text = "".join("# %s\n" % c for c in header) + "\n###\n".join(parts)
    (d / (name + ".http")).write_text(text)
    (d / (name + ".truth.json")).write_text(json.dumps(truths, indent=1, ensure_ascii=False) + "\n")


def main():
    paths = {k: HERE / "events" / ("dc01-%s.xml" % k) for k in DC01_ORDER}
    real = {k: HERE / "events" / ("evtx-crate-%s.xml" % k) for k in REAL}
    dc01 = [parse(paths[k]) for k in DC01_ORDER]
    crate = [parse(real[k]) for k in REAL]
    src = lambda evs: "events: " + ", ".join("events/" + e["file"] for e in evs)

    hec_auth = ("Authorization", "Splunk <ad-ingest key>")

    # Winlogbeat -> Logstash `http` output (examples/agents/logstash.conf): a JSON array.
    def wlb(evs):
        return ("POST /v1/events",
                [("Authorization", "Bearer <ad-ingest key>"), ("Content-Type", "application/json"),
                 ("Content-Encoding", "gzip"), ("X-Agent-Id", "logstash-01")],
                dumps([winlogbeat(e) for e in evs]))
    head = ["Winlogbeat 8.x -> Logstash beats input -> Logstash http output (examples/agents/logstash.conf:",
            "format json_batch, http_compression true). The body is shown decompressed; the harness gzips it.",
            "time-precision: ms (libbeat's Logstash output encodes @timestamp with milliseconds)"]
    for name, evs in (("dc01", dc01), ("evtx-crate", crate)):
        reqs = [([], *wlb([e])) for e in evs] if name == "evtx-crate" else [([], *wlb(evs))]
        write_case("winlogbeat-logstash", name, head + [src(evs)], reqs, [truth(e) for e in evs])

    # The same Winlogbeat events inside the connector's envelope (a forwarder of one's own).
    def wlb_envelope(evs, n):
        body = {"agent": {"id": "wlb-dc01", "hostname": "DC01.corp.example", "version": "8.17.0"},
                "batch_id": "wlb-dc01-%06d" % n, "events": [winlogbeat(e) for e in evs]}
        return ("POST /v1/events", [("Authorization", "Bearer <ad-ingest key>"),
                                    ("Content-Type", "application/json")], dumps(body))
    head = ["Winlogbeat events in the envelope {agent, batch_id, events} (README, wire contract).",
            "time-precision: ms (as Winlogbeat's @timestamp)"]
    for name, evs in (("dc01", dc01), ("evtx-crate", crate)):
        reqs = [([], *wlb_envelope([e], i)) for i, e in enumerate(evs)] if name == "evtx-crate" \
            else [([], *wlb_envelope(evs, 0))]
        write_case("winlogbeat-envelope", name, head + [src(evs)], reqs, [truth(e) for e in evs])

    # Vector windows_event_log -> `http` sink (encoding.codec json, framing newline_delimited):
    # the event keeps its `timestamp` (Vector's JSON encoding: RFC 3339, fraction as chrono's
    # AutoSi writes it).
    def vec_http(evs):
        recs = []
        for e in evs:
            ns = epoch_ns(e) % 1_000_000_000
            frac = "" if ns == 0 else ".%03d" % (ns // 1_000_000) if ns % 1_000_000 == 0 else \
                ".%06d" % (ns // 1000) if ns % 1000 == 0 else ".%09d" % ns
            r = dict(vector(e))
            r["timestamp"] = utc_at(epoch_ns(e)).strftime("%Y-%m-%dT%H:%M:%S") + frac + "Z"
            recs.append(dict(sorted(r.items())))
        return ("POST /v1/events", [("Authorization", "Bearer <ad-ingest key>"),
                                    ("Content-Type", "application/x-ndjson"), ("X-Agent-Id", "vector-dc01")],
                "\n".join(dumps(r) for r in recs))
    head = ["Vector windows_event_log -> http sink, codec json, framing newline_delimited, X-Agent-Id header.",
            "time-precision: full (Vector keeps SystemTime's 100 ns)"]
    for name, evs in (("dc01", dc01), ("evtx-crate", crate)):
        reqs = [([], *vec_http([e])) for e in evs] if name == "evtx-crate" else [([], *vec_http(evs))]
        write_case("vector-http", name, head + [src(evs)], reqs, [truth(e) for e in evs])

    # Vector windows_event_log -> splunk_hec_logs (examples/agents/vector.yaml).
    def vec(evs):
        return ("POST /services/collector/event",
                [hec_auth, ("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
                 ("X-Splunk-Request-Channel", "3f0c9a52-6d1e-4b7a-9c2f-0e8d4a1b7c55")],
                "".join(dumps(vector_hec(e)) for e in evs))
    head = ["Vector windows_event_log -> splunk_hec_logs, encoding.codec json, compression gzip",
            "(examples/agents/vector.yaml). HEC objects concatenated; the sink removed `timestamp` from each",
            "event and sent it as HEC `time` (timestamp_millis / 1000). Body shown decompressed.",
            "time-precision: ms (only HEC `time` carries the event time)"]
    for name, evs in (("dc01", dc01), ("evtx-crate", crate)):
        reqs = [([], *vec([e])) for e in evs] if name == "evtx-crate" else [([], *vec(evs))]
        write_case("vector-hec", name, head + [src(evs)], reqs, [truth(e) for e in evs])

    # Fluent Bit winevtlog -> out_splunk (examples/agents/fluent-bit.yaml).
    def fb(evs, read_at, xml=False, zone=None):
        body = ""
        for e in evs:
            t = read_at(e)
            rec = fluent_bit_xml_record(e) if xml else fluent_bit_record(e, t)
            hec = {"time": round(t.timestamp(), 2), "event": rec}
            if zone:
                # out_splunk `event_field timezone <zone>`: HEC `fields`.
                hec["fields"] = {"timezone": zone}
            body += dumps(hec)
        return ("POST /services/collector/event",
                [hec_auth, ("Content-Type", "application/json"), ("Content-Encoding", "gzip"), ("User-Agent", "Fluent-Bit")],
                body)
    batch_read = lambda e: max(FLUENT_BIT_READ_AT, utc_at(epoch_ns(e)) + READ_DELAY)
    prompt_read = lambda e: utc_at(epoch_ns(e)) + READ_DELAY
    head = ["Fluent Bit in_winevtlog (defaults: string_inserts on) -> out_splunk, compress gzip, no event_host,",
            "no channel (examples/agents/fluent-bit.yaml). HEC `time` = when the record was read; objects",
            "concatenated without separators. The DC is in W. Europe Standard Time (CET/CEST).",
            "TimeCreated per pack_filetime: local wall-clock time of the event with the zone's CURRENT offset.",
            "The DC01 batch was read at 2026-11-21T23:30:12.41Z (agent catching up): the July record carries +0100.",
            "time-precision: s (TimeCreated has whole seconds)"]
    limit = ["known-limit: 4100102 2026-07-10T11:48:24Z the July record, read in November, carries November's",
             "offset and no sign of it: without the DC's zone no reader can tell (fluent-bit-hec-zone declares it)"]
    write_case("fluent-bit-hec", "dc01", head + limit + [src(dc01)], [([], *fb(dc01, batch_read))], [truth(e) for e in dc01])
    write_case("fluent-bit-hec", "evtx-crate", head + [src(crate)], [([], *fb([e], prompt_read)) for e in crate],
               [truth(e) for e in crate])
    head_zone = head[:-1] + ["With `event_field timezone Europe/Berlin` on the splunk output (HEC `fields.timezone`),",
                             "as examples/agents/fluent-bit.yaml sets it.", head[-1]]
    write_case("fluent-bit-hec-zone", "dc01", head_zone + [src(dc01)],
               [([], *fb(dc01, batch_read, zone="Europe/Berlin"))], [truth(e) for e in dc01])
    head = ["Fluent Bit in_winevtlog render_event_as_xml: true -> out_splunk (otherwise as fluent-bit.yaml):",
            "records {System: <the event XML>, Message, StringInserts} (winevtlog_pack_xml_event). Body decompressed.",
            "time-precision: full (the XML's SystemTime)"]
    write_case("fluent-bit-xml-hec", "dc01", head + [src(dc01)], [([], *fb(dc01, batch_read, xml=True))], [truth(e) for e in dc01])
    write_case("fluent-bit-xml-hec", "evtx-crate", head + [src(crate)], [([], *fb([e], prompt_read, xml=True)) for e in crate],
               [truth(e) for e in crate])

    # OpenTelemetry Collector windowseventlog -> splunkhec (examples/agents/otel-collector.yaml).
    def otel(evs, raw=False):
        body = "".join(dumps(otel_hec(e, compact_xml(e) if raw else otel_body(e))) for e in evs)
        return ("POST /services/collector",
                [hec_auth, ("Content-Type", "application/json"), ("Content-Encoding", "gzip"),
                 ("User-Agent", "OpenTelemetry Collector Contrib/0.120.0")], body)
    head = ["OpenTelemetry Collector contrib windowseventlog -> splunkhec (examples/agents/otel-collector.yaml,",
            "no resourcedetection: host \"unknown\"). HEC `time` = the record's timestamp rounded to ms. Body decompressed.",
            "time-precision: full (system_time carries SystemTime as written)"]
    for name, evs in (("dc01", dc01), ("evtx-crate", crate)):
        reqs = [([], *otel([e])) for e in evs] if name == "evtx-crate" else [([], *otel(evs))]
        write_case("otel-hec", name, head + [src(evs)], reqs, [truth(e) for e in evs])
    head = ["OpenTelemetry Collector windowseventlog with raw: true -> splunkhec: the HEC event is the event XML",
            "string (the rendered-XML transport, like Splunk's XmlWinEventLog). Body decompressed.",
            "time-precision: full (TimeCreated/@SystemTime)"]
    for name, evs in (("dc01", dc01), ("evtx-crate", crate)):
        reqs = [([], *otel([e], raw=True)) for e in evs] if name == "evtx-crate" else [([], *otel(evs, raw=True))]
        write_case("otel-raw-xml-hec", name, head + [src(evs)], reqs, [truth(e) for e in evs])

    # NXLog CE im_msvistalog + to_json -> om_http (examples/agents/nxlog.conf): one event per POST.
    def nx(e, utc=False, zone=None):
        headers = [("Authorization", "Bearer <ad-ingest key>"), ("Content-Type", "application/x-ndjson"),
                   ("X-Agent-Id", "nxlog-dc01")]
        if zone:
            headers.append(("X-Agent-Timezone", zone))
        return (["event %s record %d" % (e["event_id"], e["record_id"])], "POST /v1/events",
                headers, dumps(nxlog(e, utc)))
    base = ["NXLog CE im_msvistalog + to_json() -> om_http (BatchMode none: one event per POST)."]
    variants = [
        ("nxlog-http", {}, ["xm_json's default DateFormat: EventTime/EventReceivedTime are the DC's local time",
                            "(W. Europe, CET/CEST) WITHOUT a zone: never taken as UTC.",
                            "expect-quarantine: EventTime", "time-precision: s"]),
        ("nxlog-http-zone", {"zone": "Europe/Berlin"},
         ["Default DateFormat (local time without a zone), the zone declared with X-Agent-Timezone.",
          "time-precision: s"]),
        ("nxlog-http-utc", {"utc": True},
         ["DateFormat YYYY-MM-DDThh:mm:ss.sUTC as examples/agents/nxlog.conf sets it: UTC, microseconds.",
          "time-precision: us"]),
    ]
    for agent, opts, notes in variants:
        for name, evs in (("dc01", dc01), ("evtx-crate", crate)):
            write_case(agent, name, base + notes + [src(evs)], [nx(e, **opts) for e in evs],
                       [truth(e) for e in evs])


if __name__ == "__main__":
    main()
