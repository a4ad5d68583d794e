"""boxd 0.1.5.dev25 (import `boxd`), unmodified, against a real `paddock serve`
speaking the boxd dialect (issue 25): gRPC `boxd.api.v1.BoxdApi` over h2c and
the HTTP token exchange on one port (`--boxd-listen`), and the TLS ingress
(`--ingress-listen`, `--zone`). crates/paddock/tests/boxd.rs runs it under
target/pyenv-boxd-0.1.5.dev25 (scripts/pyenv.sh) with:

  BOXD_API_URL        http://127.0.0.1:P (the SDK reads it itself)
  BOXD_EXCHANGE_URL   http://127.0.0.1:P/api/v1/auth/token (likewise)
  BOXD_API_KEY        alice's Paddock API key (likewise)
  PADDOCK_BOB_KEY     bob's key; PADDOCK_CAROL_KEY carol's (a policy holds her
                      to one sandbox and 512 MiB)
  PADDOCK_ALICE_MAX_VMS  alice's policy's max_sandboxes
  PADDOCK_ALICE_FINGERPRINT  the SHA256 fingerprint of an SSH key of alice's
  PADDOCK_INGRESS     host:port of the TLS ingress; PADDOCK_INGRESS_CA a PEM
  PADDOCK_ZONE        the ingress's zone
  PADDOCK_IMAGE       an OCI image (busybox, /etc/image-name holds its name)
  PADDOCK_BOXD_MAX_MESSAGE  the server's gRPC receive limit in bytes
  PADDOCK_URL         the native API (for the isolated native sandbox only)

Sync (`boxd.Compute`) first, then async (`boxd.aio.Compute`). Every check
raises AssertionError with its context; a step that could hang runs under a
watchdog that prints what it waited for and exits non-zero. Boxes, disks,
templates and domains of the run are removed at the end (and after a failure).

What the script assumes of the server where the wire spec leaves the choice
open (each is what a user of the SDK would rely on):
  A1  Status strings: "running" once ready, "stopped" after StopVm,
      "suspended" after SuspendVm; a destroyed box is NOT_FOUND or "destroyed"
      (get), absent or "destroyed" (list).
  A2  A create without a name gets a name from the server; box names are DNS
      labels ("Bad Name!" is INVALID_ARGUMENT naming `name`).
  A3  Box config env is the environment of every exec; vcpu is the cgroup's
      CPU quota and memory its memory.max; disk is GetVm's disk_bytes.
  A4  restart_policy applies to `cmd`, the box's main process: "always"
      starts it again when it exits, "never" does not; its output is the
      box's log (StreamLogs).
  A5  An exec on a stopped box is FAILED_PRECONDITION. A timed exec's
      process, and a cancelled exec's process group, are killed. Processes
      an exec leaves in the background outlive it when it ends normally.
  A6  Files: a relative path is INVALID_ARGUMENT, a missing file NOT_FOUND; a
      message over the server's receive limit RESOURCE_EXHAUSTED (tonic says
      OUT_OF_RANGE unless told otherwise), a file under it kept whole.
  A7  An unknown image (a tag the registry lacks) is NOT_FOUND (the engine's
      answer, the native API's 404); a malformed reference INVALID_ARGUMENT.
  A8  ALREADY_EXISTS (InvalidArgumentError, grpc_code 6) for a name taken: box,
      template, disk, proxy, and a domain already bound (to anyone's box).
      A disk attached read-write twice is FAILED_PRECONDITION (grpc_code 9,
      a bare BoxdError), like destroying a disk that is attached.
  A9  Another principal's box, disk, template, token is NOT_FOUND on every
      route (never PERMISSION_DENIED, which would tell it exists).
  A10 Proxies: `<box>.<zone>` is the default proxy (is_default, listed), a
      named one `<name>.<box>.<zone>` (its `domain`); port 0 = the first port
      the box listens on; proxies given in BoxConfig.network at create exist.
      The ingress certificate verifies against PADDOCK_INGRESS_CA with the
      hostname checked for every name in the zone (two labels deep too), and
      routes by Host with or without a `:port`. A name it does not know is not
      answered by any box.
  A11 Networks: a box reaches its owner's other boxes by box name and by
      address (port 8000, plain HTTP), and none of another principal's, nor a
      sandbox made through the native API without a network. ListNetworks
      holds the default network with a CIDR subnet and a non-empty status.
  A12 Billing: max_vms is the principal's policy's max_sandboxes; checkout,
      portal and change_shape are FAILED_PRECONDITION with no URLs set.
  A13 Tokens are JWTs; a token made with expires_in=N expires at created+N
      and is refused once past it (within the 60 s a JWT library may allow);
      a revoked or forged one (bad signature, alg "none", changed claims) is
      UNAUTHENTICATED. Another principal cannot revoke a token of alice's.
  A14 The exchange's token lives more than 10 minutes (the SDK refreshes 300 s
      before expires_at, unix seconds).
  A15 Bad sizes: memory "1K" and a disk of 0 bytes are INVALID_ARGUMENT naming
      memory / size; a proxy port over 65535 INVALID_ARGUMENT; a quota or
      policy refusal RESOURCE_EXHAUSTED.
"""

import asyncio
import base64
import faulthandler
import hashlib
import http.client
import ipaddress
import json
import os
import random
import re
import socket
import ssl
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path

import grpc
import httpx

import boxd
import boxd.aio
from boxd import (
    AuthenticationError,
    BoxConfig,
    BoxdError,
    Compute,
    InvalidArgumentError,
    LifecycleConfig,
    NetworkConfig,
    NotFoundError,
    ProxyEntry,
    QuotaExceededError,
    VolumeMount,
)
from boxd import TimeoutError as BoxdTimeout

API_URL = os.environ["BOXD_API_URL"]
EXCHANGE_URL = os.environ["BOXD_EXCHANGE_URL"]
KEY = os.environ["BOXD_API_KEY"]
BOB_KEY = os.environ["PADDOCK_BOB_KEY"]
CAROL_KEY = os.environ["PADDOCK_CAROL_KEY"]
ALICE_MAX_VMS = int(os.environ["PADDOCK_ALICE_MAX_VMS"])
ALICE_FP = os.environ["PADDOCK_ALICE_FINGERPRINT"]
INGRESS = os.environ["PADDOCK_INGRESS"]
INGRESS_CA = os.environ["PADDOCK_INGRESS_CA"]
ZONE = os.environ["PADDOCK_ZONE"]
IMAGE = os.environ["PADDOCK_IMAGE"]
MAX_MESSAGE = int(os.environ["PADDOCK_BOXD_MAX_MESSAGE"])
NATIVE = os.environ["PADDOCK_URL"].rstrip("/") + "/v1"
for _k in ("BOXD_TOKEN", "BOXD_ENVIRONMENT"):  # nothing but the harness's config
    os.environ.pop(_k, None)
# With BOXD_API_KEY set, the SDK ignores a `token=` (it exchanges the key):
# the environment's key is set only where the script reads it (README).
os.environ.pop("BOXD_API_KEY")

OK, INVALID, NOT_FOUND, EXISTS = (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT,
                                  grpc.StatusCode.NOT_FOUND, grpc.StatusCode.ALREADY_EXISTS)
PRECONDITION, EXHAUSTED = grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.RESOURCE_EXHAUSTED
UNAUTH = grpc.StatusCode.UNAUTHENTICATED
MIB = 1 << 20
# Every name of this run starts with P (DNS-label safe).
P = "bx" + uuid.uuid4().hex[:6]
RUN_STARTED = time.time()

MADE = {"alice": [], "bob": [], "carol": []}  # box ids per owner
TEMPLATES, DISKS, DOMAINS = [], [], []  # alice's
NATIVE_SANDBOXES = []

# The whole run may not take longer than this (a hang is a failure, with
# every thread's stack).
faulthandler.dump_traceback_later(1500, exit=True)


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what.split("\n")[0][:160], flush=True)


def section(name):
    print(f"---- {name}", flush=True)


def code_of(status):
    return status.value[0]


class deadline:
    """A step that must end within `secs`: else the run stops here, saying
    what it waited for (the SDK's sync calls block without a timeout)."""

    def __init__(self, secs, what):
        self.secs, self.what = secs, what

    def _fire(self):
        print(f"FAILED: {self.what}: not within {self.secs}s", flush=True)
        faulthandler.dump_traceback(all_threads=True)
        os._exit(1)

    def __enter__(self):
        self.t = threading.Timer(self.secs, self._fire)
        self.t.daemon = True
        self.t.start()
        return self

    def __exit__(self, *exc):
        self.t.cancel()
        return False


def expect(fn, exc, what, code=None, exact=False, mentions=None):
    """`fn()` raises `exc` (`exact`: that class, not a subclass) with gRPC
    status `code`, its message naming one of `mentions`."""
    try:
        got = fn()
    except exc as e:
        return _expected(e, exc, what, code, exact, mentions)
    except Exception as e:
        raise AssertionError(f"{what}: {type(e).__name__} ({e}), not {exc.__name__}") from e
    raise AssertionError(f"{what}: no {exc.__name__} (returned {got!r})")


async def aexpect(coro, exc, what, code=None, exact=False, mentions=None):
    try:
        got = await coro
    except exc as e:
        return _expected(e, exc, what, code, exact, mentions)
    except Exception as e:
        raise AssertionError(f"{what}: {type(e).__name__} ({e}), not {exc.__name__}") from e
    raise AssertionError(f"{what}: no {exc.__name__} (returned {got!r})")


def _expected(e, exc, what, code, exact, mentions):
    if exact:
        check(type(e) is exc, f"{what}: {type(e).__name__} is exactly {exc.__name__} ({e})")
    if code is not None:
        got = getattr(e, "grpc_code", None)
        check(got == code_of(code), f"{what}: grpc_code {got} is {code.name} ({code_of(code)}) ({e})")
    if mentions:
        msg = str(e).lower()
        check(any(m in msg for m in mentions), f"{what}: the message names {' or '.join(mentions)} ({e})")
    if code is None and not mentions and not exact:
        check(True, f"{what}: {type(e).__name__} ({e})")
    return e


def poll(fn, secs, what, every=0.5):
    end = time.monotonic() + secs
    last = None
    while True:
        try:
            last = fn()
        except AssertionError:
            raise
        except Exception as e:  # said on timeout
            last = e
        if last and not isinstance(last, Exception):
            check(True, what)
            return last
        if time.monotonic() > end:
            raise AssertionError(f"{what}: not within {secs}s (last: {last!r})")
        time.sleep(every)


