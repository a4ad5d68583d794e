"""posthog-hogland 0.1.0 or 0.5.0 (import `hogland`), unmodified, against a real
`paddock serve` speaking the hogland dialect (issue 24). Run once under each
pinned SDK (target/pyenv-hogland-{0.1.0,0.5.0}, made by scripts/pyenv.sh)
against one daemon, with HOG_HOST, HOG_KEY_ALICE, HOG_KEY_BOB, HOG_JWT_KEY (an
RSA private key PEM), HOG_JWT_KID, HOG_JWT_ISSUER, HOG_JWT_AUDIENCE,
HOGLAND_VERSION, HOG_RUN, HOG_SNAPSHOT_ALIAS (alice's snapshot holding
/alias.txt = "from-alias\n") and HOG_SSH_PUBKEY. Every check raises on failure;
the script exits non-zero on the first, after removing every box and pen it
made. Raw httpx is used only on the URLs the SDK hands out (proxy_url, web_url)
and for clean-up. 0.5.0's additions (pens, web_port, token providers, the
longer batch-exec read timeout) run under 0.5.0 and are checked absent in 0.1.0.
"""

import asyncio
import concurrent.futures
import inspect
import os
import re
import tempfile
import threading
import time
import uuid
from urllib.parse import quote

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa
from websockets.exceptions import InvalidStatus
from websockets.sync.client import connect as ws_connect

import hogland
from hogland import (
    APIError,
    AsyncHogland,
    AsyncStreamResult,
    AuthenticationError,
    ConfigurationError,
    ConflictError,
    Hogbox,
    Hogland,
    NotFoundError,
    SnapshotRecord,
    StreamResult,
    ValidationError,
)

HOST = os.environ["HOG_HOST"].rstrip("/")
KEY_ALICE = os.environ["HOG_KEY_ALICE"]
KEY_BOB = os.environ["HOG_KEY_BOB"]
JWT_KEY = open(os.environ["HOG_JWT_KEY"], "rb").read()
JWT_KID = os.environ["HOG_JWT_KID"]
JWT_ISS = os.environ["HOG_JWT_ISSUER"]
JWT_AUD = os.environ["HOG_JWT_AUDIENCE"]
VERSION = os.environ["HOGLAND_VERSION"]
ALIAS = os.environ["HOG_SNAPSHOT_ALIAS"]
SSH_KEY = os.environ["HOG_SSH_PUBKEY"].strip()
V05 = VERSION == "0.5.0"
# Every name of this run starts with P (lowercase: pen names allow [a-z0-9-]).
P = re.sub(r"[^a-z0-9-]", "-", os.environ.get("HOG_RUN", "v").lower())[:12] + "-" + uuid.uuid4().hex[:4]
MIB = 1 << 20
STATUS = {AuthenticationError: 401, NotFoundError: 404, ConflictError: 409, ValidationError: 422}

for _k in ("HOG_TOKEN", "HOG_HOST"):  # the SDK's own config, set only by readme()
    os.environ.pop(_k, None)

ALICE = Hogland(token=KEY_ALICE, base_url=HOST)
BOB = Hogland(token=KEY_BOB, base_url=HOST)
RAW = httpx.Client(timeout=60)
MADE = []  # (owner's token, box id): every box the run made, removed at the end
PENS = []  # every pen name the run made (or tried to)
PEN_BOXES = []  # ids of the boxes pens ran on
ME = {}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what.split("\n")[0][:150], flush=True)


def section(name):
    print(f"---- {name}", flush=True)


def bearer(token):
    return {"Authorization": f"Bearer {token}"}


def made(box, token=KEY_ALICE):
    MADE.append((token, box.id))
    return box


def kill(box):
    """The SDK's delete: `destroy()` in 0.1.0, `delete()` in 0.5.0."""
    return box.delete() if V05 else box.destroy()


def _check_error(e, what, status):
    check(e.status_code == status, f"{what}: HTTP {e.status_code} == {status} ({e})")
    check(isinstance(e.body, dict) and e.body.get("status") == status
          and isinstance(e.body.get("title") or e.body.get("detail"), str),
          f"{what}: a problem-details body ({e.body})")


def expect(fn, exc, what, status=None, exact=False):
    """`fn()` raises `exc` (`exact`: that class, not a subclass); an APIError
    with its status and a problem-details body."""
    try:
        got = fn()
    except exc as e:
        if exact:
            check(type(e) is exc, f"{what}: {type(e).__name__} is exactly {exc.__name__}")
        if isinstance(e, APIError):
            code = status or STATUS.get(exc) or STATUS.get(type(e))
            if code is None:  # any refusal: a 4xx
                check(400 <= e.status_code < 500, f"{what}: a 4xx ({e.status_code}, {type(e).__name__})")
            _check_error(e, what, code or e.status_code)
        else:
            check(True, f"{what}: {type(e).__name__} ({e})")
        return e
    except Exception as e:
        raise AssertionError(f"{what}: {type(e).__name__} ({e}), not {exc.__name__}") from e
    raise AssertionError(f"{what}: no {exc.__name__} (returned {got!r})")


async def aexpect(coro, exc, what):
    try:
        got = await coro
    except exc as e:
        _check_error(e, what, STATUS[exc])
        return e
    except Exception as e:
        raise AssertionError(f"{what}: {type(e).__name__} ({e}), not {exc.__name__}") from e
    raise AssertionError(f"{what}: no {exc.__name__} (returned {got!r})")


def loc_ok(loc, field):
    return loc == field or loc.startswith(field + ".") or loc.startswith(field + "[")


def invalid(fn, what, fields, substring=False):
    """`fn()` is a 422 ValidationError whose errors[0].location names one of `fields`."""
    e = expect(fn, ValidationError, what)
    errs = e.body.get("errors")
    check(isinstance(errs, list) and errs and isinstance(errs[0], dict), f"{what}: errors[] ({e.body})")
    loc = errs[0].get("location") or ""
    ok = any((f in loc) if substring else loc_ok(loc, f) for f in fields)
    check(ok, f"{what}: errors[0].location {loc!r} names {' or '.join(fields)}")
    return e


def gone(client, box_id, what=None):
    expect(lambda: client.get(box_id), NotFoundError, what or f"{box_id}: get after delete")


def poll(fn, secs, what, every=0.3):
    deadline = time.monotonic() + secs
    while True:
        v = fn()
        if v:
            check(True, what)
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {secs}s")
        time.sleep(every)


def aware(ts):
    return ts is not None and ts.tzinfo is not None


def out_of(events, kind):
    return "".join(e.data for e in events if e.kind == kind)


def exits(events):
    return [e for e in events if e.kind == "exit"]


OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)
JWT_SUB = f"{P}-carol"
JWT_EMAIL = "carol@example.com"


def mint(sub=JWT_SUB, aud=None, exp_in=600, key=None):
    now = int(time.time())
    claims = {"iss": JWT_ISS, "aud": aud or JWT_AUD, "sub": sub, "iat": now, "exp": now + exp_in,
              "email": JWT_EMAIL}
    return jwt.encode(claims, key or JWT_KEY, algorithm="RS256", headers={"kid": JWT_KID})


CAROL = Hogland(token=mint(exp_in=3600), base_url=HOST)

# ---- servers run inside boxes -------------------------------------------------


def serve_http(box, port):
    box.exec(["bash", "-c", f"nohup python3 -m http.server {port} --bind 0.0.0.0 --directory /tmp >/dev/null 2>&1 &"])
    wait_port(box, port)


