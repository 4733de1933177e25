#!/usr/bin/env python3
"""Groups callgrind's self cost (instructions) by crate into the parts of an analytics
call: python3 callgrind_split.py FILE... (callgrind dumps of one measured phase, one file
per thread with --separate-threads=yes). A thread that ran the analytics service's
handlers is counted as the server, the others as the client. The number of calls is
callgrind's own count of the server's handler futures dropped (one per call). Prints
instructions per call for each part, client and server side by side."""
import re, subprocess, sys
from collections import defaultdict

PARTS = [
    ("TLS (rustls, ring)", r"^(rustls|ring|tokio_rustls|rustls_pki_types|webpki|ring_core_|aes_hw_|gcm_|chacha20_|x25519_|ecp_nistz256|p256_|bn_mul|sha256_block|sha512_block|CRYPTO_|aws_lc)"),
    ("HTTP/2 (h2, hyper, http)", r"^(h2|hyper|hyper_util|http|http_body|http_body_util|httparse)$"),
    ("gRPC (tonic, tower)", r"^(tonic|tonic_\w+|tower|tower_http|tower_layer|tower_service)$"),
    ("protobuf (prost, generated)", r"^(prost|prost_types|proto)$"),
    ("sqlx (driver, pool)", r"^(sqlx|sqlx_core|sqlx_postgres)$"),
    ("tokio, futures", r"^(tokio|tokio_util|tokio_stream|mio|futures\w*|parking_lot\w*|crossbeam\w*|event_listener\w*)$"),
    ("allocator, memcpy (libc)", r"^(malloc|free|cfree|realloc|calloc|_int_|__memcpy|__memmove|__memset|memcpy|memmove|memset|__libc_|_dl_|tcache|arena_|__memcmp|memcmp|__strlen|bcmp|__GI_|__lll_|pthread_|__pthread)"),
    ("x509 parsing", r"^(x509_parser|der_parser|asn1_rs|nom)$"),
    ("tracing spans", r"^(tracing|tracing_core|tracing_subscriber|tracing_opentelemetry|log)$|^core::ptr::drop_in_place<tracing::"),
    ("application (analytics, platform, domain, bench)", r"^(analytics|platform|domain|xtask|time|uuid|metrics)$"),
]

def crate_of(name):
    n = name.lstrip("<&*(")
    n = re.sub(r"^(dyn |mut |const |impl )", "", n)
    m = re.match(r"[A-Za-z_][A-Za-z0-9_]*", n)
    return (m.group(0) if m else n), n

def part(name):
    crate, full = crate_of(name)
    if crate in ("core", "alloc", "std") and " as " in name:
        # <core::...<X> as Trait>::f: name the crate of the trait if it is not std's
        trait = name.split(" as ", 1)[1]
        t, _ = crate_of(trait)
        if t not in ("core", "alloc", "std"):
            crate = t
    for label, pattern in PARTS:
        if re.match(pattern, crate) or re.match(pattern, full) or re.match(pattern, name):
            return label
    return "other (std, hashing, misc.)"

def costs(path):
    out = subprocess.run(["callgrind_annotate", "--threshold=100", "--inclusive=no", path],
                         capture_output=True, text=True, check=True).stdout
    total = re.search(r"([\d,]+) \(100.0%\)\s+PROGRAM TOTALS", out)
    total = int(total.group(1).replace(",", "")) if total else None
    rows = []
    for line in out.splitlines():
        if "PROGRAM TOTALS" in line:
            continue
        m = re.match(r"\s*([\d,]+)\s+(?:\([^)]*\)\s+)?(?:\S*?:)?(.+?)(?: \[[^\]]*\])?$", line)
        if m and ":" in line:
            n = int(m.group(1).replace(",", ""))
            # Frames still on the thread's stack at the dump are listed with their
            # inclusive cost (the whole thread): they are not self cost.
            if n != total:
                rows.append((n, m.group(2)))
    return rows

HANDLER = re.compile(r"^core::ptr::drop_in_place<<analytics::service::AnalyticsService as .*::\w+::\{\{closure\}\}>$")

def handler_calls(path):
    """Calls of the handler futures' drop in one raw callgrind file."""
    names, last, total = {}, None, 0
    for line in open(path, errors="replace"):
        m = re.match(r"c?fn=\((\d+)\)(?: (.*))?", line)
        if m:
            if m.group(2):
                names[m.group(1)] = m.group(2).strip()
            last = m.group(1) if line.startswith("cfn") else None
        elif last and line.startswith("calls="):
            if HANDLER.match(names.get(last, "")):
                total += int(line.split("=")[1].split()[0])
            last = None
    return total

def main():
    calls = float(sum(handler_calls(p) for p in sys.argv[1:]))
    print(f"{calls:.0f} calls")
    sides = {"client": defaultdict(int), "server": defaultdict(int)}
    for path in sys.argv[1:]:
        rows = costs(path)
        if not rows:
            continue
        side = "server" if any("AnalyticsService" in f or "analytics::queries" in f for _, f in rows) else "client"
        for n, f in rows:
            sides[side][part(f)] += n
    labels = [l for l, _ in PARTS] + ["other (std, hashing, misc.)"]
    print("| part | client instr./call | server instr./call | total | share |")
    print("| --- | ---: | ---: | ---: | ---: |")
    total = sum(sum(s.values()) for s in sides.values())
    for l in labels:
        c, s = sides["client"][l] / calls, sides["server"][l] / calls
        print(f"| {l} | {c:,.0f} | {s:,.0f} | {c+s:,.0f} | {100*(c+s)*calls/total:.1f} % |")
    c, s = sum(sides["client"].values()) / calls, sum(sides["server"].values()) / calls
    print(f"| **all** | {c:,.0f} | {s:,.0f} | {c+s:,.0f} | 100 % |")

if __name__ == "__main__":
    main()