def alice(**kw):
    return Compute(api_key=KEY, **kw)


def made(box, who="alice"):
    MADE[who].append(box.id)
    return box


def gone(client, box_id, what):
    """`box_id` is destroyed: get is NOT_FOUND (or says destroyed), list
    does not hold it (or says destroyed) (A1)."""
    try:
        b = client.box.get(box_id)
        check(b.status == "destroyed", f"{what}: get says destroyed ({b.status})")
    except NotFoundError as e:
        check(True, f"{what}: get is NotFoundError ({e})")
    left = [b.status for b in client.box.list() if b.id == box_id]
    check(left in ([], ["destroyed"]), f"{what}: not listed as alive ({left})")


def is_gone(client, box_id):
    try:
        return client.box.get(box_id).status == "destroyed"
    except NotFoundError:
        return True


def sh(box, script, **kw):
    return box.exec("sh", "-c", script, **kw)


def ok_sh(box, script, what=None, **kw):
    r = sh(box, script, **kw)
    if r.exit_code != 0:
        raise AssertionError(f"{what or script}: exit {r.exit_code}: {r.stdout!r} {r.stderr!r}")
    return r.stdout


def mem_limit(box):
    """The box's memory limit as its cgroup says (v2, or v1 on a hybrid host)."""
    return ok_sh(box, "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                      "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").strip()


def processes(box):
    """The command lines of every process in `box`."""
    out = ok_sh(box, 'for p in /proc/[0-9]*; do tr "\\000" " " < $p/cmdline 2>/dev/null; echo; done')
    return [line.strip() for line in out.splitlines() if line.strip()]


def own_ip(box):
    """The box's address, as it sees it."""
    return ok_sh(box, "python3 -c \"import socket; s = socket.socket(2, 2); s.connect(('192.0.2.1', 9)); "
                      "print(s.getsockname()[0])\"").strip()


def serve(box, port, marker, directory=None):
    """A python3 HTTP server in `box` on `port`, serving m.txt = marker;
    started in the background by an exec that ends (A5)."""
    d = directory or f"/srv/www{port}"
    ok_sh(box, f"mkdir -p {d} && printf %s '{marker}' > {d}/m.txt && "
               f"(nohup python3 -m http.server {port} --bind 0.0.0.0 --directory {d} >/dev/null 2>&1 &)")
    probe = f"import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:{port}/m.txt', timeout=2).read().decode())"
    poll(lambda: box.exec("python3", "-c", probe).stdout.strip() == marker, 30, f"{box.name}: serves {port}")


PROBE = """import sys, urllib.request
try:
    print(urllib.request.urlopen(sys.argv[1], timeout=4).read().decode())
except Exception as e:
    print("unreachable", type(e).__name__, e)
"""


def fetch_from(box, url):
    return box.exec("python3", "-c", PROBE, url).stdout.strip()


# ---- the ingress, reached like a browser would (SNI + Host + the CA) ----------

IHOST, IPORT = INGRESS.rsplit(":", 1)


def tls(host, verify_name=True, timeout=10):
    ctx = ssl.create_default_context(cafile=INGRESS_CA)
    ctx.check_hostname = verify_name
    raw = socket.create_connection((IHOST, int(IPORT)), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except Exception:
        raw.close()
        raise


def ingress(host, path="/m.txt", host_header=None, verify_name=True):
    """GET https://<host><path> through the ingress: (status, body)."""
    s = tls(host, verify_name)
    conn = http.client.HTTPConnection(host, timeout=10)
    conn.sock = s
    try:
        conn.request("GET", path, headers={"Host": host_header or host, "Connection": "close"})
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def ingress_try(host, path="/m.txt", **kw):
    try:
        return ingress(host, path, **kw)
    except Exception as e:
        return 0, f"{type(e).__name__}: {e}"


def routed(host, marker, what, **kw):
    poll(lambda: ingress_try(host, **kw) == (200, marker), 30, what)


def not_routed(host, marker, what, **kw):
    st, body = ingress_try(host, **kw)
    check(not (st == 200 and marker in body), f"{what}: not answered by the box ({st} {body[:80]!r})")


# A WebSocket echo server of the standard library's (the box has no packages).
WS_ECHO = r'''
import base64, hashlib, socket, struct, sys, threading
def frame(op, p):
    n = len(p)
    return bytes([0x80 | op]) + (bytes([n]) if n < 126 else b"\x7e" + struct.pack(">H", n)) + p
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
        n = struct.unpack(">H", f.read(2))[0] if n == 126 else n
        m = f.read(4) if h[1] & 128 else b"\0\0\0\0"
        p = bytes(b ^ m[i % 4] for i, b in enumerate(f.read(n)))
        if op == 8:
            return c.sendall(frame(8, p[:2]))
        c.sendall(frame(op, b"echo:" + p))
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", int(sys.argv[1])))
s.listen(16)
while True:
    threading.Thread(target=serve, args=(s.accept()[0],), daemon=True).start()
'''


def ws_echo(host, text):
    """A WebSocket through the ingress: the upgrade, one masked text frame,
    the echo back."""
    s = tls(host)
    try:
        key = base64.b64encode(os.urandom(16)).decode()
        s.sendall((f"GET /ws HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
                   f"Sec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n").encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = s.recv(4096)
            if not chunk:
                break
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode(errors="replace")
        if " 101 " not in status + " ":
            return f"no upgrade: {status}"
        rest = head.split(b"\r\n\r\n", 1)[1]
        payload, mask = text.encode(), os.urandom(4)
        s.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + bytes(b ^ mask[i % 4] for i, b in enumerate(payload)))
        while len(rest) < 2 or len(rest) < 2 + (rest[1] & 127):
            chunk = s.recv(4096)
            if not chunk:
                break
            rest += chunk
        n = rest[1] & 127
        return rest[2:2 + n].decode(errors="replace")
    finally:
        s.close()


# ---- JWTs (A13) ------------------------------------------------------------------


def b64url(b):
    return base64.urlsafe_b64encode(b).rstrip(b"=").decode()


def unb64url(s):
    return base64.urlsafe_b64decode(s + "=" * (-len(s) % 4))


def jwt_parts(token):
    h, p, s = token.split(".")
    return json.loads(unb64url(h)), json.loads(unb64url(p)), s


def exchange(api_key):
    r = httpx.post(EXCHANGE_URL, json={"api_key": api_key}, timeout=10)
    return r


# ---- auth and identity --------------------------------------------------------------


SHORT = {}


def auth():
    section("auth: the exchange, direct tokens, scoped tokens")
    r = exchange(KEY)
    check(r.status_code == 200, f"exchange: 200 ({r.status_code} {r.text[:200]})")
    body = r.json()
    tok, exp = body.get("token"), body.get("expires_at")
    now = time.time()
    check(isinstance(tok, str) and tok.count(".") == 2, f"exchange: a JWT ({tok!r:.40})")
    check(isinstance(exp, (int, float)) and not isinstance(exp, bool), f"exchange: expires_at a number ({exp!r})")
    check(now + 600 < exp < now + 8 * 86400, f"exchange: expires_at in unix seconds, > 10 min away (A14) ({exp - now:.0f}s)")
    r = exchange("pdk_not-a-key")
    check(r.status_code == 401, f"exchange with a wrong key: 401 ({r.status_code})")

    with Compute(token=tok) as c:
        me = c.whoami()
        check(me.user_id, f"a direct token (Compute(token=...)): whoami {me.user_id!r}")
    with Compute(api_key=KEY, api_url=API_URL, exchange_url=EXCHANGE_URL) as c:
        check(c.whoami().user_id == me.user_id, "api_key with explicit api_url and exchange_url")
    bare = API_URL.split("://", 1)[1]
    if bare.startswith("127.") or bare.startswith("localhost"):
        with Compute(api_key=KEY, api_url=bare) as c:
            check(c.whoami().user_id == me.user_id, f"a bare {bare} is plaintext to the SDK, and works")
    os.environ["BOXD_API_KEY"] = KEY
    try:
        with Compute() as c:  # BOXD_API_KEY + BOXD_API_URL + BOXD_EXCHANGE_URL
            check(c.whoami().user_id == me.user_id, "Compute() reads BOXD_API_KEY and the URLs from the environment")
        with Compute(token="not-a-jwt") as c:
            check(c.whoami().user_id == me.user_id, "with BOXD_API_KEY set, the SDK exchanges the key (a token= is ignored)")
    finally:
        os.environ.pop("BOXD_API_KEY")
    with Compute(api_key="pdk_not-a-key") as c:
        expect(c.whoami, AuthenticationError, "a wrong API key: AuthenticationError")

    # Forged tokens: garbage, a changed signature, alg none, changed claims.
    h, p, sig = jwt_parts(tok)
    check("exp" in p and p["exp"] == exp, f"the JWT's exp is expires_at ({sorted(p)})")
    s = unb64url(sig)
    flipped = s[:-1] + bytes([s[-1] ^ 1]) if s else b"x"
    forged = {
        "garbage": "not-a-jwt",
        "a changed signature": tok.rsplit(".", 1)[0] + "." + b64url(flipped),
        "alg none": b64url(json.dumps({**h, "alg": "none"}).encode()) + "." + tok.split(".")[1] + ".",
        "claims changed (sub)": tok.split(".")[0] + "." + b64url(json.dumps({**p, "sub": "bob"}).encode()) + "." + sig,
        "claims changed (exp)": tok.split(".")[0] + "." + b64url(json.dumps({**p, "exp": p["exp"] + 86400}).encode()) + "." + sig,
    }
    for what, t in forged.items():
        with Compute(token=t) as c:
            expect(c.whoami, AuthenticationError, f"a forged token ({what}): AuthenticationError", code=UNAUTH)
            expect(c.box.list, AuthenticationError, f"a forged token ({what}): list too")

    with alice() as c:
        # CreateToken: 0 = 24 h.
        t0 = time.time()
        day = c.token.create()
        check(isinstance(day.token, str) and day.token != tok, "token.create(): a new token")
        check(abs(day.expires_at - (t0 + 86400)) < 120, f"token.create(0): expires in 24 h ({day.expires_at - t0:.0f}s)")
        ttl = 3000 + random.randrange(1000)
        hour = c.token.create(expires_in=ttl)
        check(abs(hour.expires_at - (t0 + ttl)) < 120, f"token.create({ttl}): expires_at = now + {ttl}")
        SHORT["token"] = c.token.create(expires_in=5)
        SHORT["made"] = time.time()
        with Compute(token=SHORT["token"].token) as s:
            check(s.whoami().user_id == me.user_id, "a 5 s token works at once (checked expired at the end)")
        infos = c.token.list()
        check(all(i.jti and i.created_at > 0 and i.expires_at > 0 for i in infos), "token.list(): jti, created_at, expires_at")
        by_jti = {i.jti: i for i in infos}
        for t in (day, hour):
            jti = jwt_parts(t.token)[1].get("jti")
            check(jti in by_jti, f"token.list() holds the token made, by its JWT's jti ({jti})")
            check(by_jti[jti].expires_at == t.expires_at, "the listed expires_at is the token's")
            check(abs(by_jti[jti].created_at - t0) < 120, "created_at: unix seconds, now")
        # ListTokens never carries a raw token, not even in a field the SDK drops.
        raw = api_stub_call("ListTokens", boxd_pb().ListTokensRequest(), tok)
        wire = raw.SerializeToString()
        check(day.token.encode() not in wire and hour.token.encode() not in wire and tok.encode() not in wire,
              "ListTokens on the wire holds no raw token")
        # Revoke: refused at once; the other token still works.
        jti = jwt_parts(hour.token)[1]["jti"]
        with Compute(api_key=BOB_KEY) as bob:
            expect(lambda: bob.token.revoke(jti), NotFoundError, "bob revokes alice's token: NotFoundError (A9)", code=NOT_FOUND)
            check(jti not in {i.jti for i in bob.token.list()}, "bob's token.list() lacks alice's tokens")
        with Compute(token=hour.token) as h2:
            check(h2.whoami().user_id == me.user_id, "the token works before its revocation (and after bob's try)")
            c.token.revoke(jti)
            expect(h2.whoami, AuthenticationError, "revoked: refused at once (AuthenticationError)", code=UNAUTH)
        with Compute(token=day.token) as d2:
            check(d2.whoami().user_id == me.user_id, "another token of alice's still works")
            # A token made with a token works like one made with a key.
            t2 = d2.token.create(expires_in=600)
            with Compute(token=t2.token) as d3:
                check(d3.whoami().user_id == me.user_id, "a token made by a token's client works")
        expect(lambda: c.token.revoke("no-such-jti"), NotFoundError, "revoke of an unknown jti: NotFoundError")
    return me


def expired_token():
    section("an expired token")
    wait = SHORT["made"] + 70 - time.time()
    if wait > 0:
        time.sleep(wait)
    with Compute(token=SHORT["token"].token) as s:
        expect(s.whoami, AuthenticationError, "a token 70 s past its expiry: AuthenticationError", code=UNAUTH)


def boxd_pb():
    from boxd._generated import api_pb2
    return api_pb2


def api_stub_call(method, request, token):
    """One unary call with the SDK's generated stub and a bearer of our
    choosing (to look at what the SDK's types drop)."""
    from boxd._generated import api_pb2_grpc
    target = API_URL.split("://", 1)[1]
    with grpc.insecure_channel(target) as ch:
        stub = api_pb2_grpc.BoxdApiStub(ch)
        return getattr(stub, method)(request, metadata=[("authorization", f"Bearer {token}")], timeout=30)


def identity(me):
    section("whoami and config")
    with alice() as c:
        check(me.user_id != "", f"whoami: user_id {me.user_id!r}")
        check(isinstance(me.fingerprints, list) and ALICE_FP in me.fingerprints,
              f"whoami: the fingerprints of alice's SSH keys ({me.fingerprints})")
        check(me.default_network_id != "", f"whoami: default_network_id {me.default_network_id!r}")
        cfg = c.config()
        check(cfg.zone == ZONE, f"config: zone {cfg.zone!r}")
        check(isinstance(cfg.default_image, str), f"config: default_image {cfg.default_image!r}")
    with Compute(api_key=BOB_KEY) as bob:
        bme = bob.whoami()
        check(bme.user_id and bme.user_id != me.user_id, f"bob is another user ({bme.user_id})")
        check(ALICE_FP not in bme.fingerprints, "bob's fingerprints lack alice's key")
        check(bme.default_network_id and bme.default_network_id != me.default_network_id,
              "bob's default network is not alice's")


def readme():
    section("README quick start")
    with Compute(api_key=KEY) as c:
        box = made(c.box.create(name=f"{P}-my-vm"))
        result = box.exec("echo", "hello")
        print(result.stdout, end="")
        check(result.stdout == "hello\n" and result.stderr == "" and result.exit_code == 0 and result.success,
              f"README: echo hello ({result})")
        box.destroy()
        check(box.status == "destroyed", "destroy: the local status")
        gone(c, box.id, "README box")
        e = expect(lambda: box.exec("true"), BoxdError, "exec on a destroyed box: refused")
        check(e.grpc_code in (code_of(NOT_FOUND), code_of(PRECONDITION)),
              f"exec on a destroyed box: NOT_FOUND or FAILED_PRECONDITION ({e.grpc_code})")


# ---- boxes -------------------------------------------------------------------------------


def lifecycle_boxes(c):
    """Boxes whose lifecycle runs meanwhile: checked by lifecycle_later."""
    gone_soon = made(c.box.create(name=f"{P}-ttl", config=BoxConfig(lifecycle=LifecycleConfig(auto_destroy_timeout=4))))
    sleepy = made(c.box.create(name=f"{P}-sleepy", config=BoxConfig(lifecycle=LifecycleConfig(auto_suspend_timeout=3))))
    return gone_soon, sleepy


def lifecycle_later(c, gone_soon, sleepy):
    section("lifecycle timeouts")
    poll(lambda: is_gone(c, gone_soon.id), 60, "auto_destroy_timeout 4 s: the box went away")
    got = c.box.get(sleepy.id)._async
    check(got.auto_suspend_timeout_secs == 3, f"get: auto_suspend_timeout_secs 3 ({got.auto_suspend_timeout_secs})")
    poll(lambda: c.box.get(sleepy.id).status == "suspended", 60, "auto_suspend_timeout 3 s on an idle network: suspended")
    r = sleepy.resume()
    check(r.resume_us > 0, f"resume after an auto-suspend ({r.resume_us} us)")
    check(sleepy.exec("echo", "awake").stdout == "awake\n", "the auto-suspended box runs again")


def boxes(c):
    section("boxes: create, get, list")
    cfg = BoxConfig(vcpu=1, memory="512M", env={"BOX_ENV": "a b'c", "EMPTY": ""})
    box = made(c.box.create(name=f"{P}-main", config=cfg))
    check(box.id and box.name == f"{P}-main", f"create: id and name ({box!r})")
    check(isinstance(box.status, str) and box.status, f"create: a status ({box.status})")
    check(isinstance(box.url, str) and (box.url == "" or ZONE in box.url), f"create: url in the zone ({box.url!r})")
    check(box.boot_time_ms is None or box.boot_time_ms > 0, f"create: boot_time_ms ({box.boot_time_ms})")
    with deadline(120, "wait_until_ready"):
        box.wait_until_ready()
    check(c.box.get(box.id).status == "running", "wait_until_ready: running (A1)")
    check(ok_sh(box, 'printf %s "$BOX_ENV"') == "a b'c", "config env is the exec's environment (A3)")
    check(ok_sh(box, 'printf %s "${EMPTY-unset}"') == "", "an empty env value is set, empty")
    # cgroup v2 or v1 (this host is a hybrid: a sandbox may see either).
    mem = ok_sh(box, "cat /sys/fs/cgroup/memory.max 2>/dev/null || "
                     "cat /sys/fs/cgroup/memory/memory.limit_in_bytes").strip()
    check(mem == str(512 * MIB), f"memory 512M is the cgroup's memory limit (A3) ({mem})")
    quota, period = ok_sh(box, "cat /sys/fs/cgroup/cpu.max 2>/dev/null || "
                               "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) "
                               "$(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)").split()
    check(int(quota) == int(period), f"vcpu 1 is the cgroup's CPU quota ({quota} {period})")

    unnamed = made(c.box.create())
    check(unnamed.name != "", f"create() without a name: the server names it (A2) ({unnamed.name!r})")
    check(c.box.get(unnamed.name).id == unnamed.id, "get by the name the server gave")
    unnamed.destroy()

    got = c.box.get(box.id)
    check(got.id == box.id and got.name == box.name, "get by id")
    by_name = c.box.get(box.name)
    check(by_name.id == box.id, "get by name")
    a = by_name._async
    check(a.restart_policy == "always", f"get: restart_policy, BoxConfig's default ({a.restart_policy})")
    e = expect(lambda: c.box.get(f"{P}-nothing"), NotFoundError,
               "get of an unknown name: NotFoundError after the ListVms fallback (GetVm was NOT_FOUND)")
    check(str(e) == f"VM not found: {P}-nothing", f"the SDK's own message, so GetVm answered NOT_FOUND ({e})")
    expect(lambda: c.box.get(str(uuid.uuid4())), NotFoundError, "get of an unknown id: NotFoundError")
    listed = {b.id: b for b in c.box.list()}
    check(box.id in listed and listed[box.id].name == box.name and listed[box.id].status == "running",
          "list holds the box, running")
    check(listed[box.id].exec("echo", "x").stdout == "x\n", "a listed Box works")
    with Compute(api_key=BOB_KEY) as bob:
        check(box.id not in {b.id for b in bob.box.list()}, "bob's list lacks alice's box")
        expect(lambda: bob.box.get(box.id), NotFoundError, "bob gets alice's box by id: NotFoundError (A9; the SDK's own after its ListVms fallback)")
        expect(lambda: bob.box.get(box.name), NotFoundError, "bob gets alice's box by name: NotFoundError (A9)")
    return box


def exec_checks(box):
    section("exec")
    r = sh(box, "echo out; echo err >&2; exit 3")
    check((r.stdout, r.stderr, r.exit_code, r.success) == ("out\n", "err\n", 3, False), f"stdout, stderr apart, exit 3 ({r})")
    check(box.exec("true").exit_code == 0 and box.exec("false").exit_code == 1, "exit codes 0 and 1")
    check(sh(box, "exit 255").exit_code == 255, "exit 255")
    r = sh(box, "kill -9 $$")
    check(r.exit_code not in (0, -1), f"killed by a signal: a failure exit code ({r.exit_code})")
    r = box.exec("printf", "%s|", "a b", "$HOME", "'q'", ";", "`x`", "héllo ✓", "")
    check(r.stdout == "a b|$HOME|'q'|;|`x`|héllo ✓||", f"arguments reach the command verbatim ({r.stdout!r})")
    trap = "a b'c \"d\" $HOME `id` \\ \n end"
    r = box.exec("sh", "-c", 'printf %s "$V"', env={"V": trap, "W": "x"})
    check(r.stdout == trap, f"env with quoting traps (through a POSIX shell) ({r.stdout!r})")
    r = sh(box, "head -c 1000000 /dev/zero | tr '\\000' a; echo tail >&2; exit 5")
    check(len(r.stdout) == 1000000 and set(r.stdout) == {"a"} and r.stderr == "tail\n" and r.exit_code == 5,
          f"1 MB of stdout, stderr last, exit 5: the exit frame comes last ({len(r.stdout)}, {r.stderr!r}, {r.exit_code})")
    r = sh(box, "echo late >&2; sleep 0.2; echo later >&2; exit 4")
    check((r.stderr, r.exit_code) == ("late\nlater\n", 4), f"stderr before the exit keeps exit 4 ({r})")

    t = time.monotonic()
    with deadline(60, "a timed exec"):
        expect(lambda: box.exec("sleep", "37", timeout=2), BoxdTimeout, "exec(timeout=2) of sleep 37: boxd.TimeoutError")
    check(time.monotonic() - t < 15, f"the deadline held ({time.monotonic() - t:.1f}s)")
    poll(lambda: not any(p.startswith("sleep 37") for p in processes(box)), 15,
         "the timed-out command was killed (A5)")

    with deadline(30, "non-stream cat sees EOF"):
        r = box.exec("cat", timeout=20)
    check((r.stdout, r.exit_code) == ("", 0), f"non-stream cat: stdin at EOF, exit 0 ({r})")

    with deadline(60, "stdin streaming"):
        p = box.exec("cat", stream=True)
        p.stdin.write(b"ping\n")
        got = b""
        while b"ping\n" not in got:
            chunk = p.read_stdout()
            if not chunk:
                break
            got += chunk
        check(got == b"ping\n", f"stdin reaches cat before any EOF, echoed back ({got!r})")
        p.stdin.write("wörld ")
        p.stdin.write(b"\x00\xff\n")
        p.resize(10, 10)  # no PTY: ignored
        p.stdin.write_eof()
        rest = b"".join(p.iter_stdout())
        check(rest == "wörld ".encode() + b"\x00\xff\n", f"stdin bytes then write_eof: cat echoes all, ends ({rest!r})")
        check(p.wait() == 0, "cat exits 0 after stdin's EOF (the half-close is not the end of the call)")

    with deadline(60, "2 MiB through stdin"):
        p = box.exec("python3", "-c", "import sys, hashlib; d = sys.stdin.buffer.read(); "
                     "print(len(d), hashlib.sha256(d).hexdigest())", stream=True)
        blob = os.urandom(2 * MIB)
        for i in range(0, len(blob), 256 * 1024):
            p.stdin.write(blob[i:i + 256 * 1024])
        p.stdin.write_eof()
        out = b"".join(p.iter_stdout()).decode()
        check(p.wait() == 0 and out.split()[0] == str(2 * MIB) and out.split()[1] == hashlib.sha256(blob).hexdigest(),
              f"2 MiB through stdin, whole ({out.split()[:1]})")

    with deadline(30, "close_stdin"):
        p = box.exec("cat", stream=True, close_stdin=True)
        check(p.wait() == 0, "close_stdin=True: cat sees EOF at once, exits 0")
    expect(lambda: box.exec("cat", stream=True, close_stdin=True, pty=True), ValueError,
           "close_stdin with a PTY: ValueError before anything is sent")

    with deadline(60, "stream iter_stdout / iter_stderr"):
        p = sh(box, "for i in 1 2 3; do echo out$i; echo err$i >&2; sleep 0.1; done; exit 7", stream=True)
        out = b"".join(p.iter_stdout())
        err = b"".join(p.iter_stderr())
        check((out, err) == (b"out1\nout2\nout3\n", b"err1\nerr2\nerr3\n"), f"iter_stdout / iter_stderr apart ({out!r} {err!r})")
        check(p.wait() == 7, "stream: wait() is the exit code 7")

    with deadline(60, "PTY"):
        p = box.exec("stty", "size", stream=True, pty=True, cols=123, rows=45)
        out = b"".join(p.iter_stdout())
        check(b"45 123" in out and p.wait() == 0, f"a PTY with cols=123 rows=45: stty size ({out!r})")
        p = box.exec("stty", "size", stream=True, pty=True)
        out = b"".join(p.iter_stdout())
        check(b"24 80" in out, f"a PTY without a size: 80x24 ({out!r})")
        p = sh(box, "test -t 0 && echo tty; echo to-stderr >&2", stream=True, pty=True)
        out, err = b"".join(p.iter_stdout()), b"".join(p.iter_stderr())
        check(b"tty" in out and b"to-stderr" in out and err == b"", f"a PTY: a terminal, stderr merged ({out!r} {err!r})")
        r = sh(box, "test -t 0 || echo notty")
        check(r.stdout == "notty\n", "without a PTY stdin is no terminal")
        p = box.exec("bash", "-c", "trap 'stty size; exit 0' WINCH; echo ready; while :; do sleep 0.1; done",
                     stream=True, pty=True, cols=100, rows=30)
        got = b""
        while b"ready" not in got:
            chunk = p.read_stdout()
            if not chunk:
                break
            got += chunk
        check(b"ready" in got, "the PTY shell is ready")
        p.resize(132, 50)
        while b"50 132" not in got:
            chunk = p.read_stdout()
            if not chunk:
                break
            got += chunk
        check(b"50 132" in got, f"resize(132, 50): window_change reaches the PTY (SIGWINCH) ({got[-40:]!r})")
        check(p.wait() == 0, "the resized shell exits 0")
        p = box.exec("bash", interactive=True, stream=True)
        p.stdin.write(b"echo inter$((6*7))\n")
        p.stdin.write(b"exit 3\n")
        out = b"".join(p.iter_stdout())
        check(b"inter42" in out and p.wait() == 3, f"interactive bash: input runs, exit 3 ({out[-60:]!r})")

    with deadline(60, "close() kills"):
        p = sh(box, "sleep 4243 & echo started; exec sleep 4242", stream=True)
        got = b""
        while b"started" not in got:
            chunk = p.read_stdout()
            if not chunk:
                break
            got += chunk
        check(b"started" in got, "a long command started")
        p.close()
        p.close()  # idempotent
    poll(lambda: not any(x.startswith(("sleep 4242", "sleep 4243")) for x in processes(box)), 20,
         "close() (a cancelled call) killed the command and its process group (A5)")

    # Background processes an exec starts outlive it (A5).
    ok_sh(box, "(nohup sleep 4244 >/dev/null 2>&1 &)")
    time.sleep(1)
    check(any(x.startswith("sleep 4244") for x in processes(box)), "a background process outlives its exec")
    ok_sh(box, "kill $(for p in /proc/[0-9]*; do grep -q '^sleep.4244' $p/cmdline 2>/dev/null && basename $p; done) || true")


def file_checks(box):
    section("files")
    data = bytes(range(256)) * 16
    box.write_file(data, "/work/bin.dat")
    check(box.read_file("/work/bin.dat") == data, "write_file(bytes) / read_file: byte-exact")
    box.write_file("text ünïcode ✓\n", "/work/t.txt")
    check(box.read_file("/work/t.txt") == "text ünïcode ✓\n".encode(), "write_file(str): UTF-8")
    check(ok_sh(box, "cat /work/t.txt") == "text ünïcode ✓\n", "the file is there for commands")
    with tempfile.TemporaryDirectory() as d:
        src = Path(d) / "local.py"
        src.write_bytes(b"print('from a Path')\n")
        box.write_file(src, "/work/p.py")
    check(ok_sh(box, "python3 /work/p.py") == "from a Path\n", "write_file(Path)")
    big = os.urandom(3 * MIB)
    box.write_file(big, "/work/big.bin")
    check(box.read_file("/work/big.bin") == big, "3 MiB written and read back byte-exact")
    box.write_file(b"", "/work/empty")
    check(box.read_file("/work/empty") == b"", "an empty file")
    box.write_file(b"second", "/work/t.txt")
    check(box.read_file("/work/t.txt") == b"second", "write_file replaces a file")
    huge = os.urandom(8 * MIB)
    box.write_file(huge, "/work/huge.bin")
    sums = ok_sh(box, "wc -c < /work/huge.bin; sha256sum /work/huge.bin").split()
    check(sums[0] == str(8 * MIB) and sums[1] == hashlib.sha256(huge).hexdigest(),
          "8 MiB in one UploadFile message: the server's receive limit is raised, the file whole")
    expect(lambda: box.read_file("/work/huge.bin"), QuotaExceededError,
           "read_file of 8 MiB: past the SDK's 4 MiB receive limit (RESOURCE_EXHAUSTED, the client's)")
    box.write_file(b"before", "/work/limit.bin")
    over = MAX_MESSAGE + MIB
    expect(lambda: box.write_file(b"\0" * over, "/work/limit.bin"), QuotaExceededError,
           f"a {over >> 20} MiB message, over the server's receive limit: QuotaExceededError (A6)", code=EXHAUSTED)
    check(box.read_file("/work/limit.bin") == b"before", "the refused write left the file as it was")
    expect(lambda: box.read_file("/work/no-such-file"), NotFoundError, "read_file of a missing file: NotFoundError (A6)", code=NOT_FOUND)
    expect(lambda: box.write_file(b"x", "relative.txt"), InvalidArgumentError, "write_file to a relative path (A6)", code=INVALID)


def logs_and_restart(c):
    section("cmd, restart_policy, logs")
    loop = "echo boxd-run; sleep 1"
    always = made(c.box.create(name=f"{P}-always", config=BoxConfig(cmd=["sh", "-c", loop], restart_policy="always")))
    never = made(c.box.create(name=f"{P}-never", config=BoxConfig(cmd=["sh", "-c", loop], restart_policy="never")))
    ticker = made(c.box.create(name=f"{P}-ticker", config=BoxConfig(
        cmd=["sh", "-c", "i=0; while :; do i=$((i+1)); echo tick-$i; sleep 0.3; done"], restart_policy="never")))

    def runs(box):
        with deadline(60, f"stream_logs of {box.name}"):
            return b"".join(box.stream_logs()).count(b"boxd-run")

    poll(lambda: runs(always) >= 3, 90, "restart_policy always: the main process ran again after it exited (A4)")
    n = runs(never)
    check(n == 1, f"restart_policy never: it ran once, not again ({n} runs in as long)")
    check(c.box.get(always.id)._async.restart_policy == "always" and c.box.get(never.id)._async.restart_policy == "never",
          "get: restart_policy as created")
    poll(lambda: b"tick-3" in b"".join(ticker.stream_logs()), 30, "stream_logs(): the main process's output")
    with deadline(60, "stream_logs() without follow ends"):
        snap = b"".join(ticker.stream_logs())
    last = max(int(n) for n in re.findall(rb"tick-(\d+)\n", snap))
    with deadline(60, "stream_logs(follow=True) brings new output"):
        seen = b""
        for chunk in ticker.stream_logs(follow=True):
            seen += chunk
            if f"tick-{last + 3}\n".encode() in seen:
                break
    check(f"tick-{last + 3}\n".encode() in seen, f"follow=True: lines written after the call (tick-{last + 3})")
    with deadline(30, "stream_logs of a box without cmd"):
        list(c.box.get(f"{P}-main").stream_logs())
    check(True, "stream_logs() of a box without output ends")
    for b in (always, never, ticker):
        b.destroy()


def lifecycle(c, box):
    section("stop, start, reboot, suspend, resume")
    box.write_file(b"kept", "/work/keep.txt")
    ok_sh(box, "(nohup sleep 4245 >/dev/null 2>&1 &)")
    box.stop()
    check(box.status == "stopped" and c.box.get(box.id).status == "stopped", "stop: stopped (A1)")
    expect(lambda: box.exec("true", timeout=20), BoxdError, "exec on a stopped box: FAILED_PRECONDITION (A5)",
           code=PRECONDITION)
    box.start()
    with deadline(120, "wait_until_ready after start"):
        box.wait_until_ready()
    check(c.box.get(box.id).status == "running", "start: running")
    check(box.read_file("/work/keep.txt") == b"kept", "files kept across stop/start")
    check(not any(x.startswith("sleep 4245") for x in processes(box)), "stop ended the box's processes")
    ok_sh(box, "(nohup sleep 4246 >/dev/null 2>&1 &)")
    box.reboot()
    with deadline(120, "wait_until_ready after reboot"):
        box.wait_until_ready()
    check(box.read_file("/work/keep.txt") == b"kept", "files kept across reboot")
    check(not any(x.startswith("sleep 4246") for x in processes(box)), "reboot started the box afresh")

    ok_sh(box, "(nohup sh -c 'i=0; while :; do i=$((i+1)); echo $i > /work/counter; sleep 0.2; done' >/dev/null 2>&1 &)")
    poll(lambda: counter(box) > 3, 20, "a background counter runs")
    before = counter(box)
    s = box.suspend()
    check(s.suspend_us > 0, f"suspend: suspend_us {s.suspend_us}")
    check(c.box.get(box.id).status == "suspended", "suspended (A1)")
    time.sleep(3)
    r = box.resume()
    check(r.resume_us > 0, f"resume: resume_us {r.resume_us}")
    after = counter(box)
    check(before <= after <= before + 10, f"frozen while suspended: {before} -> {after} over 3 s (15 if it had run)")
    time.sleep(1)
    later = counter(box)
    check(later > after, f"resumed with its memory: the counter goes on from {after} ({later})")
    check(c.box.get(box.id).status == "running", "resume: running")
    # (the pattern does not match its own command line)
    ok_sh(box, "kill $(for p in /proc/[0-9]*; do grep -q 'work/count[e]r' $p/cmdline 2>/dev/null && basename $p; done) "
               "2>/dev/null || true")


def counter(box):
    """The counter's file (written anew each time: read until whole)."""
    for _ in range(50):
        v = box.read_file("/work/counter").strip()
        if v.isdigit():
            return int(v)
        time.sleep(0.02)
    raise AssertionError(f"/work/counter never read whole ({v!r})")


def fork_checks(c, box):
    section("fork")
    box.write_file(b"forked content", "/work/fork.txt")
    with deadline(180, "fork"):
        f = made(c.box.fork(box.name, name=f"{P}-fork"))
    check(f.id != box.id and f.name == f"{P}-fork", f"fork by name: a new box ({f!r})")
    check(f._async.forked_from == box.id, f"fork: forked_from is the source's id ({f._async.forked_from})")
    with deadline(120, "wait_until_ready of the fork"):
        f.wait_until_ready()
    check(f.read_file("/work/fork.txt") == b"forked content", "the fork has the source's files")
    f.write_file(b"only in the fork", "/work/fork.txt")
    check(box.read_file("/work/fork.txt") == b"forked content", "the source is untouched by the fork's writes")
    f2 = made(c.box.fork(box.id))
    check(f2.name and f2.name != box.name, f"fork by id without a name: named by the server ({f2.name})")
    f2.destroy()
    expect(lambda: c.box.fork(f"{P}-nothing"), NotFoundError, "fork of an unknown box: NotFoundError")
    with Compute(api_key=BOB_KEY) as bob:
        expect(lambda: bob.box.fork(box.id), NotFoundError, "bob forks alice's box: NotFoundError (A9)")
        expect(lambda: bob._run(bob._async._call("ForkVm", boxd_pb().ForkVmRequest(source_vm_id=box.id))),
               NotFoundError, "bob's raw ForkVm of alice's box id: NotFoundError (A9)", code=NOT_FOUND)
    f.destroy()
    gone(c, f.id, "the fork")


def templates(c):
    section("templates")
    image_name = IMAGE.rsplit("/", 2)[-2] + "/" + IMAGE.rsplit("/", 1)[-1]  # e.g. boxd/busybox:1
    t = c.template.create(name=f"{P}-tpl", image=IMAGE, config=BoxConfig(vcpu=1, memory="256M", env={"TPL": "yes"}))
    TEMPLATES.append(t.id)
    check(t.id and t.name == f"{P}-tpl" and isinstance(t.status, str), f"template.create ({t})")
    listed = {x.id: x for x in c.template.list()}
    check(t.id in listed, "template.list holds it")
    lt = listed[t.id]
    check((lt.name, lt.image, lt.vcpu, lt.memory_bytes) == (t.name, IMAGE, 1, 256 * MIB),
          f"template.list: name, image, vcpu, memory ({lt})")
    expect(lambda: c.template.create(name=f"{P}-tpl", image=IMAGE), InvalidArgumentError,
           "a template name taken: InvalidArgumentError (ALREADY_EXISTS) (A8)", code=EXISTS)
    b1 = made(c.template.create_vm(t, name=f"{P}-tb1"))
    check(b1.name == f"{P}-tb1", f"create_vm(Template) ({b1!r})")
    with deadline(120, "template box ready"):
        b1.wait_until_ready()
    check(ok_sh(b1, "cat /etc/image-name").strip() == image_name, "the template's image")
    # (BoxConfig.env never reaches the server for a template: VmConfig has no
    # env field, and CreateTemplateRequest none either.)
    check(mem_limit(b1) == str(256 * MIB), "the template's memory")
    b2 = made(c.template.create_vm(t.id, name=f"{P}-tb2", config=BoxConfig(memory="384M")))
    with deadline(120, "template box 2 ready"):
        b2.wait_until_ready()
    check(mem_limit(b2) == str(384 * MIB), "create_vm(id, config=...): memory overridden")
    check(ok_sh(b2, "cat /etc/image-name").strip() == image_name, "the rest from the template (its image)")
    with Compute(api_key=BOB_KEY) as bob:
        check(t.id not in {x.id for x in bob.template.list()}, "bob's template.list lacks alice's")
        expect(lambda: bob.template.create_vm(t.id, name=f"{P}-bobtpl"), NotFoundError,
               "bob creates from alice's template: NotFoundError (A9)", code=NOT_FOUND)
        expect(lambda: bob.template.delete(t.id), NotFoundError, "bob deletes alice's template: NotFoundError (A9)")
    c.template.delete(t.id)
    check(t.id not in {x.id for x in c.template.list()}, "template.delete: gone from the list")
    expect(lambda: c.template.create_vm(t.id), NotFoundError, "create_vm of a deleted template: NotFoundError", code=NOT_FOUND)
    b1.destroy()
    b2.destroy()


def disks(c):
    section("disks")
    d = c.disk.create(f"{P}-disk", "64M")
    DISKS.append(d.id)
    check(d.id and d.name == f"{P}-disk" and d.size_bytes == 64 * MIB, f"disk.create 64M: {d!r}")
    listed = {x.id: x for x in c.disk.list()}
    check(d.id in listed and listed[d.id].name == d.name and listed[d.id].size_bytes == 64 * MIB
          and isinstance(listed[d.id].status, str), "disk.list holds it")
    expect(lambda: c.disk.create(f"{P}-disk", "64M"), InvalidArgumentError, "a disk name taken: ALREADY_EXISTS (A8)", code=EXISTS)
    expect(lambda: c.disk.create(f"{P}-zero", "0"), InvalidArgumentError, "a disk of 0 bytes (A15)", code=INVALID)
    expect(lambda: c.disk.create(f"{P}-bad", "lots"), ValueError, "a size that does not parse: ValueError in the SDK")
    da = made(c.box.create(name=f"{P}-da"))
    db = made(c.box.create(name=f"{P}-db"))
    for b in (da, db):
        with deadline(120, f"{b.name} ready"):
            b.wait_until_ready()
    d.attach(da, mount_path="/mnt/data")
    blob = os.urandom(MIB)
    da.write_file(blob, "/mnt/data/blob")
    ok_sh(da, "echo from-a > /mnt/data/f && sync")
    check(ok_sh(da, "cat /mnt/data/f") == "from-a\n", "attach(Box): the disk is mounted at the path")
    expect(lambda: d.attach(db, mount_path="/mnt/x"), BoxdError,
           "the disk attached read-write twice: FAILED_PRECONDITION (A8)", code=PRECONDITION, exact=True)
    d.attach(db.name, mount_path="/mnt/ro", read_only=True)
    check(ok_sh(db, "cat /mnt/ro/f") == "from-a\n", "attach(name, read_only=True): readable")
    r = sh(db, "echo no > /mnt/ro/g")
    check(r.exit_code != 0, f"a read-only attach refuses writes ({r.exit_code} {r.stderr.strip()!r})")
    expect(lambda: d.destroy(), BoxdError, "destroying an attached disk: FAILED_PRECONDITION (A8)", code=PRECONDITION)
    d.detach(da)
    check(sh(da, "test -e /mnt/data/f").exit_code != 0, "detach(Box): the files are gone from the box")
    d.detach(db.name)
    check(sh(db, "test -e /mnt/ro/f").exit_code != 0, "detach(name)")
    handle = [x for x in c.disk.list() if x.id == d.id][0]
    handle.attach(db.name, mount_path="/mnt/data2")
    check(db.read_file("/mnt/data2/blob") == blob and ok_sh(db, "cat /mnt/data2/f") == "from-a\n",
          "written in one box, read in another after detach/attach")
    ok_sh(db, "echo from-b > /mnt/data2/f && sync")
    handle.detach(db)
    d.attach(da.name, mount_path="/mnt/again")
    check(ok_sh(da, "cat /mnt/again/f") == "from-b\n", "and back: the other box's write")
    d.detach(da.name)
    expect(lambda: d.attach(da, mount_path="relative"), InvalidArgumentError, "a relative mount path", code=INVALID)
    with Compute(api_key=BOB_KEY) as bob:
        bb = made(bob.box.create(name=f"{P}-bobdisk"), "bob")
        expect(lambda: d.attach(bb.id, mount_path="/mnt/steal"), NotFoundError,
               "alice attaches her disk to bob's box: NotFoundError (A9)", code=NOT_FOUND)
        check(d.id not in {x.id for x in bob.disk.list()}, "bob's disk.list lacks alice's")
        bb.destroy()
    # A disk given at create (BoxConfig.volumes).
    dc = made(c.box.create(name=f"{P}-dc", config=BoxConfig(volumes=[VolumeMount(d.id, "/mnt/v", read_only=True)])))
    with deadline(120, "dc ready"):
        dc.wait_until_ready()
    check(ok_sh(dc, "cat /mnt/v/f") == "from-b\n", "BoxConfig(volumes=[VolumeMount(...)]): mounted at create")
    check(sh(dc, "touch /mnt/v/z").exit_code != 0, "read_only at create holds")
    dc.destroy()
    d.destroy()
    check(d.id not in {x.id for x in c.disk.list()}, "disk.destroy: gone from the list")
    for b in (da, db):
        b.destroy()


def proxies_and_domains(c, bob):
    section("proxies and the ingress")
    box = made(c.box.create(name=f"{P}-web", config=BoxConfig(network=NetworkConfig(proxies=[ProxyEntry("early", 8000)]))))
    with deadline(120, "web box ready"):
        box.wait_until_ready()
    serve(box, 8000, "alice-A")
    host = f"{box.name}.{ZONE}"
    routed(host, "alice-A", f"https://{host}: the default proxy finds port 8000 (port 0 = auto) (A10)")
    st, body = ingress(host, host_header=f"{host}:{IPORT}")
    check((st, body) == (200, "alice-A"), f"a Host with its :port routes the same ({st})")
    routed(f"early.{host}", "alice-A", "a proxy given in BoxConfig.network at create")
    ps = box.proxies()
    defaults = [p for p in ps if p.is_default]
    check(len(defaults) == 1 and defaults[0].domain == host, f"proxies(): one default, {host} ({ps})")
    check(any(p.name == "early" and p.port == 8000 and p.domain == f"early.{host}" for p in ps), "proxies(): early:8000")
    check(all(p.vm_name == box.name for p in ps), "proxies(): vm_name")
    serve(box, 9000, "alice-B")
    api = box.create_proxy("api", port=9000)
    check((api.name, api.port, api.domain, api.vm_name) == ("api", 9000, f"api.{host}", box.name), f"create_proxy ({api})")
    routed(f"api.{host}", "alice-B", f"https://api.{host} -> 9000")
    expect(lambda: box.create_proxy("api", port=9001), InvalidArgumentError, "a proxy name taken: ALREADY_EXISTS (A8)", code=EXISTS)
    expect(lambda: box.create_proxy("big", port=70000), InvalidArgumentError, "a port over 65535 (A15)", code=INVALID)
    box.set_proxy_port(9000)
    routed(host, "alice-B", "set_proxy_port(9000): the default proxy moves")
    check([p.port for p in box.proxies() if p.is_default] == [9000], "the default proxy lists port 9000")
    box.set_proxy_port(port=8000, name="api")
    routed(f"api.{host}", "alice-A", "set_proxy_port(8000, name='api')")
    check([p.port for p in box.proxies() if p.name == "api"] == [8000], "api lists port 8000")
    expect(lambda: box.set_proxy_port(port=8000, name="nope"), NotFoundError, "set_proxy_port of an unknown proxy", code=NOT_FOUND)
    box.delete_proxy("api")
    check("api" not in {p.name for p in box.proxies()}, "delete_proxy: gone from the list")
    time.sleep(0.5)
    not_routed(f"api.{host}", "alice-A", "a deleted proxy")
    expect(lambda: box.delete_proxy("api"), NotFoundError, "delete_proxy of an unknown name", code=NOT_FOUND)
    not_routed(f"nothing-{P}.{ZONE}", "alice", "a box name nobody has")

    # WebSocket through the ingress.
    box.write_file(WS_ECHO, "/work/ws.py")
    ok_sh(box, "(nohup python3 /work/ws.py 8765 >/dev/null 2>&1 &)")
    box.create_proxy("ws", port=8765)
    poll(lambda: ws_echo(f"ws.{host}", "hi") == "echo:hi", 30, "a WebSocket through the ingress echoes")

    # Bob cannot touch alice's proxies.
    bob_view = boxd.aio.Box(id=box.id, name=box.name, image="", public_ip="", status="", _client=bob._async)
    expect(lambda: bob._run(bob_view.create_proxy("steal", 8000)), NotFoundError, "bob creates a proxy on alice's box (A9)", code=NOT_FOUND)
    expect(lambda: bob._run(bob_view.delete_proxy("early")), NotFoundError, "bob deletes alice's proxy (A9)", code=NOT_FOUND)
    expect(lambda: bob._run(bob_view.set_proxy_port(9000, "early")), NotFoundError, "bob moves alice's proxy (A9)", code=NOT_FOUND)
    try:
        seen = bob._run(bob_view.proxies())
        check(seen == [], f"bob lists no proxy of alice's box ({seen})")
    except NotFoundError:
        check(True, "bob's proxies() of alice's box: NotFoundError")
    routed(f"early.{host}", "alice-A", "alice's proxies unchanged after bob's tries")

    section("domains")
    dom, dom2 = f"{P}.example.test", f"www.{P}.example.test"
    c.domain.bind(dom, box)
    DOMAINS.append(dom)
    c.domain.bind(dom2, box.name)
    DOMAINS.append(dom2)
    listed = {d.domain: d.vm_id for d in c.domain.list()}
    check(listed.get(dom) == box.id and listed.get(dom2) == box.id, f"domain.list: both bound to the box's id ({listed})")
    routed(dom, "alice-B", f"https://{dom} reaches the box's default proxy (9000)", verify_name=False)
    expect(lambda: c.domain.bind(dom, f"{P}-main"), InvalidArgumentError, "a domain already bound: ALREADY_EXISTS (A8)", code=EXISTS)
    bb = made(bob.box.create(name=f"{P}-bobweb"), "bob")
    with deadline(120, "bob's web box"):
        bb.wait_until_ready()
    serve(bb, 8000, "bob-B")
    routed(f"{bb.name}.{ZONE}", "bob-B", "bob's box on its own name")
    expect(lambda: bob.domain.bind(dom, bb), InvalidArgumentError, "bob binds alice's domain: ALREADY_EXISTS (A8)", code=EXISTS)
    expect(lambda: bob.domain.unbind(dom), NotFoundError, "bob unbinds alice's domain: NotFoundError (A9)", code=NOT_FOUND)
    expect(lambda: bob.domain.bind(f"bob.{P}.example.test", box.id), NotFoundError, "bob binds a domain to alice's box (A9)")
    expect(lambda: bob._run(bob._async._call("BindDomain", boxd_pb().BindDomainRequest(domain=f"bob.{P}.example.test",
                                                                                       vm_id=box.id))),
           NotFoundError, "bob's raw BindDomain to alice's box id: NotFoundError (A9)", code=NOT_FOUND)
    check(dom not in {d.domain for d in bob.domain.list()}, "bob's domain.list lacks alice's")
    try:
        c.domain.bind(f"{bb.name}.{ZONE}", box)
        DOMAINS.append(f"{bb.name}.{ZONE}")
        hijack = "accepted"
    except BoxdError as e:
        hijack = f"{type(e).__name__}: {e}"
    check(True, f"alice binds bob's box's zone name: {hijack}")
    routed(f"{bb.name}.{ZONE}", "bob-B", "bob's box's name still reaches bob's box")
    routed(dom, "alice-B", "alice's domain still reaches alice's box", verify_name=False)
    expect(lambda: c.domain.bind("not a domain!", box), InvalidArgumentError, "a malformed domain", code=INVALID)
    expect(lambda: c.domain.bind(f"x.{P}.example.test", f"{P}-nothing"), NotFoundError, "a domain for an unknown box")
    c.domain.unbind(dom2)
    check(dom2 not in {d.domain for d in c.domain.list()}, "domain.unbind: gone from the list")
    time.sleep(0.5)
    not_routed(dom2, "alice", "an unbound domain", verify_name=False)
    expect(lambda: c.domain.unbind(dom2), NotFoundError, "unbind of an unbound domain", code=NOT_FOUND)
    # Bob taking alice's box name: refused, or a box of his own that the
    # ingress never confuses with hers.
    twin = None
    try:
        twin = made(bob.box.create(name=box.name), "bob")
        twin_note = f"accepted ({twin.id})"
    except InvalidArgumentError as e:
        twin_note = f"InvalidArgumentError ({e})"
    check(True, f"bob creates a box with alice's box's name: {twin_note}")
    routed(host, "alice-B", "alice's box name still routes to alice's box")
    check(c.box.get(box.name).id == box.id, "and alice's get by name finds hers")
    if twin is not None:
        twin.destroy()
    return box, bb


def networks(c, bob, me, web, bobweb):
    section("networks")
    nets = {n.id: n for n in c.network.list()}
    check(me.default_network_id in nets, f"network.list holds the default network ({list(nets)})")
    default = nets[me.default_network_id]
    sub = ipaddress.ip_network(default.subnet)
    check(default.status != "", f"the default network: subnet {sub}, status {default.status!r} (A11)")
    n = c.network.create(name=f"{P}-net")
    check(n.id and n.id != me.default_network_id and n.subnet == "" and n.status == "",
          f"network.create: only the id ({n})")
    nets = {x.id: x for x in c.network.list()}
    check(n.id in nets, "network.list holds the new network")
    sub2 = ipaddress.ip_network(nets[n.id].subnet)
    check(not sub2.overlaps(sub) and nets[n.id].status != "", f"a subnet of its own ({sub2}, {nets[n.id].status})")
    check(n.id not in {x.id for x in bob.network.list()}, "bob's network.list lacks alice's")
    n2 = c.network.create()
    check(n2.id and n2.id != n.id, "network.create() without a name")

    main = c.box.get(f"{P}-main")
    web_ip, bob_ip = own_ip(web), own_ip(bobweb)
    check(fetch_from(main, f"http://{web.name}:8000/m.txt") == "alice-A",
          "a box reaches its owner's other box by name (A11)")
    check(fetch_from(main, f"http://{web_ip}:8000/m.txt") == "alice-A", f"and by address ({web_ip})")
    got = fetch_from(main, f"http://{bob_ip}:8000/m.txt")
    check(got.startswith("unreachable"), f"alice's box cannot reach bob's box by address ({got})")
    got = fetch_from(main, f"http://{bobweb.name}:8000/m.txt")
    check(got.startswith("unreachable"), f"nor by name ({got})")
    got = fetch_from(bobweb, f"http://{web_ip}:8000/m.txt")
    check(got.startswith("unreachable"), f"bob's box cannot reach alice's ({got})")
    got = fetch_from(bobweb, f"http://{web.name}:8000/m.txt")
    check(got.startswith("unreachable"), f"nor by her box's name ({got})")

    # A sandbox made through the native API without a network: isolated.
    http_ = httpx.Client(timeout=120, headers={"Authorization": f"Bearer {KEY}"})
    r = http_.post(f"{NATIVE}/sandboxes", json={})
    check(r.status_code == 201, f"a native sandbox ({r.status_code} {r.text[:200]})")
    sb = r.json()
    NATIVE_SANDBOXES.append(sb["id"])
    r = http_.post(f"{NATIVE}/sandboxes/{sb['id']}/exec", json={"shell":
        "mkdir -p /srv/n && printf native > /srv/n/m.txt && (nohup python3 -m http.server 8000 --directory /srv/n >/dev/null 2>&1 &)"})
    check(r.status_code == 200 and r.json().get("exit_code") == 0, f"a server in the native sandbox ({r.text[:200]})")
    nip = sb.get("ip") or http_.get(f"{NATIVE}/sandboxes/{sb['id']}").json().get("ip")
    check(bool(nip), f"the native sandbox's address ({nip})")
    probe = "import urllib.request; print(urllib.request.urlopen('http://127.0.0.1:8000/m.txt', timeout=2).read().decode())"

    def native_up():
        r = http_.post(f"{NATIVE}/sandboxes/{sb['id']}/exec", json={"cmd": ["python3", "-c", probe]})
        return r.status_code == 200 and r.json().get("stdout", "").strip() == "native"
    poll(native_up, 30, "the native sandbox serves 8000")
    got = fetch_from(main, f"http://{nip}:8000/m.txt")
    check(got.startswith("unreachable"), f"alice's box cannot reach her native sandbox without a network ({got})")
    r = http_.post(f"{NATIVE}/sandboxes/{sb['id']}/exec", json={"cmd": ["python3", "-c", PROBE, f"http://{web_ip}:8000/m.txt"]})
    check(r.json().get("stdout", "").startswith("unreachable"), f"nor it her box ({r.json().get('stdout', '').strip()})")
    http_.delete(f"{NATIVE}/sandboxes/{sb['id']}")
    http_.close()


def billing(c, bob):
    section("billing")
    plans = c.billing.list_plans()
    check(isinstance(plans, list) and all(isinstance(p.shape, str) and p.vcpu >= 0 for p in plans),
          f"list_plans ({plans})")
    st = c.billing.status()
    check(st.max_vms == ALICE_MAX_VMS, f"status: max_vms is alice's policy's max_sandboxes (A12) ({st})")
    check(isinstance(st.tier, str) and isinstance(st.subscription_status, str), "status: tier, subscription_status")
    check(isinstance(bob.billing.status().max_vms, int), "bob's status")
    expect(lambda: c.billing.create_checkout_session("2x8", "https://x.test/ok", "https://x.test/no"), BoxdError,
           "create_checkout_session without billing: FAILED_PRECONDITION (A12)", code=PRECONDITION, exact=True)
    expect(lambda: c.billing.create_billing_portal_session("https://x.test/back"), BoxdError,
           "create_billing_portal_session: FAILED_PRECONDITION (A12)", code=PRECONDITION, exact=True)
    expect(lambda: c.billing.change_shape("4x16"), BoxdError, "change_shape: FAILED_PRECONDITION (A12)",
           code=PRECONDITION, exact=True)
    with Compute(api_key=CAROL_KEY) as carol:
        check(carol.billing.status().max_vms == 1, "carol's max_vms: her policy's 1")
        one = made(carol.box.create(name=f"{P}-carol1"), "carol")
        expect(lambda: carol.box.create(name=f"{P}-carol2"), QuotaExceededError,
               "carol's second box, past max_sandboxes 1: QuotaExceededError (A15)", code=EXHAUSTED)
        one.destroy()
        expect(lambda: carol.box.create(name=f"{P}-carol3", config=BoxConfig(memory="1G")), QuotaExceededError,
               "1G past carol's max_memory_mb 512: QuotaExceededError (A15)", code=EXHAUSTED)


def bad_input(c, main):
    section("bad input")
    expect(lambda: c.box.create(name=main.name), InvalidArgumentError, "a box name taken: ALREADY_EXISTS (A8)",
           code=EXISTS, mentions=["name", main.name])
    missing = IMAGE.rsplit(":", 1)[0] + ":no-such-tag"
    expect(lambda: c.box.create(name=f"{P}-noimg", image=missing), NotFoundError,
           "an image the registry lacks: NotFoundError (A7)", code=NOT_FOUND, mentions=["no-such-tag", "image"])
    expect(lambda: c.box.create(name=f"{P}-badimg", image="UPPER/case::bad"), InvalidArgumentError,
           "a malformed image reference (A7)", code=INVALID, mentions=["image"])
    expect(lambda: c.box.create(name=f"{P}-rp", config=BoxConfig(restart_policy="sometimes")), InvalidArgumentError,
           "restart_policy 'sometimes'", code=INVALID, mentions=["restart_policy"])
    expect(lambda: c.box.create(name=f"{P}-mem", config=BoxConfig(memory="1K")), InvalidArgumentError,
           "memory 1K (A15)", code=INVALID, mentions=["memory"])
    expect(lambda: c.box.create(name=f"{P}-mem2", config=BoxConfig(memory="lots")), ValueError,
           "memory that does not parse: ValueError in the SDK")
    expect(lambda: c.box.create(name="Bad Name!"), InvalidArgumentError, "a name that is no DNS label (A2)",
           code=INVALID, mentions=["name"])
    names = {b.name for b in c.box.list()}
    left = names & {f"{P}-{n}" for n in ("noimg", "badimg", "rp", "mem", "mem2")} | (names & {"Bad Name!"})
    check(not left, f"no refused create left a box ({left})")


# ---- async ---------------------------------------------------------------------------------


async def async_part(me):
    section("async: boxd.aio.Compute")
    async with boxd.aio.Compute(api_key=KEY) as c, boxd.aio.Compute(api_key=BOB_KEY) as bob:
        w = await c.whoami()
        check(w.user_id == me.user_id and w.default_network_id == me.default_network_id, "async whoami")
        check((await c.config()).zone == ZONE, "async config")
        cfg = BoxConfig(vcpu=1, memory="1G", disk="256M", restart_policy="never",
                        lifecycle=LifecycleConfig(auto_suspend_timeout=600))
        box = await c.box.create(name=f"{P}-async", config=cfg)
        MADE["alice"].append(box.id)
        await asyncio.wait_for(box.wait_until_ready(), 120)
        got = await c.box.get(box.name)
        check((got.id, got.restart_policy, got.disk_bytes, got.auto_suspend_timeout_secs) == (box.id, "never", 256 * MIB, 600),
              f"async get by name: restart_policy, disk_bytes, auto_suspend_timeout_secs ({got})")
        check(got.ssh_port is None or got.ssh_port > 0, f"ssh_port ({got.ssh_port})")
        r = await box.exec("python3", "-c", "import os; s = os.statvfs('/'); print(s.f_blocks * s.f_frsize)")
        size = int(r.stdout.strip() or 0)
        check(abs(size - 256 * MIB) < 26 * MIB, f"disk 256M is the root filesystem's size ({size >> 20} MiB)")
        r = await box.exec("echo", "hello")
        check(r.stdout == "hello\n" and r.exit_code == 0, "async exec")
        rs = await asyncio.gather(*(box.exec("sh", "-c", f"echo o{i}; echo e{i} >&2; exit {i}") for i in range(8)))
        check(all((x.stdout, x.stderr, x.exit_code) == (f"o{i}\n", f"e{i}\n", i) for i, x in enumerate(rs)),
              "8 execs at once on one channel, each its own output and exit")
        await aexpect(box.exec("sleep", "38", timeout=1.5), BoxdTimeout, "async exec timeout: boxd.TimeoutError")

        p = await box.exec("cat", stream=True)
        payload = os.urandom(300000)
        p.stdin.write(payload)
        p.stdin.write_eof()
        out = b"".join([chunk async for chunk in p.stdout])
        check(out == payload and await asyncio.wait_for(p.wait(), 30) == 0, "async stdin stream: 300 kB echoed, exit 0")
        p = await box.exec("stty", "size", stream=True, pty=True, cols=77, rows=22)
        out = b"".join([chunk async for chunk in p.stdout])
        check(b"22 77" in out, f"async PTY size ({out!r})")
        p = await box.exec("sh", "-c", "echo up; exec sleep 4247", stream=True)
        check(await asyncio.wait_for(p.stdout.read(), 30) == b"up\n", "async long command up")
        p.close()
        await asyncio.sleep(0.2)

        async def no_sleep():
            r = await box.exec("sh", "-c", 'for p in /proc/[0-9]*; do tr "\\000" " " < $p/cmdline 2>/dev/null; echo; done')
            return not any(x.startswith("sleep 4247") for x in r.stdout.splitlines())
        for _ in range(40):
            if await no_sleep():
                break
            await asyncio.sleep(0.5)
        check(await no_sleep(), "async close() killed the command")

        data = os.urandom(MIB + 7)
        await box.write_file(data, "/work/a.bin")
        check(await box.read_file("/work/a.bin") == data, "async write_file / read_file")

        logbox = await c.box.create(name=f"{P}-alog", config=BoxConfig(
            cmd=["sh", "-c", "i=0; while :; do i=$((i+1)); echo atick-$i; sleep 0.3; done"]))
        MADE["alice"].append(logbox.id)

        async def follow():
            seen = b""
            agen = logbox.stream_logs(follow=True)
            async for chunk in agen:
                seen += chunk
                if b"atick-5\n" in seen:
                    break
            await agen.aclose()
            return seen
        check(b"atick-5" in await asyncio.wait_for(follow(), 60), "async stream_logs(follow=True)")
        snap = b"".join([x async for x in logbox.stream_logs()])
        check(b"atick-1\n" in snap, "async stream_logs()")

        s = await box.suspend()
        check(s.suspend_us > 0 and (await c.box.get(box.id)).status == "suspended", "async suspend")
        r = await box.resume()
        check(r.resume_us > 0 and (await box.exec("true")).exit_code == 0, "async resume")
        await box.stop()
        check((await c.box.get(box.id)).status == "stopped", "async stop")
        await box.start()
        await asyncio.wait_for(box.wait_until_ready(), 120)
        check(await box.read_file("/work/a.bin") == data, "async start: files kept")
        await box.reboot()
        await asyncio.wait_for(box.wait_until_ready(), 120)
        f = await c.box.fork(box.id, name=f"{P}-afork")
        MADE["alice"].append(f.id)
        check(f.forked_from == box.id and f.name == f"{P}-afork", f"async fork: forked_from ({f.forked_from})")
        await asyncio.wait_for(f.wait_until_ready(), 120)
        check(await f.read_file("/work/a.bin") == data, "the async fork has the files")

        t = await c.template.create(name=f"{P}-atpl", config=BoxConfig(memory="256M"))
        TEMPLATES.append(t.id)
        tb = await c.template.create_vm(t, name=f"{P}-atb")
        MADE["alice"].append(tb.id)
        check(t.id in {x.id for x in await c.template.list()} and tb.name == f"{P}-atb", "async templates")
        d = await c.disk.create(f"{P}-adisk", "32M")
        DISKS.append(d.id)
        await d.attach(box, "/mnt/ad")
        check((await box.exec("sh", "-c", "echo ad > /mnt/ad/x && cat /mnt/ad/x")).stdout == "ad\n", "async disk attach")
        check(d.id in {x.id for x in await c.disk.list()}, "async disk.list")
        await c.domain.bind(f"a.{P}.example.test", box)
        DOMAINS.append(f"a.{P}.example.test")
        check({d.domain: d.vm_id for d in await c.domain.list()}.get(f"a.{P}.example.test") == box.id, "async domain.list")
        check(any(x.id == me.default_network_id for x in await c.network.list()), "async network.list")
        tk = await c.token.create(expires_in=900)
        check(abs(tk.expires_at - time.time() - 900) < 120, "async token.create")
        jti = jwt_parts(tk.token)[1]["jti"]
        check(jti in {i.jti for i in await c.token.list()}, "async token.list")
        await c.token.revoke(jti)
        async with boxd.aio.Compute(token=tk.token) as revoked:
            await aexpect(revoked.whoami(), AuthenticationError, "async: a revoked token")
        live = await c.token.create(expires_in=1000)
        live_jti = jwt_parts(live.token)[1]["jti"]
        bb = await bob.box.create(name=f"{P}-abob")
        MADE["bob"].append(bb.id)
        check((await c.billing.status()).max_vms == ALICE_MAX_VMS, "async billing.status")
        await aexpect(c.billing.create_checkout_session("2x8"), BoxdError, "async checkout", code=PRECONDITION)

        # Bob, through the SDK's own objects pointed at alice's box, disk, template.
        section("async: bob against alice's resources (A9)")
        stolen = boxd.aio.Box(id=box.id, name=box.name, image="", public_ip="", status="", _client=bob)
        for what, coro in [
            ("exec", lambda: stolen.exec("true")),
            ("exec stream", lambda: _stream_wait(stolen)),
            ("read_file", lambda: stolen.read_file("/work/a.bin")),
            ("write_file", lambda: stolen.write_file(b"x", "/work/bob.txt")),
            ("stream_logs", lambda: _drain(stolen.stream_logs())),
            ("stop", lambda: stolen.stop()),
            ("suspend", lambda: stolen.suspend()),
            ("reboot", lambda: stolen.reboot()),
            ("destroy", lambda: stolen.destroy()),
            ("get by id", lambda: bob.box.get(box.id)),
            ("get by name", lambda: bob.box.get(box.name)),
            ("fork", lambda: bob.box.fork(box.id)),
            ("disk attach to bob's box", lambda: boxd.aio.DiskHandle(id=d.id, name="", size_bytes=0, status="",
                                                                     _client=bob).attach(bb, "/mnt/x")),
            ("disk detach", lambda: boxd.aio.DiskHandle(id=d.id, name="", size_bytes=0, status="", _client=bob).detach(box.id)),
            ("disk destroy", lambda: boxd.aio.DiskHandle(id=d.id, name="", size_bytes=0, status="", _client=bob).destroy()),
            ("template create_vm", lambda: bob.template.create_vm(t.id)),
            ("template delete", lambda: bob.template.delete(t.id)),
            ("token revoke", lambda: bob.token.revoke(live_jti)),
            ("domain unbind", lambda: bob.domain.unbind(f"a.{P}.example.test")),
        ]:
            await aexpect(coro(), NotFoundError, f"bob: {what} of alice's: NotFoundError")
        check((await box.exec("cat", "/work/a.bin")).exit_code == 0 and (await c.box.get(box.id)).status == "running",
              "alice's box untouched by bob's tries")
        check(d.id in {x.id for x in await c.disk.list()} and t.id in {x.id for x in await c.template.list()},
              "alice's disk and template untouched")
        async with boxd.aio.Compute(token=live.token) as still:
            check((await still.whoami()).user_id == me.user_id, "alice's token untouched")
        await bb.destroy()

        await c.domain.unbind(f"a.{P}.example.test")
        await d.detach(box.id)
        await d.destroy()
        await c.template.delete(t.id)
        for b in (box, logbox, f, tb):
            await b.destroy()
        check(True, "async clean-up")


async def _stream_wait(box):
    p = await box.exec("true", stream=True)
    return await asyncio.wait_for(p.wait(), 30)


async def _drain(agen):
    return [x async for x in agen]


# ---- clean-up ---------------------------------------------------------------------------


def cleanup():
    problems = []
    keys = {"alice": KEY, "bob": BOB_KEY, "carol": CAROL_KEY}
    for who, ids in MADE.items():
        try:
            with Compute(api_key=keys[who]) as c:
                for i in ids:
                    try:
                        b = c.box.get(i)
                        if b.status != "destroyed":
                            b.destroy()
                    except NotFoundError:
                        pass
                    except Exception as e:
                        problems.append(f"{who} box {i}: {type(e).__name__} {e}")
        except Exception as e:
            problems.append(f"{who}: {type(e).__name__} {e}")
    try:
        with alice() as c:
            for dom in DOMAINS:
                try:
                    c.domain.unbind(dom)
                except NotFoundError:
                    pass
            for t in TEMPLATES:
                try:
                    c.template.delete(t)
                except NotFoundError:
                    pass
            for d in DISKS:
                for h in c.disk.list():
                    if h.id == d:
                        try:
                            h.destroy()
                        except BoxdError as e:
                            problems.append(f"disk {d}: {e}")
    except Exception as e:
        problems.append(f"alice's disks, templates, domains: {type(e).__name__} {e}")
    for sid in NATIVE_SANDBOXES:
        try:
            httpx.delete(f"{NATIVE}/sandboxes/{sid}", headers={"Authorization": f"Bearer {KEY}"}, timeout=60)
        except Exception as e:
            problems.append(f"native {sid}: {e}")
    return problems


def nothing_left():
    section("nothing left")
    problems = cleanup()
    check(not problems, f"everything of the run removed ({problems})")
    with alice() as c:
        left = [b.name for b in c.box.list() if b.name.startswith(P) and b.status != "destroyed"]
        check(not left, f"alice: none of the run's boxes left ({left})")
        check(not [d for d in c.disk.list() if d.name.startswith(P)], "no disk of the run left")
        check(not [t for t in c.template.list() if t.name.startswith(P)], "no template of the run left")
        check(not [d for d in c.domain.list() if P in d.domain], "no domain of the run left")


def main():
    t0 = time.time()
    print(f"boxd {boxd.__version__} against {API_URL} (run {P})", flush=True)
    check(boxd.__version__ == "0.1.5.dev25", "the SDK under test is boxd 0.1.5.dev25")
    ok = False
    try:
        me = auth()
        identity(me)
        readme()
        with alice() as c, Compute(api_key=BOB_KEY) as bob:
            gone_soon, sleepy = lifecycle_boxes(c)
            main_box = boxes(c)
            exec_checks(main_box)
            file_checks(main_box)
            logs_and_restart(c)
            lifecycle(c, main_box)
            fork_checks(c, main_box)
            lifecycle_later(c, gone_soon, sleepy)
            templates(c)
            disks(c)
            web, bobweb = proxies_and_domains(c, bob)
            networks(c, bob, me, web, bobweb)
            billing(c, bob)
            bad_input(c, main_box)
        asyncio.run(async_part(me))
        expired_token()
        nothing_left()
        ok = True
    finally:
        if not ok:
            problems = cleanup()
            if problems:
                print("clean-up after the failure left:", problems, flush=True)
    print(f"boxd: {time.time() - t0:.1f}s", flush=True)
    print("all boxd checks passed")


if __name__ == "__main__":
    sys.exit(main())