def wait_port(box, port):
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), 1)"
    poll(lambda: box.exec(["python3", "-c", probe]).exit_code == 0, 20, f"{box.id}: port {port} listens")


# A WebSocket echo server of the standard library's (the box has no packages).
WS_ECHO = r'''
import base64, hashlib, socket, struct, sys, threading
def frame(op, p):
    n = len(p)
    return bytes([0x80 | op]) + (bytes([n]) if n < 126 else b"\x7e" + struct.pack(">H", n) if n < 65536
                                 else b"\x7f" + struct.pack(">Q", n)) + p
def serve(c):
    f, key = c.makefile("rb"), ""
    for line in iter(f.readline, b"\r\n"):
        if not line:
            return c.close()
        k, _, v = line.decode("latin-1").partition(":")
        key = v.strip() if k.strip().lower() == "sec-websocket-key" else key
    acc = base64.b64encode(hashlib.sha1((key + "258EAFA5-E914-47DA-95CA-C5AB0DC85B11").encode()).digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
              b"Sec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    while len(h := f.read(2)) == 2:
        op, n = h[0] & 15, h[1] & 127
        n = struct.unpack(">H", f.read(2))[0] if n == 126 else struct.unpack(">Q", f.read(8))[0] if n == 127 else n
        m = f.read(4) if h[1] & 128 else b"\0\0\0\0"
        p = bytes(b ^ m[i % 4] for i, b in enumerate(f.read(n)))
        if op == 8:
            return c.sendall(frame(8, p[:2]))
        c.sendall(frame(10, p) if op == 9 else frame(op, b"echo:" + p) if op in (1, 2) else b"")
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
'''

# ---- the SDK under test ---------------------------------------------------------


def version():
    section("version")
    check(hogland.__version__ == VERSION, f"hogland {hogland.__version__} is the version asked for ({VERSION})")
    check(VERSION in ("0.1.0", "0.5.0"), f"a version this script knows ({VERSION})")
    check(hasattr(Hogbox, "delete") == V05 and hasattr(Hogbox, "destroy") == (not V05),
          "Hogbox.destroy (0.1.0) / Hogbox.delete (0.5.0)")
    for name in ("create_pen", "get_pen", "list_pens", "iter_pens", "update_pen", "delete_pen",
                 "hibernate_pen", "wake_pen", "from_token_file"):
        check(hasattr(Hogland, name) == V05, f"Hogland.{name} {'exists' if V05 else 'absent'} in {VERSION}")
    check(hasattr(Hogbox, "web_url") == V05 and hasattr(hogland, "Pen") == V05, "Hogbox.web_url, hogland.Pen")
    check(("web_port" in inspect.signature(Hogland.create).parameters) == V05, "create(web_port=)")
    expect(lambda: Hogland(base_url=HOST), ConfigurationError, "no token anywhere: ConfigurationError")


# ---- identity, auth, limits -------------------------------------------------------


def identity():
    section("identity and auth")
    me = ALICE.me()
    ME["id"] = me.id
    check(me.id == "alice" and me.is_admin is False, f"me(): alice, not admin ({me.id}, {me.is_admin})")
    check(isinstance(me.email, str) and aware(me.created_at), f"me(): email a string, created_at aware ({me})")
    check(me.box_count >= 0 and me.snapshot_count >= 1, f"me(): counts (the harness's snapshot) ({me})")
    check(BOB.me().id == "bob", "bob's key: bob")
    cm = CAROL.me()
    check(cm.id == f"oidc:{JWT_SUB}" and cm.email == JWT_EMAIL and cm.is_admin is False,
          f"a JWT: principal oidc:<sub>, its email claim ({cm})")
    bad = {
        "a wrong key": "pdk_bogus",
        "a malformed token": "not.a.jwt",
        "a JWT for another audience": mint(aud="someone-else"),
        "an expired JWT": mint(exp_in=-3600),
        "a JWT signed by another key": mint(key=OTHER_KEY),
    }
    for what, token in bad.items():
        c = Hogland(token=token, base_url=HOST)
        expect(c.me, AuthenticationError, f"{what}: me()")
        if what == "a wrong key":
            expect(c.list, AuthenticationError, f"{what}: list()")
            expect(lambda: c.get("x"), AuthenticationError, f"{what}: get() is 401, not 404")
        c.close()
    if V05:
        with Hogland(token_provider=lambda: KEY_ALICE, base_url=HOST) as c:
            check(c.me().id == "alice", "0.5.0 token_provider=")
        with tempfile.NamedTemporaryFile("w", suffix=".token") as f:
            f.write(mint() + "\n")
            f.flush()
            with Hogland.from_token_file(f.name, base_url=HOST) as c:
                check(c.me().id == f"oidc:{JWT_SUB}", "0.5.0 from_token_file (a JWT)")


def limits():
    section("limits")
    lim = ALICE.limits()
    keys = ["cpus", "memory_mib", "disk_gib", "disk_iops", "disk_mbps", "net_mbps"]
    keys += ["cpu_request", "memory_request_mib"] if V05 else []
    for k in keys:
        n = getattr(lim, k)
        check(0 <= n.min <= n.max, f"limits().{k}: {n.min}..{n.max}")
    check(0.25 <= lim.cpus.min <= 1 <= lim.cpus.max <= 180, f"cpus range ({lim.cpus})")
    check(256 <= lim.memory_mib.min <= 1024 <= lim.memory_mib.max <= 368640, f"memory_mib range ({lim.memory_mib})")
    check(5 <= lim.disk_gib.min <= 10 <= lim.disk_gib.max <= 100, f"disk_gib range ({lim.disk_gib})")
    check("ssh-public" in lim.access_type and "mirrored" in lim.disk_class,
          f"access_type {lim.access_type}, disk_class {lim.disk_class}")
    raw = RAW.get(HOST + "/v1/limits", headers=bearer(KEY_ALICE)).json()
    check("cpu_request" in raw and "memory_request_mib" in raw, "/v1/limits carries 0.5.0's keys to every client")
    return lim


# ---- the README's quick start ----------------------------------------------------


def readme(lim):
    section("README quick start")
    # This host's ceilings (limits()) may be below the README's 4 CPUs / 8 GiB / 50 GiB.
    cpus = min(4, lim.cpus.max)
    memory_mib, disk_gib = min(8192, int(lim.memory_mib.max)), min(50, int(lim.disk_gib.max))
    os.environ.update(HOG_TOKEN=KEY_ALICE, HOG_HOST=HOST + "/")
    try:
        client = Hogland()  # reads HOG_TOKEN + HOG_HOST from env
        check(client.base_url == HOST, f"HOG_HOST read, trailing / dropped ({client.base_url})")
        with client.create(cpus=cpus, memory_mib=memory_mib, disk_gib=disk_gib) as box:
            made(box)
            check(box.status == "running" and box.spec.cpus == cpus and box.spec.memory_mib == memory_mib
                  and box.spec.disk_gib == disk_gib, f"create({cpus}, {memory_mib}, {disk_gib}): {box!r}")
            py = "python" if box.exec(["bash", "-c", "command -v python"]).exit_code == 0 else "python3"
            box.write_file("/work/run.py", b"print('hi')\n", mkdir=True)
            result = box.exec([py, "/work/run.py"], timeout_seconds=30)
            check(result.exit_code == 0 and result.stdout == "hi\n", f"exec [{py}, /work/run.py]: hi ({result})")
            seen = []
            for event in box.exec_stream(["bash", "-c", "for i in 1 2 3; do echo $i; sleep 1; done"]):
                seen.append((time.monotonic(), event))
            evs = [e for _, e in seen]
            check(out_of(evs, "stdout") == "1\n2\n3\n", f"exec_stream: 1 2 3 ({evs})")
            check(evs[-1].kind == "exit" and evs[-1].exit_code == 0 and evs[-1].duration_ms >= 1900,
                  f"exec_stream: exit 0 last, duration_ms ({evs[-1]})")
            first_out = next(t for t, e in seen if e.kind == "stdout")
            check(seen[-1][0] - first_out > 1.5, "exec_stream: output arrives as it is written, not at the end")
            snap = box.snapshot()
            check(isinstance(snap, SnapshotRecord) and snap.id and snap.box_id == box.id, f"snapshot() ({snap.id})")
        gone(client, box.id, "the with block deleted the box")
        client.close()
    finally:
        os.environ.pop("HOG_TOKEN", None)
        os.environ.pop("HOG_HOST", None)


