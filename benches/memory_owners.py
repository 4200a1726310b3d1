"""Live heap per connected client, by owner (benches/memory.sh --owners).

Usage: memory_owners.py LIVE_N1 N1 LIVE_N2 N2, where LIVE_N is heaptrack_print's flamegraph
export (--flamegraph-cost-type leaked) of a proxy killed with N clients connected: every
allocation is one line, its stack root first, then its bytes. Per client = (bytes at N2 -
bytes at N1) / (N2 - N1), so what the process holds anyway cancels out. An allocation's
owner is the first rule below that names a frame of its stack (frames carry only a file's
base name, so the rules name functions where a base name is ambiguous).
"""
import sys, re, collections
RULES = [  # (owner, regex on the root-first stack); first match wins
    ("OpenSSL: the SSL object (SSL_new)", r"SSL_new;"),
    ("OpenSSL: cipher contexts (read + write keys)", r"EVP_CipherInit_ex"),
    ("OpenSSL: session (SSL_SESSION, kept while connected)", r"SSL_SESSION_new|ssl_session_dup"),
    ("OpenSSL: other state kept from the handshake (peer cipher list, BIO, verify params...)", r"\(openssl\.rs\)|accept<> \(connector\.rs\)|BIO_|SSL_|tls_|ssl3_"),
    ("tungstenite: read buffer (read_buffer_size)", r"stage_finished<> \(server\.rs\)|read_frame|read_in"),
    ("tungstenite: write buffer (largest frame written)", r"buffer_frame|write_out_buffer"),
    ("tungstenite: the WebSocket state (moved into the Arc of split())", r"split<> \(lib\.rs\)"),
    ("Roundabout send queue (VecDeque)", r"push<> \(send_queue\.rs\)"),
    ("Router shards: transactions, dialogs (src/proxy, actors/router.rs)", r"\(router\.rs\)|handle_into \(core\.rs\)|\(timers\.rs\)|\(rewrite\.rs\)"),
    ("Registrar: bindings (actors/registrar.rs)", r"\(registrar\.rs\)"),
    ("Dispatcher: flows (actors/dispatcher.rs)", r"\(dispatcher\.rs\)"),
    ("tokio: task of the connection actor (holds the actor + actix context)", r"new_task|spawn_local"),
    ("tokio: I/O registration (ScheduledIo)", r"registration\.rs|add_source"),
    ("actix: mailbox, spawned futures, timers", r"\(context_impl\.rs\)|\(mailbox\.rs\)|\(channel\.rs\)|run_interval|run_later|add_stream"),
    ("connection actors (actors/connection)", r"\((ws|flow|guard|send_queue)\.rs\)"),
]
def load(path):
    agg = collections.Counter()
    for line in open(path):
        stack, _, cost = line.rstrip().rpartition(' ')
        owner = next((o for o, r in RULES if re.search(r, stack)), "other")
        agg[owner] += int(cost)
    return agg
a, b = load(sys.argv[1]), load(sys.argv[3])
n1, n2 = int(sys.argv[2]), int(sys.argv[4])
print("| owner | bytes per client |\n|---|---|")
rows = sorted(((b[k] - a[k]) / (n2 - n1), k) for k in set(a) | set(b))[::-1]
tot = sum(r[0] for r in rows)
for v, k in rows:
    print(f"| {k} | {v:.0f} |")
print(f"| **live heap per client** | **{tot:.0f}** |")