# ---- one box: spec, exec, streams, files, snapshots, pause, proxy -------------


BOOT = "echo booted > /tmp/boot.txt"


def main_box():
    section("create, get")
    box = made(ALICE.create(cpus=0.5, memory_mib=768, disk_gib=5, env={"FOO": "bar", "SPACED": "a b"},
                            tags=["t1", "t2"], name=f"{P}-main", kind=f"{P}-main", ttl_seconds=3600,
                            bootstrap=BOOT))
    v, s = box.view, box.spec
    check(isinstance(box.id, str) and box.id and box.status == "running", f"create: running ({box!r})")
    check(aware(v.created_at) and aware(v.updated_at), "created_at, updated_at aware")
    check(v.owner_id in (None, ME["id"]), f"owner_id ({v.owner_id})")
    check((s.cpus, s.memory_mib, s.disk_gib) == (0.5, 768, 5), f"spec sizes ({s.cpus}, {s.memory_mib}, {s.disk_gib})")
    check(s.env == {"FOO": "bar", "SPACED": "a b"} and s.tags == ["t1", "t2"], f"spec env, tags ({s.env}, {s.tags})")
    check((s.name, s.kind, s.ttl_seconds, s.bootstrap) == (f"{P}-main", f"{P}-main", 3600, BOOT),
          f"spec name, kind, ttl_seconds, bootstrap ({s.name}, {s.kind}, {s.ttl_seconds}, {s.bootstrap!r})")
    check(box.exec(["cat", "/tmp/boot.txt"]).stdout == "booted\n", "bootstrap ran before create answered")
    got = ALICE.get(box.id)
    check(got.id == box.id and got.status == "running" and got.spec.name == f"{P}-main", "get(id)")
    check(box.refresh() is box and box.status == "running", "refresh()")
    if V05:
        check(box.web_url() is None, "web_url() of a box without web_port: None")
    return box


def exec_checks(box):
    section("exec")
    r = box.exec(["bash", "-c", "echo out; echo err >&2; exit 3"])
    check((r.stdout, r.stderr, r.exit_code, r.timed_out) == ("out\n", "err\n", 3, False),
          f"exec: stdout, stderr, exit 3 ({r})")
    check(isinstance(r.duration_ms, int) and r.duration_ms >= 0, f"duration_ms ({r.duration_ms})")
    check(box.exec(["bash", "-c", "echo $FOO:$SPACED"]).stdout == "bar:a b\n", "create's env seen by exec")
    r = box.exec(["bash", "-c", "echo $FOO $EXTRA"], env={"EXTRA": "x", "FOO": "over"})
    check(r.stdout == "over x\n", f"exec(env=) merged over the box's ({r.stdout!r})")
    check(box.exec(["pwd"], workdir="/tmp").stdout == "/tmp\n", "exec(workdir=)")
    check(box.exec(["printf", "h\u00e9llo \u2713"]).stdout == "h\u00e9llo \u2713", "non-ASCII output")
    t = time.monotonic()
    r = box.exec(["sleep", "5"], timeout_seconds=1)
    check(r.timed_out is True and r.exit_code == -1 and time.monotonic() - t < 4.5,
          f"timeout_seconds=1, sleep 5: timed_out, exit -1 ({r})")
    r = box.exec(["bash", "-c", "head -c 3000000 /dev/zero | tr '\\0' a"])
    check(len(r.stdout) == MIB and set(r.stdout) == {"a"} and r.exit_code == 0, f"stdout 1 MiB max ({len(r.stdout)})")
    r = box.exec(["bash", "-c", "head -c 3000000 /dev/zero | tr '\\0' b >&2"])
    check(len(r.stderr) == MIB and r.stdout == "", f"stderr capped at 1 MiB ({len(r.stderr)})")
    r = box.exec(["/nonexistent/program"])
    check(r.exit_code != 0, f"a missing program: an ExecResult, exit {r.exit_code}")


def stream_checks(box):
    section("exec_stream")
    evs = list(box.exec_stream(["bash", "-c", "printf '  lead\\n\\nx\\n'; printf 'e1\\n' >&2; exit 4"]))
    check({e.kind for e in evs} <= {"stdout", "stderr", "exit"}, "events stdout/stderr/exit only")
    check(out_of(evs, "stdout") == "  lead\n\nx\n", f"stdout byte-exact, empty line, leading spaces ({evs})")
    check(out_of(evs, "stderr") == "e1\n", "stderr separate")
    ex = exits(evs)
    check(len(ex) == 1 and evs[-1] is ex[0] and ex[0].exit_code == 4 and isinstance(ex[0].duration_ms, int),
          f"one exit event, last: code 4, duration_ms ({ex})")
    evs = list(box.exec_stream(["printf", "h\u00e9 \u2713\\na\\nb"]))
    check(out_of(evs, "stdout") == "h\u00e9 \u2713\na\nb", "UTF-8, and output without a final newline")
    evs = list(box.exec_stream(["bash", "-c", "echo $Z $FOO; pwd"], env={"Z": "zz"}, workdir="/tmp"))
    check(out_of(evs, "stdout") == "zz bar\n/tmp\n", "exec_stream(env=, workdir=)")
    evs = list(box.exec_stream(["bash", "-c", "head -c 3000000 /dev/zero | tr '\\0' a"]))
    check(len(out_of(evs, "stdout")) == 3000000, "a stream is not capped (3 MB)")
    s = StreamResult(box.exec_stream(["bash", "-c", "echo a; echo b >&2; echo c; exit 2"]))
    chunks = list(s.stdout())
    check("".join(chunks) == "a\nc\n" and s.stderr == "b\n" and s.exit_code == 2 and s.duration_ms is not None,
          f"StreamResult: stdout, stderr, exit 2 ({chunks}, {s.stderr!r}, {s.exit_code})")
    t = time.monotonic()
    d = StreamResult(box.exec_stream(["true"])).drain()
    check(d.exit_code == 0 and time.monotonic() - t < 5, "the stream closes right after exit (drain returns)")
    gen = box.exec_stream(["bash", "-c", "echo start; exec sleep 31"])
    first = next(gen)
    check(first.kind == "stdout" and first.data == "start\n", f"first event before the command ends ({first})")
    gen.close()
    poll(lambda: box.exec(["bash", "-c", "pgrep -f 'slee[p] 31' || echo gone"]).stdout.strip() == "gone",
         10, "closing the stream early kills the command")


def file_checks(box):
    section("files")
    w = box.write_file("/work/a/b/c.txt", b"hello\n", mkdir=True)
    check(w.bytes_written == 6 and box.read_file("/work/a/b/c.txt") == b"hello\n", "write_file(mkdir=True), read_file")
    expect(lambda: box.write_file(f"/{P}-nodir/x", b"x"), APIError, "write without mkdir into a missing directory")
    for mode in ("0600", "0755"):
        box.write_file(f"/root/m{mode}", b"m", mode=mode)
        st = box.exec(["stat", "-c", "%a", f"/root/m{mode}"]).stdout.strip()
        check(st == mode[1:], f"write_file(mode={mode!r}): {st}")
    box.write_file("/root/over", b"first version, longer")
    box.write_file("/root/over", b"second")
    check(box.read_file("/root/over") == b"second", "a rewrite replaces the whole file")
    binary = bytes(range(256)) * 16
    box.write_file("/tmp/bin.dat", binary)
    check(box.read_file("/tmp/bin.dat") == binary, "binary bytes exact")
    check(box.write_file("/tmp/empty", b"").bytes_written == 0 and box.read_file("/tmp/empty") == b"", "an empty file")
    odd = "/tmp/a b \u00e9+%.txt"
    box.write_file(odd, b"odd")
    check(box.read_file(odd) == b"odd", "a path with a space, %, + and UTF-8")
    big = os.urandom(20 * MIB)
    check(box.write_file("/tmp/big", big).bytes_written == len(big), "20 MiB written")
    check(box.read_file("/tmp/big") == big, "20 MiB read back exact")
    box.exec(["rm", "/tmp/big"])
    check(box.write_file("/tmp/max", bytes(64 * MIB)).bytes_written == 64 * MIB, "exactly 64 MiB written")
    box.exec(["rm", "/tmp/max"])
    expect(lambda: box.write_file("/tmp/over", bytes(64 * MIB + 1)), APIError, "64 MiB + 1: 413 APIError",
           status=413, exact=True)
    box.exec(["bash", "-c", "head -c 67108865 /dev/zero > /tmp/big65"])
    expect(lambda: box.read_file("/tmp/big65"), APIError, "reading 64 MiB + 1: 413 APIError", status=413, exact=True)
    box.exec(["rm", "/tmp/big65"])
    invalid(lambda: box.write_file("work/rel.txt", b"x"), "write_file of a relative path", ["path"], substring=True)
    invalid(lambda: box.read_file("tmp/bin.dat"), "read_file of a relative path", ["path"], substring=True)
    expect(lambda: box.read_file(f"/tmp/{P}-missing"), NotFoundError, "read_file of a missing file")


def snapshot_checks(box):
    section("snapshots")
    box.write_file("/root/snap.txt", b"before\n")
    before = ALICE.me().snapshot_count
    snap = box.snapshot()
    check(isinstance(snap, SnapshotRecord) and isinstance(snap.id, str) and snap.id and snap.box_id == box.id,
          f"snapshot(): id, box_id ({snap.id}, {snap.box_id})")
    check(snap.size_bytes >= 0 and aware(snap.created_at) and isinstance(snap.s3_prefix, str),
          f"size_bytes, created_at ({snap.size_bytes})")
    check((snap.spec.cpus, snap.spec.memory_mib) == (0.5, 768), f"the snapshot's spec ({snap.spec})")
    if V05 and snap.usage is not None:
        check(snap.usage.cpu_usage_usec >= 0 and snap.usage.rss_mib_seconds >= 0, f"0.5.0 usage ({snap.usage})")
    check(ALICE.me().snapshot_count >= before + 1, "me().snapshot_count counts it")
    box.write_file("/root/snap.txt", b"after\n")
    snap2 = ALICE.snapshot(box.id)
    check(snap2.box_id == box.id and snap2.id != snap.id, "client.snapshot(id): another snapshot")
    r = made(ALICE.create(snapshot_id=snap.id, cpus=0.5, name=f"{P}-restored"))
    check((r.spec.cpus, r.spec.memory_mib) == (0.5, 768), f"restore: memory_mib inherited, equal cpus ok ({r.spec})")
    check(r.read_file("/root/snap.txt") == b"before\n", "a restore has the files as they were")
    check(box.read_file("/root/snap.txt") == b"after\n", "the source box is not the restore")
    kill(r)
    gone(ALICE, r.id)
    for field, kw in (("cpus", {"cpus": 1}), ("memory_mib", {"memory_mib": 1024})):
        invalid(lambda: made(ALICE.create(snapshot_id=snap.id, **kw)), f"a restore with another {field}",
                [f"body.{field}"])
    a = made(ALICE.create(snapshot_id=f"alias:{ALIAS}", name=f"{P}-alias"))
    check(a.read_file("/alias.txt") == b"from-alias\n", "create(snapshot_id='alias:<name>')")
    kill(a)
    e = expect(lambda: made(BOB.create(snapshot_id=snap.id), KEY_BOB), APIError, "bob restoring alice's snapshot")
    check(e.status_code in (403, 404, 422), f"... refused ({e.status_code})")


def pause_checks(box):
    section("pause, resume")
    box.write_file("/root/p.txt", b"kept")
    check(box.pause() is box and box.status == "paused", f"pause(): paused ({box.status})")
    check(ALICE.get(box.id).status == "paused", "get: paused")
    check(box.id in [b.id for b in ALICE.iter_boxes(status="paused")], "list(status=paused) has it")
    check(box.resume() is box and box.status == "running", f"resume(): running ({box.status})")
    check(box.read_file("/root/p.txt") == b"kept" and box.exec(["true"]).exit_code == 0, "files kept, exec works")


def proxy_checks(box):
    section("proxy_url")
    box.write_file("/tmp/hello.txt", b"hello through the proxy\n")
    serve_http(box, 8000)
    url = box.proxy_url(8000, "hello.txt")
    check(url == f"{HOST}/v1/hogboxes/{quote(box.id, safe='')}/proxy/8000/hello.txt", f"proxy_url ({url})")
    r = RAW.get(url, headers=bearer(KEY_ALICE))
    check(r.status_code == 200 and r.content == b"hello through the proxy\n", f"GET with the bearer ({r.status_code})")
    check(r.headers.get("content-type", "").startswith("text/plain"), "the box's headers come through")
    check(RAW.get(url).status_code == 401, "no bearer: 401")
    check(RAW.get(url, headers=bearer(KEY_BOB)).status_code == 404, "bob's bearer: 404")
    r = RAW.get(box.proxy_url(8000), headers=bearer(KEY_ALICE))
    check(r.status_code == 200 and "hello.txt" in r.text, "proxy_url(port): the root (a listing)")
    r = RAW.get(box.proxy_url(8000, "/hello.txt?x=1&y=%2F"), headers=bearer(KEY_ALICE))
    check(r.status_code == 200 and r.content == b"hello through the proxy\n", "a leading / and a query string")
    check(RAW.get(box.proxy_url(8000, "missing.txt"), headers=bearer(KEY_ALICE)).status_code == 404,
          "the box's own 404 comes through")
    r = RAW.post(url, headers=bearer(KEY_ALICE), content=b"payload")
    check(r.status_code == 501, f"POST reaches the box (http.server's 501) ({r.status_code})")
    box.write_file("/tmp/ws_echo.py", WS_ECHO.encode())
    box.exec(["bash", "-c", "nohup python3 /tmp/ws_echo.py 8765 >/tmp/ws.log 2>&1 &"])
    wait_port(box, 8765)
    ws_url = "ws" + box.proxy_url(8765, "echo")[len("http"):]
    with ws_connect(ws_url, additional_headers=bearer(KEY_ALICE), compression=None, proxy=None,
                    open_timeout=20) as ws:
        ws.send("hi")
        check(ws.recv(timeout=10) == "echo:hi", "a text message echoed")
        ws.send(b"\x00\x01\xff")
        check(ws.recv(timeout=10) == b"echo:\x00\x01\xff", "a binary message echoed")
        ws.send("x" * 70000)
        check(ws.recv(timeout=10) == "echo:" + "x" * 70000, "a 70 kB message echoed")
    try:
        ws_connect(ws_url, compression=None, proxy=None, open_timeout=20).close()
        raise AssertionError("a WebSocket without a bearer was accepted")
    except InvalidStatus as e:
        check(e.response.status_code == 401, f"a WebSocket without a bearer: 401 ({e.response.status_code})")


# ---- listing and pagination ------------------------------------------------------


def listing():
    section("list, iter_boxes")
    kind = f"{P}-list"
    with concurrent.futures.ThreadPoolExecutor(5) as pool:
        boxes = list(pool.map(lambda i: made(ALICE.create(name=f"{P}-l{i}", kind=kind,
                                                          **({"ttl_seconds": 0} if i == 0 else {}))), range(5)))
    ids = {b.id for b in boxes}
    check(len(ids) == 5, "five boxes, five ids")
    for b in boxes:
        s = b.spec
        check((s.cpus, s.memory_mib, s.disk_gib, s.kind, b.status) == (1, 1024, 10, kind, "running"),
              f"{b.id}: defaults 1 CPU, 1024 MiB, 10 GiB")
        check(s.access_type in ((None, "none") if V05 else (None, "ssh-public", "ssh-private")),
              f"{b.id}: access_type {s.access_type!r} ({'0.5.0 sent none' if V05 else 'never none to 0.1.0'})")
    page = ALICE.list(kind=kind)
    check({b.id for b in page.items} == ids and not page.next_cursor, "list(kind=): the five, one page")
    seen = [b.id for b in ALICE.iter_boxes(kind=kind, page_size=2)]
    check(sorted(seen) == sorted(ids), f"iter_boxes(page_size=2): each once ({len(seen)})")
    sizes, cursor, got = [], None, []
    while True:
        pg = ALICE.list(kind=kind, limit=2, cursor=cursor)
        sizes.append(len(pg.items))
        got += [b.id for b in pg.items]
        if not pg.next_cursor:
            break
        cursor = pg.next_cursor
        check(len(sizes) < 10, "the cursor moves on")
    check(sizes == [2, 2, 1] and sorted(got) == sorted(ids), f"list(limit=2) with next_cursor: pages {sizes}")
    every = [b.id for b in ALICE.iter_boxes(page_size=3)]
    check(len(every) == len(set(every)) and ids <= set(every), f"iter_boxes(page_size=3): no repeats ({len(every)})")
    for _ in range(5):  # box_count: alice's boxes (another run may be creating some meanwhile)
        n1, me, n2 = len(list(ALICE.iter_boxes())), ALICE.me(), len(list(ALICE.iter_boxes()))
        if n1 == n2:
            break
    check(me.box_count == n1, f"me().box_count == alice's boxes ({me.box_count}, {n1})")
    check({b.id for b in ALICE.list(kind=kind, status="running").items} == ids, "list(status=running, kind=)")
    boxes[0].pause()
    check([b.id for b in ALICE.list(kind=kind, status="paused").items] == [boxes[0].id], "list(status=paused)")
    check({b.id for b in ALICE.iter_boxes(kind=kind, status="running", page_size=1)} == ids - {boxes[0].id},
          "iter_boxes(status=running, page_size=1): the other four")
    check(ALICE.list(kind=f"{P}-none").items == [], "list of an unknown kind: empty")
    for b in boxes:
        kill(b)
    check(ALICE.list(kind=kind).items == [], "all five deleted")
    check(kill(boxes[0]) is None, "a second delete: 404 counts as success")


# ---- isolation, errors, bad input ---------------------------------------------------


def isolation(box):
    section("isolation")
    expect(lambda: BOB.get(box.id), NotFoundError, "bob's get of alice's box")
    expect(lambda: CAROL.get(box.id), NotFoundError, "the JWT principal's get of alice's box")
    theirs = Hogbox(box.view, BOB)
    expect(lambda: theirs.exec(["true"]), NotFoundError, "bob's exec in alice's box")
    expect(lambda: theirs.read_file("/tmp/hello.txt"), NotFoundError, "bob's read_file")
    expect(lambda: theirs.write_file("/tmp/x", b"x"), NotFoundError, "bob's write_file")
    expect(theirs.snapshot, NotFoundError, "bob's snapshot")
    expect(theirs.pause, NotFoundError, "bob's pause")
    check(kill(theirs) is None, "bob's delete: a 404, which the SDK counts as success")
    check(ALICE.get(box.id).status == "running" and box.exec(["true"]).exit_code == 0,
          "alice's box survived bob's delete")
    check(box.id not in [b.id for b in BOB.iter_boxes()], "bob's list has none of alice's")
    expect(lambda: ALICE.get(f"{P}-nope"), NotFoundError, "an unknown id")
    expect(lambda: ALICE.get("a/b c"), NotFoundError, "an id with / and space (quoted): 404")


def validation(box):
    section("bad input: 422 naming the field")
    cases = [
        ("cpus 0.1", {"cpus": 0.1}, "cpus"), ("cpus 181", {"cpus": 181}, "cpus"),
        ("memory_mib 100", {"memory_mib": 100}, "memory_mib"),
        ("memory_mib 400000", {"memory_mib": 400000}, "memory_mib"),
        ("disk_gib 1", {"disk_gib": 1}, "disk_gib"), ("disk_gib 101", {"disk_gib": 101}, "disk_gib"),
        ("disk_iops 20000", {"disk_iops": 20000}, "disk_iops"),
        ("disk_mbps 2000", {"disk_mbps": 2000}, "disk_mbps"),
        ("net_mbps 50000", {"net_mbps": 50000}, "net_mbps"),
        ("disk_class fast", {"disk_class": "fast"}, "disk_class"),
        ("access_type bogus", {"access_type": "bogus"}, "access_type"),
        ("env key 1BAD", {"env": {"1BAD": "x"}}, "env"),
        ("env of 51 entries", {"env": {f"K{i}": "v" for i in range(51)}}, "env"),
        ("an env value of 5000 bytes", {"env": {"BIG": "x" * 5000}}, "env"),
        ("an env value with CR", {"env": {"CR": "a\rb"}}, "env"),
        ("bootstrap of 300000 chars", {"bootstrap": "#" * 300000}, "bootstrap"),
        ("ttl_seconds 30", {"ttl_seconds": 30}, "ttl_seconds"),
        ("ttl_seconds 604801", {"ttl_seconds": 604801}, "ttl_seconds"),
        ("ssh-public with a malformed key", {"access_type": "ssh-public", "ssh_public_key": "not a key"},
         "ssh_public_key"),
    ]
    for what, kw, field in cases:
        invalid(lambda: made(ALICE.create(name=f"{P}-bad", **kw)), f"create: {what}", [f"body.{field}"])
    invalid(lambda: box.exec([]), "exec argv []", ["body.argv"])
    invalid(lambda: box.exec(["echo", "x" * 70000]), "exec argv over 64 KiB", ["body.argv"])
    invalid(lambda: box.exec(["true"], timeout_seconds=99999), "exec timeout_seconds 99999", ["body.timeout_seconds"])
    invalid(lambda: box.exec(["true"], timeout_seconds=-1), "exec timeout_seconds -1", ["body.timeout_seconds"])
    gone_box = made(ALICE.create(name=f"{P}-gone"))
    kill(gone_box)
    expect(lambda: gone_box.exec(["true"]), NotFoundError, "exec in a deleted box")
    try:
        list(gone_box.exec_stream(["true"]))
        raise AssertionError("exec_stream in a deleted box answered")
    except NotFoundError as e:  # the body is {} when the error's type is not JSON
        check(e.status_code == 404, "exec_stream in a deleted box: NotFoundError (a non-JSON error type)")
    except httpx.ResponseNotRead:
        check(True, "exec_stream in a deleted box: a JSON error, httpx.ResponseNotRead (spec §2 caveat)")
    if V05:
        expect(lambda: ALICE.create(web_port=0), ValueError, "0.5.0 create(web_port=0): ValueError (client-side)")


def ssh_run(command, key_file, remote):
    """Runs a box's ssh_command with the key's private half; the result."""
    import shlex
    import subprocess
    argv = shlex.split(command)
    argv[1:1] = ["-i", key_file, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                 "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
    return subprocess.run(argv + [remote], capture_output=True, timeout=60)


def pen_ssh():
    section("0.5.0 a pen's boxes open to its SSH key")
    key_file = os.environ.get("HOG_SSH_KEY_FILE")
    if not key_file:
        return
    name = f"{P}-sshpen"
    ALICE.create_pen(name, spec={"access_type": "ssh-public", "ssh_public_key": SSH_KEY})
    try:
        for round_ in ("first wake", "wake after hibernate"):
            pen = ALICE.wake_pen(name)
            box = ALICE.get(pen.current_box_id)
            check(box.view.ssh_command, f"{round_}: ssh_command ({box.view.ssh_command})")
            r = ssh_run(box.view.ssh_command, key_file, "echo pen-ssh")
            check(r.returncode == 0 and r.stdout == b"pen-ssh\n",
                  f"{round_}: the pen's key opens its box ({r.returncode}, {r.stderr!r})")
            ALICE.hibernate_pen(name)
    finally:
        ALICE.delete_pen(name)


def ssh_access():
    section("access_type ssh-public")
    b = made(ALICE.create(access_type="ssh-public", ssh_public_key=SSH_KEY, name=f"{P}-ssh"))
    check(b.spec.access_type == "ssh-public", f"spec.access_type ({b.spec.access_type!r})")
    check(isinstance(b.view.ssh_command, str) and b.view.ssh_command.startswith("ssh "),
          f"ssh_command ({b.view.ssh_command!r})")
    check(ALICE.get(b.id).view.ssh_command == b.view.ssh_command, "get: the same ssh_command")
    check(b.exec(["true"]).exit_code == 0, "an ssh-public box takes exec too")
    # The command as shown, with the key's private half, reaches the box
    # (OpenSSH's client, against Paddock's SSH gateway).
    key_file = os.environ.get("HOG_SSH_KEY_FILE")
    if key_file:
        import shlex
        import subprocess
        argv = shlex.split(b.view.ssh_command)
        argv[1:1] = ["-i", key_file, "-o", "BatchMode=yes", "-o", "StrictHostKeyChecking=no",
                     "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR"]
        b.write_file("/tmp/ssh-marker", b"via-ssh\n")
        r = subprocess.run(argv + ["cat /tmp/ssh-marker; exit 5"], capture_output=True, timeout=60)
        check(r.returncode == 5 and r.stdout == b"via-ssh\n",
              f"ssh_command with the box's key runs a command in it ({r.returncode}, {r.stdout!r}, {r.stderr!r})")
        # Another box of alice's without that key registered: the box's own
        # key opens only its box.
        other = made(ALICE.create(name=f"{P}-nokey"))
        argv2 = list(argv)
        argv2[-1] = argv2[-1].replace(b.id, other.id)
        r = subprocess.run(argv2 + ["true"], capture_output=True, timeout=60)
        check(r.returncode == 255, f"the key opens no other box ({r.returncode}, {r.stderr!r})")
        kill(other)
    kill(b)
    # access_type "none" (0.5.0's default) from either version: accepted, and
    # never echoed to 0.1.0, whose model rejects it.
    n = made(ALICE.create(access_type="none", name=f"{P}-none"))
    want = ("none",) if V05 else (None,)
    check(n.spec.access_type in want and ALICE.get(n.id).spec.access_type in want,
          f"access_type none accepted, seen as {n.spec.access_type!r} by {VERSION}")
    count = len(list(ALICE.iter_boxes(page_size=1)))
    check(True, f"every box of alice's ({count}) parses under {VERSION}")
    kill(n)


# ---- 0.5.0: web_port, pens, long calls ----------------------------------------------


def web_port():
    section("0.5.0 web_port, web_url")
    b = made(ALICE.create(web_port=8001, name=f"{P}-web"))
    check(b.spec.web_port == 8001, f"spec.web_port ({b.spec.web_port})")
    b.write_file("/tmp/index.html", b"web-port-ok\n")
    serve_http(b, 8001)
    url = b.web_url()
    check(isinstance(url, str) and url.startswith("http"), f"web_url() ({url})")
    r = RAW.get(url, headers=bearer(KEY_ALICE))
    check(r.status_code == 200 and r.text == "web-port-ok\n", f"web_url serves web_port ({r.status_code})")
    kill(b)


PEN_INDEX = "pen-web-ok\n"
PEN_BOOT = ("printf 'pen-web-ok\\n' > /tmp/index.html; "
            "nohup python3 -m http.server 8002 --bind 0.0.0.0 --directory /tmp >/dev/null 2>&1 &")


def start_idle_pen():
    name = f"{P}-idle"
    PENS.append(name)
    ALICE.create_pen(name, spec={"ttl_seconds": 60}, on_idle="hibernate")
    pen = ALICE.wake_pen(name)
    check(pen.current_box_id, f"idle pen {name}: a box ({pen.current_box_id})")
    PEN_BOXES.append(pen.current_box_id)
    return name, pen.current_box_id, time.monotonic()


def finish_idle_pen(state):
    section("0.5.0 a pen hibernated by idleness")
    name, box_id, t0 = state

    def asleep():
        p = ALICE.get_pen(name)
        return p if not p.current_box_id and p.latest_snapshot_id else None
    p = poll(asleep, 150, f"{name}: hibernated by itself after its 60 s TTL", every=2)
    check(time.monotonic() - t0 >= 55, f"... not before its TTL ({time.monotonic() - t0:.0f}s)")
    gone(ALICE, box_id, f"{name}: its box is gone")
    check(p.latest_snapshot_id, f"latest_snapshot_id {p.latest_snapshot_id}")
    ALICE.delete_pen(name)


def pens(idle):
    section("0.5.0 pens: bad input")
    bad = f"{P}-bad"
    PENS.extend([bad, f"{P}-Bad", "a" * 33])
    for what, kw, fields in [
        ("an upper-case name", {"name": f"{P}-Bad"}, ["body.name"]),
        ("a name of 33 chars", {"name": "a" * 33}, ["body.name"]),
        ("wake on-request without spec.web_port", {"name": bad, "wake": "on-request", "spec": {"cpus": 1}},
         ["body.wake", "body.spec"]),
        ("on_idle bogus", {"name": bad, "on_idle": "bogus"}, ["body.on_idle"]),
        ("wake bogus", {"name": bad, "wake": "sometimes"}, ["body.wake"]),
        ("an upper-case metadata key", {"name": bad, "metadata": {"Repo": "x"}}, ["body.metadata"]),
        ("cpu_request above cpus", {"name": bad, "spec": {"cpus": 1, "cpu_request": 2}}, ["body.spec"]),
    ]:
        invalid(lambda: ALICE.create_pen(**kw), f"create_pen: {what}", fields)

    section("0.5.0 pens: create, get, list, update")
    web, plain = f"{P}-web", f"{P}-plain"
    PENS.extend([web, plain])
    spec = {"cpus": 1, "cpu_request": 0.5, "memory_mib": 1024, "memory_request_mib": 512, "web_port": 8002,
            "bootstrap": PEN_BOOT}
    meta = {"repo": "paddock", "pr": "24"}
    pen = ALICE.create_pen(web, spec=spec, on_idle="hibernate", wake="on-request", metadata=meta)
    check(isinstance(pen, hogland.Pen) and pen.name == web and pen.id and pen.owner_id == ME["id"],
          f"create_pen: name, id, owner_id ({pen.id}, {pen.owner_id})")
    check((pen.on_idle, pen.wake, pen.metadata) == ("hibernate", "on-request", meta), "on_idle, wake, metadata")
    check(pen.spec is not None and (pen.spec.web_port, pen.spec.cpu_request, pen.spec.memory_request_mib)
          == (8002, 0.5, 512), f"spec kept ({pen.spec})")
    check(isinstance(pen.web_url, str) and pen.web_url.startswith("http"), f"pen web_url ({pen.web_url})")
    expect(lambda: ALICE.create_pen(web), ConflictError, "a duplicate pen name")
    ALICE.create_pen(plain)
    check(ALICE.get_pen(web).id == pen.id, "get_pen")
    expect(lambda: ALICE.get_pen(f"{P}-none"), NotFoundError, "get_pen of an unknown name")
    expect(lambda: BOB.get_pen(web), NotFoundError, "bob's get_pen of alice's pen")
    names = [p.name for p in ALICE.iter_pens(page_size=1)]
    ours = sorted(n for n in names if n.startswith(P))
    check(len(names) == len(set(names)) and ours == sorted([web, plain, idle[0]]),
          f"iter_pens(page_size=1): each once ({names})")
    pg = ALICE.list_pens(limit=1)
    check(len(pg.items) == 1 and pg.next_cursor, "list_pens(limit=1): one and a cursor")
    check(ALICE.update_pen(web, metadata={"owner": "qa"}).metadata == {"owner": "qa"}, "update_pen: metadata replaced")
    check(not ALICE.update_pen(web, metadata={}).metadata, "update_pen(metadata={}): cleared")
    expect(lambda: ALICE.update_pen(web), ValueError, "update_pen with nothing (client-side)")
    invalid(lambda: ALICE.update_pen(web, on_idle="bogus"), "update_pen on_idle bogus", ["body.on_idle"])

    section("0.5.0 pens: wake, hibernate")
    w = ALICE.wake_pen(web)
    b1 = w.current_box_id
    check(b1, f"wake_pen: current_box_id ({b1})")
    PEN_BOXES.append(b1)
    box = ALICE.get(b1)
    check(box.status == "running" and box.spec.web_port == 8002 and box.spec.cpu_request == 0.5
          and box.spec.memory_request_mib == 512, f"the pen's box: running, the pen's spec ({box.spec})")
    check(ALICE.wake_pen(web).current_box_id == b1, "wake_pen again: the same box (idempotent)")
    wait_port(box, 8002)
    r = RAW.get(pen.web_url, headers=bearer(KEY_ALICE), timeout=60)
    check(r.status_code == 200 and r.text == PEN_INDEX, f"the pen's web_url serves its box ({r.status_code})")
    box.write_file("/root/pen.txt", b"kept across hibernation\n")
    h = ALICE.hibernate_pen(web)
    check(not h.current_box_id and h.latest_snapshot_id, f"hibernate_pen: no box, a snapshot ({h.latest_snapshot_id})")
    gone(ALICE, b1, "hibernate_pen: the old box is 404")
    h2 = ALICE.hibernate_pen(web)
    check(not h2.current_box_id and h2.latest_snapshot_id == h.latest_snapshot_id, "hibernate_pen again: idempotent")
    b2 = ALICE.wake_pen(web).current_box_id
    check(b2 and b2 != b1, f"wake_pen: a new box ({b2})")
    PEN_BOXES.append(b2)
    check(ALICE.get(b2).read_file("/root/pen.txt") == b"kept across hibernation\n", "... with the file")
    expect(lambda: ALICE.delete_pen(web, expected_current_box_id="wrong"), ConflictError,
           "delete_pen fenced by a wrong current box id")
    check(ALICE.get_pen(web).current_box_id == b2, "... the pen survived")

    section("0.5.0 pens: wake on request")
    ALICE.hibernate_pen(web)
    gone(ALICE, b2)
    t = time.monotonic()
    r = RAW.get(pen.web_url, headers=bearer(KEY_ALICE), timeout=120)
    check(r.status_code == 200 and r.text == PEN_INDEX,
          f"a request to a hibernated pen's web_url is held and served ({r.status_code}, {time.monotonic() - t:.1f}s)")
    b3 = ALICE.get_pen(web).current_box_id
    check(b3 and b3 not in (b1, b2), f"the request woke a new box ({b3})")
    PEN_BOXES.append(b3)
    check(ALICE.get(b3).exec(["cat", "/root/pen.txt"]).stdout == "kept across hibernation\n", "... from the snapshot")
    if time.monotonic() - idle[2] < 50:
        check(ALICE.get_pen(idle[0]).current_box_id == idle[1], "the idle pen is still awake before its TTL")

    section("0.5.0 pens: delete")
    ALICE.delete_pen(web, expected_current_box_id=b3)
    expect(lambda: ALICE.get_pen(web), NotFoundError, "get_pen after delete_pen")
    gone(ALICE, b3, "delete_pen deleted its box")
    ALICE.delete_pen(plain)
    expect(lambda: ALICE.delete_pen(plain), NotFoundError, "delete_pen twice: 404 is an error for pens")


def in_thread(res, key, fn):
    """Runs `fn` in a thread; res[key]: (its result, seconds taken) or what it raised."""
    def run():
        t = time.monotonic()
        try:
            res[key] = (fn(), time.monotonic() - t)
        except BaseException as e:  # reported by finish_long
            res[key] = e
    th = threading.Thread(target=run, daemon=True)
    th.start()
    return th


def start_long():
    """0.5.0 only (0.1.0's 30 s read timeout would end the batch call): a batch
    exec and a silent stream of 35 s each, in threads beside everything else."""
    box = made(ALICE.create(name=f"{P}-long"))
    res = {}
    threads = [in_thread(res, "batch", lambda: box.exec(["sleep", "35"], timeout_seconds=60)),
               in_thread(res, "stream", lambda: list(box.exec_stream(["bash", "-c", "sleep 35; echo done"])))]
    return box, res, threads


def finish_long(state):
    section("0.5.0 calls longer than 30 s")
    box, res, threads = state
    for t in threads:
        t.join(120)
    check(not any(t.is_alive() for t in threads), "the long calls ended")
    for k in ("batch", "stream"):
        if isinstance(res.get(k), BaseException):
            raise AssertionError(f"the long {k} call: {type(res[k]).__name__} ({res[k]})")
    r, took = res["batch"]
    check(r.exit_code == 0 and not r.timed_out and r.duration_ms >= 34000 and took >= 34,
          f"batch exec of sleep 35 answered ({r.duration_ms} ms)")
    evs, took = res["stream"]
    check(out_of(evs, "stdout") == "done\n" and exits(evs) and exits(evs)[0].exit_code == 0 and took >= 34,
          f"a stream silent for 35 s completes (heartbeats) ({took:.0f}s)")
    kill(box)


# ---- async ------------------------------------------------------------------------


async def async_box(c, box, tag):
    async with box:
        r = await box.exec(["bash", "-c", "echo $TAG; echo e >&2"])
        check((r.stdout, r.stderr, r.exit_code) == (f"{tag}\n", "e\n", 0), f"async {tag}: exec with create's env")
        evs = [e async for e in box.exec_stream(["bash", "-c", "printf '  x\\n\\ny\\n'; echo z >&2; exit 5"])]
        check(out_of(evs, "stdout") == "  x\n\ny\n" and out_of(evs, "stderr") == "z\n"
              and evs[-1].kind == "exit" and evs[-1].exit_code == 5, f"async {tag}: exec_stream via async for")
        s = AsyncStreamResult(box.exec_stream(["bash", "-c", "echo a; echo b >&2; exit 1"]))
        chunks = [ch async for ch in s.stdout()]
        check("".join(chunks) == "a\n" and s.stderr == "b\n" and s.exit_code == 1, f"async {tag}: AsyncStreamResult")
        payload = os.urandom(300_000)
        w = await box.write_file(f"/work/{tag}/data.bin", payload, mode="0640", mkdir=True)
        check(w.bytes_written == len(payload) and await box.read_file(f"/work/{tag}/data.bin") == payload,
              f"async {tag}: write_file(mkdir, mode), read_file")
        snap = await box.snapshot()
        check(snap.box_id == box.id and snap.id, f"async {tag}: snapshot")
        check((await box.pause()).status == "paused" and (await box.resume()).status == "running",
              f"async {tag}: pause, resume")
        r2 = made(await c.create(snapshot_id=snap.id, name=f"{P}-async-{tag}-r"))
        async with r2:
            check(await r2.read_file(f"/work/{tag}/data.bin") == payload, f"async {tag}: a restore has the file")
        await aexpect(c.get(r2.id), NotFoundError, f"async {tag}: the restore deleted by async with")
    await aexpect(c.get(box.id), NotFoundError, f"async {tag}: deleted by async with")


async def async_part():
    section("async")
    async with AsyncHogland(token=KEY_ALICE, base_url=HOST) as c:
        check((await c.me()).id == "alice", "async me()")
        check((await c.limits()).cpus.max >= 1, "async limits()")
        kind = f"{P}-async"
        a, b = await asyncio.gather(*(c.create(name=f"{P}-async-{t}", kind=kind, env={"TAG": t}) for t in "ab"))
        made(a)
        made(b)
        check(isinstance(a, hogland.AsyncHogbox) and a.status == b.status == "running", "async create, two at once")
        seen = [x.id async for x in c.iter_boxes(kind=kind, page_size=1)]
        check(sorted(seen) == sorted([a.id, b.id]), "async iter_boxes(page_size=1)")
        check({x.id for x in (await c.list(kind=kind, status="running")).items} == {a.id, b.id}, "async list()")
        check((await c.get(a.id)).id == a.id, "async get()")
        await asyncio.gather(async_box(c, a, "a"), async_box(c, b, "b"))
        check((await c.list(kind=kind)).items == [], "async: both gone")
        await aexpect(c.get(f"{P}-nope"), NotFoundError, "async: an unknown id")
        if V05:
            names = [p.name async for p in c.iter_pens(page_size=1)]
            check(len(names) == len(set(names)), "async iter_pens(page_size=1)")
    async with AsyncHogland(token="pdk_bogus", base_url=HOST) as c:
        await aexpect(c.me(), AuthenticationError, "async: a wrong key")


# ---- clean-up -----------------------------------------------------------------------


def cleanup():
    """Deletes every pen and box of the run (gone ones answer 404)."""
    problems = []
    urls = [(KEY_ALICE, f"/v1/pens/{quote(n, safe='')}") for n in PENS]
    urls += [(tok, f"/v1/hogboxes/{quote(i, safe='')}") for tok, i in MADE]
    urls += [(KEY_ALICE, f"/v1/hogboxes/{quote(i, safe='')}") for i in PEN_BOXES]
    for tok, path in urls:
        try:
            r = RAW.delete(HOST + path, headers=bearer(tok))
            if not (r.is_success or r.status_code == 404):
                problems.append(f"{path}: {r.status_code} {r.text[:100]}")
        except Exception as e:  # the daemon may be gone: say so, go on
            problems.append(f"{path}: {e}")
    return problems


def nothing_left():
    section("nothing left")
    problems = cleanup()
    check(not problems, f"every box and pen of the run removed ({problems})")
    ids = {i for _, i in MADE} | set(PEN_BOXES)
    for who, c in (("alice", ALICE), ("bob", BOB), ("the JWT principal", CAROL)):
        left = [b.id for b in c.iter_boxes() if b.id in ids or (b.spec.name or "").startswith(P)
                or (b.spec.kind or "").startswith(P)]
        check(not left, f"{who}: none of this run's boxes left ({left})")
    if V05:
        left = [p.name for p in ALICE.iter_pens() if p.name in PENS]
        check(not left, f"none of this run's pens left ({left})")


def main():
    t0 = time.time()
    print(f"hogland {hogland.__version__} against {HOST} (run {P})", flush=True)
    ok = False
    try:
        version()
        identity()
        lim = limits()
        long_ = start_long() if V05 else None
        idle = start_idle_pen() if V05 else None
        readme(lim)
        box = main_box()
        exec_checks(box)
        stream_checks(box)
        file_checks(box)
        snapshot_checks(box)
        pause_checks(box)
        proxy_checks(box)
        listing()
        isolation(box)
        validation(box)
        ssh_access()
        kill(box)
        gone(ALICE, box.id)
        if V05:
            web_port()
            pens(idle)
            pen_ssh()
        asyncio.run(async_part())
        if V05:
            finish_long(long_)
            finish_idle_pen(idle)
        nothing_left()
        ok = True
    finally:
        if not ok:
            problems = cleanup()
            if problems:
                print("clean-up after the failure left:", problems, flush=True)
    print(f"hogland {VERSION}: {time.time() - t0:.1f}s", flush=True)
    print("all hogland checks passed")


if __name__ == "__main__":
    main()
