"""agenttier (0.1.1 or 0.8.1), unmodified, against a real `paddock serve`.

Run by crates/paddock/tests/agenttier.rs twice, under each pinned SDK
(target/pyenv: 0.8.1, target/pyenv-agenttier-0.1.1: 0.1.1):
    AGENTTIER_URL=http://127.0.0.1:P PADDOCK_URL=http://127.0.0.1:Q \
    AT_KEY_ALICE=pdk_... AT_KEY_BOB=pdk_... AT_KEY_LIMITED=pdk_... \
    AT_JWT_KEY=/path/key.pem AT_JWT_KID=kid AT_JWT_ISSUER=https://issuer \
    AT_JWT_AUDIENCE=paddock AGENTTIER_VERSION=0.8.1 AT_RUN=v08 python agenttier_test.py
The daemon runs with the settings file agenttier.rs writes (templates
`general-coding` and `small`, policies `limited` and `restricted-group`,
the OIDC issuer whose JWKS holds AT_JWT_KEY's public half). Every check
raises on failure; the script exits non-zero on the first, after removing
every sandbox it made. 0.8.1's additions (clone, files, archive, configure,
invoke, cancel) are driven under 0.8.1 and checked absent under 0.1.1.
"""

import asyncio
import datetime
import json
import os
import re
import tempfile
import threading
import time
import uuid
import warnings
import zipfile

import httpx
import jwt
from cryptography.hazmat.primitives.asymmetric import rsa

import agenttier
from agenttier import (
    APIError,
    APIKeyAuth,
    AgentTierClient,
    AsyncAgentTierClient,
    AuthenticationError,
    BearerTokenAuth,
    ConflictError,
    KubeconfigAuth,
    NotFoundError,
    PolicyViolationError,
    Sandbox,
    AsyncSandbox,
)
from agenttier.models import (
    AuditEvent,
    CommandResult,
    CurrentUser,
    ForwardedPort,
    SandboxSummary,
    Template,
    UsageAnalytics,
)

# No response of the daemon may flag its endpoint deprecated: 0.8.1 turns a
# `Deprecation: true` header into a DeprecationWarning, an error here.
warnings.simplefilter("error", DeprecationWarning)

URL = os.environ["AGENTTIER_URL"].rstrip("/")
API = URL + "/api/v1"
PADDOCK = os.environ["PADDOCK_URL"].rstrip("/")
KEY_ALICE = os.environ["AT_KEY_ALICE"]
KEY_BOB = os.environ["AT_KEY_BOB"]
KEY_LIMITED = os.environ["AT_KEY_LIMITED"]
JWT_KEY = open(os.environ["AT_JWT_KEY"], "rb").read()
JWT_KID = os.environ["AT_JWT_KID"]
JWT_ISS = os.environ["AT_JWT_ISSUER"]
JWT_AUD = os.environ["AT_JWT_AUDIENCE"]
VERSION = os.environ["AGENTTIER_VERSION"]
RUN = os.environ.get("AT_RUN", "v")
# Every sandbox name of this run starts with P (a rerun after a failed
# clean-up does not meet the last run's).
P = f"{RUN}-{uuid.uuid4().hex[:4]}"
V08 = VERSION == "0.8.1"
PHASES = {"Creating", "Running", "Stopped", "Error", "Deleting"}

# Raw-request credentials of the principals.
H_ALICE = {"X-API-Key": KEY_ALICE}
H_BOB = {"Authorization": f"Bearer {KEY_BOB}"}
H_LIMITED = {"X-API-Key": KEY_LIMITED}


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what.split("\n")[0][:140], flush=True)


# ---- every response seen: none flagged deprecated ---------------------------

SEEN = {"responses": 0, "deprecated": []}


def _watch(resp):
    SEEN["responses"] += 1
    if "deprecation" in resp.headers:
        SEEN["deprecated"].append(f"{resp.request.method} {resp.request.url}")


async def _awatch(resp):
    _watch(resp)


RAW = httpx.Client(timeout=60, event_hooks={"response": [_watch]})


def raw(method, path, headers=None, **kw):
    """A request of no SDK's: `path` under /api/v1, or an absolute URL."""
    url = path if path.startswith("http") else API + path
    return RAW.request(method, url, headers=headers or {}, **kw)


def client(auth, **kw):
    """An SDK client (auth: a provider, or None for the SDK's own detection)
    whose responses are watched too (through its private httpx client)."""
    c = AgentTierClient(api_url=URL, auth=auth, **kw)
    c._http.event_hooks["response"].append(_watch)
    return c


def aclient(auth, **kw):
    c = AsyncAgentTierClient(api_url=URL, auth=auth, **kw)
    c._http.event_hooks["response"].append(_awatch)
    return c


def no_auth():
    """No header at all: the ServiceAccount provider with no token file."""
    return KubeconfigAuth(token_path="/nonexistent/agenttier-test/token")


# ---- tokens -----------------------------------------------------------------

OTHER_KEY = rsa.generate_private_key(public_exponent=65537, key_size=2048)


def mint(sub, *, groups=(), email=None, name=None, exp_in=600, aud=None, iss=None, key=None):
    now = int(time.time())
    claims = {
        "iss": iss or JWT_ISS,
        "aud": aud or JWT_AUD,
        "sub": sub,
        "iat": now,
        "exp": now + exp_in,
        "groups": list(groups),
    }
    if email:
        claims["email"] = email
    if name:
        claims["name"] = name
    return jwt.encode(claims, key or JWT_KEY, algorithm="RS256", headers={"kid": JWT_KID})


CAROL = dict(sub=f"{P}-carol", email="carol@example.com", name="Carol Example", groups=["devs", "qa"])
RESTRICTED = dict(sub=f"{P}-rita", email="rita@example.com", name="Rita", groups=["restricted"])


def carol_token():
    return mint(CAROL["sub"], groups=CAROL["groups"], email=CAROL["email"], name=CAROL["name"])


def rita_token(exp_in=600):
    return mint(RESTRICTED["sub"], groups=RESTRICTED["groups"], email=RESTRICTED["email"],
                name=RESTRICTED["name"], exp_in=exp_in)


# ---- expected errors --------------------------------------------------------


def expect(fn, exc, what, status=None, contains=None):
    """`fn()` raises `exc` (an APIError: with `status`)."""
    try:
        got = fn()
    except exc as e:
        if status is not None:
            check(e.status_code == status, f"{what}: HTTP {e.status_code} == {status} ({e})")
            check(isinstance(e.body, dict) and isinstance(e.body.get("error"), str) and e.body["error"],
                  f"{what}: a JSON body with an error string ({e.body})")
        else:
            check(True, f"{what}: {type(e).__name__} ({e})")
        if contains:
            check(contains in str(e), f"{what}: the message names {contains!r} ({e})")
        return e
    except Exception as e:
        raise AssertionError(f"{what}: {type(e).__name__} ({e}), not {exc.__name__}") from e
    raise AssertionError(f"{what}: no {exc.__name__} (returned {got!r})")


async def aexpect(coro, exc, what, status=None):
    try:
        got = await coro
    except exc as e:
        if status is not None:
            check(e.status_code == status, f"{what}: HTTP {e.status_code} == {status} ({e})")
        else:
            check(True, f"{what}: {type(e).__name__} ({e})")
        return e
    except Exception as e:
        raise AssertionError(f"{what}: {type(e).__name__} ({e}), not {exc.__name__}") from e
    raise AssertionError(f"{what}: no {exc.__name__} (returned {got!r})")


def expect_status(resp, status, what):
    check(resp.status_code == status, f"{what}: HTTP {resp.status_code} == {status} ({resp.text[:200]})")
    return resp


# ---- sandboxes made: all removed at the end, even on failure ---------------

MADE = []  # (raw headers of the owner, sandbox id)


def made(headers, sid):
    MADE.append((headers, sid))
    return sid


def remove_all():
    """Deletes every sandbox the run made (gone ones answer 404)."""
    problems = []
    for headers, sid in MADE:
        try:
            r = raw("DELETE", f"/sandboxes/{sid}", headers)
            if not (r.is_success or r.status_code == 404):
                problems.append(f"{sid}: {r.status_code} {r.text[:100]}")
        except Exception as e:  # the daemon may be gone: say so, go on
            problems.append(f"{sid}: {e}")
    return problems


def is_ours(s):
    return s.sandbox_id.startswith(P) or s.name.startswith(P)


def ts(value):
    """An ISO 8601 timestamp (Z allowed) as an aware datetime."""
    return datetime.datetime.fromisoformat(value.replace("Z", "+00:00"))


def running_of(sb):
    """`wait_until_running`, which must return at its first poll."""
    t = time.monotonic()
    st = sb.wait_until_running(timeout=30)
    check(time.monotonic() - t < 1.5, f"{sb.id}: wait_until_running returns at once (created Running)")
    return st


def poll(fn, secs, what):
    """Calls `fn` until it returns something true, for at most `secs`."""
    deadline = time.monotonic() + secs
    while True:
        v = fn()
        if v:
            check(True, what)
            return v
        if time.monotonic() > deadline:
            raise AssertionError(f"{what}: not within {secs}s")
        time.sleep(0.2)


def zip_name(n):
    """A zip entry's path without a leading ./ or /."""
    while n.startswith("./"):
        n = n[2:]
    return n.lstrip("/")


# ---- the SDK under test ----------------------------------------------------


def version():
    check(agenttier.__version__ == VERSION,
          f"agenttier {agenttier.__version__} is the version asked for ({VERSION})")
    check(VERSION in ("0.1.1", "0.8.1"), f"a version this script knows ({VERSION})")
    later = {
        Sandbox: ["clone", "files", "agent"],
        AsyncSandbox: ["clone", "files", "agent"],
        agenttier: ["RetryConfig", "ConfigureResult", "InvokeResult", "InvokeEvent"],
    }
    for obj, names in later.items():
        for n in names:
            check(hasattr(obj, n) == V08,
                  f"{getattr(obj, '__name__', obj)}.{n} {'exists' if V08 else 'does not exist'} in {VERSION}")
    if V08:
        from agenttier.agent import AgentAPI
        from agenttier.sandbox import FilesAPI

        for n in ("list", "read", "write", "upload", "download", "archive"):
            check(callable(getattr(FilesAPI, n, None)), f"FilesAPI.{n}")
        for n in ("configure", "invoke", "invoke_stream", "invoke_cancel"):
            check(callable(getattr(AgentAPI, n, None)), f"AgentAPI.{n}")
        # The filter above really turns the SDK's deprecation notice into an error.
        from agenttier._http import warn_if_deprecated

        fake = httpx.Response(200, headers={"Deprecation": "true"},
                              request=httpx.Request("GET", API + "/selftest"))
        expect(lambda: warn_if_deprecated(fake), DeprecationWarning,
               "a Deprecation header would fail this run")


# ---- identity and authentication --------------------------------------------


def identity():
    with client(APIKeyAuth(KEY_ALICE)) as c:
        me = c.current_user()
        check(isinstance(me, CurrentUser) and me.sub == "alice", f"X-API-Key: sub alice ({me})")
        check(me.groups == [] and me.email is None and me.name is None and me.is_admin is False,
              f"a key: no email, name or groups, not admin ({me})")
    with client(BearerTokenAuth(KEY_BOB)) as c:
        me = c.current_user()
        check(me.sub == "bob" and not me.is_admin, f"Bearer <paddock key>: sub bob ({me})")
    with client(BearerTokenAuth(carol_token())) as c:
        me = c.current_user()
        check(me.sub == "oidc:" + CAROL["sub"], f"a JWT: sub oidc:<sub> ({me.sub})")
        check(me.email == CAROL["email"] and me.name == CAROL["name"], f"a JWT: email and name ({me})")
        check(sorted(me.groups) == sorted(CAROL["groups"]), f"a JWT: groups ({me.groups})")
        check(me.is_admin is False, "a JWT: not admin")
    with client(no_auth()) as c:
        me = c.current_user()
        check(me.sub == "local" and me.is_admin is True, f"no header on loopback: the operator ({me})")
    r = raw("GET", "/user/me")
    check(r.status_code == 200 and "authorization" not in r.request.headers
          and "x-api-key" not in r.request.headers and r.json()["sub"] == "local",
          "no header on loopback (raw): local")
    check(isinstance(r.json().get("groups", []), list), f"groups is never null ({r.json()})")

    # The SDK's own detection: AGENTTIER_API_KEY, then AGENTTIER_TOKEN.
    try:
        os.environ["AGENTTIER_API_KEY"] = KEY_ALICE
        with client(None) as c:
            check(c.current_user().sub == "alice", "auto_detect_auth: AGENTTIER_API_KEY")
        os.environ["AGENTTIER_TOKEN"] = carol_token()
        with client(None) as c:
            check(c.current_user().sub == "alice", "auto_detect_auth: the key beats the token")
        del os.environ["AGENTTIER_API_KEY"]
        with client(None) as c:
            check(c.current_user().sub == "oidc:" + CAROL["sub"], "auto_detect_auth: AGENTTIER_TOKEN")
    finally:
        for k in ("AGENTTIER_API_KEY", "AGENTTIER_TOKEN"):
            os.environ.pop(k, None)

    # Refused: 401, AuthenticationError, on every endpoint.
    bad = {
        "a wrong key (X-API-Key)": APIKeyAuth("pdk_bogus"),
        "a wrong key (Bearer)": BearerTokenAuth("pdk_bogus"),
        "a malformed token": BearerTokenAuth("not.a.jwt"),
        "a JWT signed by another key": BearerTokenAuth(mint(CAROL["sub"], key=OTHER_KEY)),
        "an expired JWT": BearerTokenAuth(mint(CAROL["sub"], exp_in=-3600)),
        "a JWT for another audience": BearerTokenAuth(mint(CAROL["sub"], aud="someone-else")),
        "a JWT of another issuer": BearerTokenAuth(mint(CAROL["sub"], iss="https://elsewhere.example")),
    }
    for what, auth in bad.items():
        with client(auth) as c:
            expect(c.current_user, AuthenticationError, f"{what}: /user/me")
            expect(c.list_sandboxes, AuthenticationError, f"{what}: list_sandboxes")
            expect(lambda: c.create_sandbox(template="general-coding", name=f"{P}-nope"),
                   AuthenticationError, f"{what}: create_sandbox")
    r = raw("GET", "/sandboxes", {"X-API-Key": "pdk_bogus"})
    check(r.status_code == 401 and isinstance(r.json().get("error"), str),
          f"401 has a JSON error body ({r.text[:100]})")
    # Only no header at all is the operator: a credential of another scheme is none.
    for h in ({"Authorization": "Basic YWxpY2U6c2VjcmV0"}, {"Authorization": "garbage"},
              {"Authorization": "Bearer garbage"}):
        r = raw("GET", "/user/me", h)
        check(r.status_code == 401, f"{h['Authorization']}: 401 ({r.status_code} {r.text[:80]})")


# ---- templates --------------------------------------------------------------


def templates():
    with client(APIKeyAuth(KEY_ALICE)) as c:
        ts_ = c.list_templates()
        by = {t.name: t for t in ts_}
        check({"general-coding", "small"} <= set(by), f"list_templates: {sorted(by)}")
        for t in ts_:
            check(isinstance(t, Template) and isinstance(t.resource_version, str)
                  and isinstance(t.spec, dict) and (t.image is None or isinstance(t.image, str)),
                  f"template {t.name}: resourceVersion a string, spec a dict ({t})")
        check(by["general-coding"].description == "General coding sandbox", "general-coding's description")
        small = c.get_template("small")
        check(small.name == "small" and small.description == "A small sandbox", f"get_template small ({small})")
        expect(lambda: c.get_template("nope"), NotFoundError, "get_template of an unknown template")


# ---- sandboxes: lifecycle, exec, ports, isolation ---------------------------


def sandboxes():
    alice = client(APIKeyAuth(KEY_ALICE))
    bob = client(BearerTokenAuth(KEY_BOB))
    name = f"{P}-main"

    made(H_ALICE, name)
    sb = alice.create_sandbox(template="general-coding", name=name, timeout="30m",
                              idle_timeout="10m", storage_size="512Mi")
    check(sb.id == name and sb.name == name and sb.namespace == "default",
          f"create in default: id == name ({sb!r})")
    st = running_of(sb)
    check(isinstance(st, SandboxSummary) and st.status == "Running", f"status Running ({st.status})")
    st = sb.status()
    check(st.sandbox_id == name and st.name == name and st.namespace == "default"
          and st.template_ref == "general-coding", f"status(): id, name, namespace, templateRef ({st})")
    check(st.created_at is not None and abs(time.time() - ts(st.created_at).timestamp()) < 600,
          f"createdAt an ISO time of now ({st.created_at})")
    check(st.created_by is None or st.created_by.email is None or isinstance(st.created_by.email, str),
          "createdBy parses")

    # The same name in another namespace: another sandbox, id name.namespace.
    made(H_ALICE, f"{name}.team-a")
    other = alice.create_sandbox(template="small", name=name, namespace="team-a")
    made(H_ALICE, other.id)
    check(other.id == f"{name}.team-a" and other.namespace == "team-a" and other.name == name,
          f"create in team-a: id name.namespace ({other!r})")
    st2 = other.status()
    check(st2.sandbox_id == other.id and st2.namespace == "team-a" and st2.template_ref == "small"
          and st2.status == "Running", f"status of the team-a one ({st2})")
    r = other.exec("echo ns")
    check(r.stdout == "ns\n" and r.exit_code == 0, f"exec by a dotted id ({r})")
    check(alice.get_sandbox(other.id).namespace == "team-a", "get_sandbox of the dotted id")

    # Refused creates.
    expect(lambda: alice.create_sandbox(template="general-coding", name=name), ConflictError,
           "a duplicate name in the same namespace")
    for bad in ("Bad_Name", "a" * 64, "-x"):
        expect(lambda: alice.create_sandbox(template="general-coding", name=bad), APIError,
               f"name {bad[:20]!r} (not an RFC 1123 label)", status=400)
    made(H_ALICE, f"{P}-nt")
    made(H_ALICE, f"{P}-ttl")
    expect(lambda: alice.create_sandbox(template="no-such-template", name=f"{P}-nt"), NotFoundError,
           "an unknown template")
    expect(lambda: alice.create_sandbox(template="general-coding", name=f"{P}-ttl", timeout="forever"),
           APIError, "timeout 'forever' (not a Go duration)", status=400)

    # Isolation: bob sees none of alice's; names are per caller.
    expect(lambda: bob.get_sandbox(name), NotFoundError, "bob's GET of alice's id")
    check(not any(s.sandbox_id in (name, other.id) for s in bob.list_sandboxes()),
          "bob's list has none of alice's")
    made(H_BOB, name)
    bobs = bob.create_sandbox(template="general-coding", name=name)
    check(bobs.id == name, f"bob may take alice's name ({bobs!r})")
    made(H_BOB, f"{P}-bobonly")
    bob_only = bob.create_sandbox(template="general-coding", name=f"{P}-bobonly")
    expect(lambda: alice.get_sandbox(bob_only.id), NotFoundError, "alice's GET of bob's id")
    expect_status(raw("POST", f"/sandboxes/{bob_only.id}/exec", H_ALICE, json={"command": "true", "timeout": 5}),
                  404, "alice's exec in bob's sandbox")
    expect_status(raw("DELETE", f"/sandboxes/{bob_only.id}", H_ALICE), 404, "alice's delete of bob's sandbox")
    check(bob.get_sandbox(bob_only.id).id == bob_only.id, "bob's sandbox survived alice's delete")

    # list: the caller's, filtered by namespace and status.
    mine = {s.sandbox_id: s for s in alice.list_sandboxes()}
    check(name in mine and other.id in mine and bob_only.id not in mine, f"alice's list: {sorted(mine)}")
    check(all(isinstance(s, SandboxSummary) for s in mine.values()), "list entries are SandboxSummary")
    team = alice.list_sandboxes(namespace="team-a")
    check(other.id in [s.sandbox_id for s in team] and all(s.namespace == "team-a" for s in team),
          f"list namespace=team-a: {[s.sandbox_id for s in team]}")
    running = alice.list_sandboxes(status="Running")
    check(name in [s.sandbox_id for s in running] and all(s.status == "Running" for s in running),
          "list status=Running")
    check(name not in [s.sandbox_id for s in alice.list_sandboxes(status="Stopped")],
          "list status=Stopped: not the running one")

    # exec: exact stdout, stderr, exit code.
    r = sb.exec("echo out; echo err >&2; exit 3")
    check(isinstance(r, CommandResult) and (r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3),
          f"exec: stdout, stderr, exit code ({r})")
    r = sb.exec("printf 'h\u00e9llo \u2713'")
    check(r.stdout == "h\u00e9llo \u2713" and r.stderr == "" and r.exit_code == 0, f"non-ASCII output ({r})")
    t = time.monotonic()
    r = sb.exec("sleep 37", timeout=2)
    took = time.monotonic() - t
    check(r.exit_code == 124 and "timed out after 2s" in r.stderr and 1.5 < took < 6,
          f"exec timeout=2: exit 124 after {took:.1f}s ({r})")
    poll(lambda: sb.exec("pgrep -f 'slee[p] 37' || echo gone").stdout.strip() == "gone", 5,
         "the timed-out command is killed")

    # stop / resume: files kept, state conflicts.
    r = sb.exec("echo hi > /workspace/keep.txt && cat /workspace/keep.txt")
    check(r.stdout == "hi\n", "a file written")
    r = bobs.exec("cat /workspace/keep.txt 2>/dev/null || echo none")
    check(r.stdout == "none\n", f"bob's same-named sandbox is another one ({r.stdout!r})")
    sb.stop()
    check(sb.status().status == "Stopped", "stop(): Stopped")
    check(name in [s.sandbox_id for s in alice.list_sandboxes(status="Stopped")], "list status=Stopped")
    check(name not in [s.sandbox_id for s in alice.list_sandboxes(status="Running")],
          "list status=Running: not the stopped one")
    expect(lambda: sb.exec("true"), ConflictError, "exec in a stopped sandbox")
    expect(sb.stop, ConflictError, "stop of a stopped sandbox")
    sb.resume()
    st = sb.wait_until_running(timeout=60, poll_interval=0.5)
    check(st.status == "Running", "resume(): Running")
    r = sb.exec("cat /workspace/keep.txt")
    check(r.stdout == "hi\n", f"the file written before stop is there after resume ({r})")
    expect(sb.resume, ConflictError, "resume of a running sandbox")

    ports(alice, sb)
    analytics()

    # Bad input, raw.
    r = expect_status(raw("POST", "/sandboxes", {**H_ALICE, "Content-Type": "application/json"},
                          content=b"{not json"), 400, "create: a body not JSON")
    check(isinstance(r.json().get("error"), str) and r.json()["error"], f"400 has an error string ({r.text[:100]})")
    for path in (f"/sandboxes/{P}-missing", f"/sandboxes/{P}-missing/ports", f"/templates/{P}-missing"):
        r = expect_status(raw("GET", path, H_ALICE), 404, f"GET {path}")
        check(isinstance(r.json().get("error"), str), "404 has an error string")
    expect(lambda: alice.get_sandbox(f"{P}-missing"), NotFoundError, "get_sandbox of an unknown id")

    # terminate.
    for s in (sb, other):
        s.terminate()
        expect(s.status, NotFoundError, f"{s.id}: status() after terminate")
        expect(s.terminate, NotFoundError, f"{s.id}: terminate twice")
    check(not any(s.sandbox_id in (name, other.id) for s in alice.list_sandboxes()), "terminated: not listed")
    check(bob.get_sandbox(name).id == name, "bob's same-named sandbox survives alice's terminate")
    bobs.terminate()
    # bob_only stays for the audit check (removed at the end).
    alice.close()
    bob.close()
    return {"main": name, "other": other.id, "bob_only": bob_only.id}


def ports(alice, sb):
    sb.exec("nohup python3 -m http.server 8080 --directory /workspace >/dev/null 2>&1 &")
    poll(lambda: sb.exec("python3 -c 'import urllib.request as u; u.urlopen(\"http://127.0.0.1:8080/\", timeout=1)'"
                         " 2>/dev/null && echo up").stdout == "up\n", 15, "the server in the sandbox")
    fp = sb.forward_port(8080)
    check(isinstance(fp, ForwardedPort) and fp.port == 8080 and fp.protocol == "http", f"forward_port(8080) ({fp})")
    check(isinstance(fp.preview_url, str) and fp.preview_url.startswith(URL + "/") and fp.preview_url.endswith("/"),
          f"previewUrl on the agenttier listener, ending in / ({fp.preview_url})")
    check(isinstance(fp.internal_url, str)
          and re.fullmatch(r"http://(\d{1,3}(\.\d{1,3}){3}|\[[0-9a-fA-F:]+\]):8080", fp.internal_url),
          f"internalUrl http://<ip>:8080 ({fp.internal_url})")
    listed = sb.list_ports()
    check([p.port for p in listed] == [8080] and listed[0].preview_url == fp.preview_url,
          f"list_ports ({listed})")
    r = expect_status(raw("GET", fp.preview_url + "keep.txt", H_ALICE), 200, "the preview URL reaches the server")
    check(r.text == "hi\n", f"through the preview URL: the file ({r.text!r})")
    # (limited: bob has a sandbox of that id, his own.)
    r = raw("GET", fp.preview_url + "keep.txt", H_LIMITED)
    check(r.status_code == 404, f"another principal cannot use alice's preview URL ({r.status_code})")
    expect(lambda: sb.forward_port(8080, protocol="udp"), APIError, "protocol udp", status=400)
    expect(lambda: sb.forward_port(0), ValueError, "port 0: refused by the SDK")
    expect(lambda: sb.forward_port(70000), ValueError, "port 70000: refused by the SDK")
    for port in (0, 70000, -1):
        r = expect_status(raw("POST", f"/sandboxes/{sb.id}/ports", H_ALICE, json={"port": port}), 400,
                          f"raw: port {port}")
        check(isinstance(r.json().get("error"), str), "an error string")
    sb.remove_port(8080)
    check(8080 not in [p.port for p in sb.list_ports()], "remove_port: gone from list_ports")
    expect_status(raw("GET", fp.preview_url + "keep.txt", H_ALICE), 404, "the preview URL after remove_port")
    expect(lambda: sb.remove_port(8080), NotFoundError, "remove_port of a port not forwarded")


def analytics():
    r = expect_status(raw("GET", "/analytics/usage", H_ALICE), 200, "GET /analytics/usage")
    u = UsageAnalytics.model_validate(r.json())
    check(u.total_sandboxes >= 1 and set(u.status_breakdown) <= PHASES
          and u.status_breakdown.get("Running", 0) >= 1, f"usage: totals and phases ({u})")
    check(u.template_breakdown.get("general-coding", 0) >= 1 and u.avg_startup_ms >= 0
          and u.startup_sample_count >= 0, f"usage: templates and start-up ({u})")


# ---- governance -------------------------------------------------------------


def governance():
    limited = client(APIKeyAuth(KEY_LIMITED))
    since = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(seconds=2)
    denied = f"{P}-denied"
    made(H_LIMITED, denied)
    e = expect(lambda: limited.create_sandbox(template="small", name=denied, timeout="8h", storage_size="2Gi"),
               PolicyViolationError, "limited: template, TTL and storage over the policy")
    check(str(e) == "policy_violation", f"the message is policy_violation ({e})")
    vs = e.violations
    check(isinstance(vs, list) and all(isinstance(v, dict) for v in vs), f"violations: a list of objects ({vs})")
    rules = sorted(v.get("rule") for v in vs)
    check(rules == ["max_disk_mb", "max_ttl_secs", "templates"], f"one violation per broken rule ({rules})")
    for v in vs:
        check(v.get("policy") == "limited" and {"limit", "value"} <= set(v)
              and isinstance(v.get("message"), str) and v["message"], f"violation {v.get('rule')}: {v}")
    by = {v["rule"]: v for v in vs}
    check(by["max_ttl_secs"]["limit"] == 3600 and by["max_ttl_secs"]["value"] == 8 * 3600,
          f"max_ttl_secs: limit 3600, value 28800 ({by['max_ttl_secs']})")
    check(by["max_disk_mb"]["limit"] == 1024 and by["max_disk_mb"]["value"] == 2048,
          f"max_disk_mb: limit 1024, value 2048 ({by['max_disk_mb']})")
    check(by["templates"]["value"] == "small", f"templates: value small ({by['templates']})")

    made(H_LIMITED, f"{P}-lim1")
    made(H_LIMITED, f"{P}-lim2")
    first = limited.create_sandbox(template="general-coding", name=f"{P}-lim1", timeout="30m")
    check(first.id == f"{P}-lim1" and first.status().status == "Running", "limited: a compliant create")
    e = expect(lambda: limited.create_sandbox(template="general-coding", name=f"{P}-lim2"),
               PolicyViolationError, "limited: a second sandbox at once")
    check([v.get("rule") for v in e.violations] == ["max_sandboxes"]
          and e.violations[0].get("limit") == 1 and e.violations[0].get("policy") == "limited",
          f"max_sandboxes ({e.violations})")
    first.terminate()
    again = limited.create_sandbox(template="general-coding", name=f"{P}-lim2")
    check(again.status().status == "Running", "limited: after terminate, a create works again")
    again.terminate()

    # The native API answers the same policy.
    r = raw("POST", PADDOCK + "/v1/sandboxes", {"Authorization": f"Bearer {KEY_LIMITED}"},
            json={"template": "small"})
    check(r.status_code == 403 and r.headers.get("content-type", "").startswith("application/problem+json"),
          f"native create of small by limited: 403 problem+json ({r.status_code} {r.headers.get('content-type')})")
    body = r.json()
    check(isinstance(body.get("violations"), list) and body["violations"]
          and body["violations"][0].get("rule") == "templates", f"native: violations ({body})")

    # A group's policy, through a JWT.
    rita = client(BearerTokenAuth(rita_token()))
    hr = {"Authorization": f"Bearer {rita_token(exp_in=7200)}"}
    made(hr, f"{P}-rita1")
    made(hr, f"{P}-rita2")
    e = expect(lambda: rita.create_sandbox(template="general-coding", name=f"{P}-rita1"),
               PolicyViolationError, "group restricted: general-coding")
    check([(v.get("rule"), v.get("policy")) for v in e.violations] == [("templates", "restricted-group")],
          f"the group's policy ({e.violations})")
    sb = rita.create_sandbox(template="small", name=f"{P}-rita2")
    check(sb.status().template_ref == "small", "group restricted: small works")
    check(sb.exec("echo ok").stdout == "ok\n", "group restricted: exec")
    with client(APIKeyAuth(KEY_ALICE)) as alice:
        expect(lambda: alice.get_sandbox(sb.id), NotFoundError, "alice does not see the JWT user's sandbox")
    # The same token on the native API is the same principal: it sees the
    # sandbox, and a forged one is 401 there too.
    r = raw("GET", PADDOCK + "/v1/sandboxes", hr)
    owners = {x.get("owner") for x in r.json().get("sandboxes", [])} if r.status_code == 200 else set()
    check(r.status_code == 200 and owners == {"oidc:" + RESTRICTED["sub"]},
          f"native API with the JWT: its principal's sandboxes ({r.status_code} {owners})")
    r = raw("GET", PADDOCK + "/v1/sandboxes", {"Authorization": f"Bearer {hr['Authorization'][7:-4]}abcd"})
    check(r.status_code == 401, f"native API with a forged JWT: 401 ({r.status_code})")
    sb.terminate()
    limited.close()
    rita.close()
    return {"denied": denied, "lim1": first.id, "lim2": f"{P}-lim2", "since": since}


# ---- audit ------------------------------------------------------------------


def audit_events(headers, query=""):
    r = expect_status(raw("GET", "/audit" + query, headers), 200, f"GET /audit{query}")
    body = r.json()
    check(isinstance(body, dict) and isinstance(body.get("events"), list), "audit: {events: [...]}")
    evs = [AuditEvent.model_validate(e) for e in body["events"]]
    return evs, body["events"]


def audit(ids, gov):
    main = ids["main"]
    evs, _ = audit_events(H_ALICE)
    stamps = [e.timestamp for e in evs]
    check(evs and all(s is not None for s in stamps), f"alice's audit: {len(evs)} events, each with a timestamp")
    # Newest first (two calls that ended together may be a hair apart).
    slack = datetime.timedelta(milliseconds=50)
    check(all(a + slack >= b for a, b in zip(stamps, stamps[1:])) and stamps[0] > stamps[-1],
          f"alice's audit: newest first ({stamps[0]} ... {stamps[-1]})")
    check(not any(e.sandbox_id == ids["bob_only"] for e in evs), "alice's audit: none of bob's")
    check(any(e.sandbox_id == main and e.event_type == "sandbox.destroy" for e in evs),
          f"alice's audit: the destroy of {main}")

    # One sandbox's (a list of all of alice's may be cut to its newest).
    one, _ = audit_events(H_ALICE, f"?sandboxId={main}")
    check(one and all(e.sandbox_id == main for e in one), f"audit?sandboxId={main}: that sandbox's only")
    types = [e.event_type for e in one]
    check([e.timestamp for e in one] == sorted((e.timestamp for e in one), reverse=True),
          f"audit of {main}: newest first")
    # A resume is the engine's start of a stopped sandbox: either name.
    resume = "sandbox.resume" if "sandbox.resume" in types else "sandbox.start"
    for t in ("sandbox.create", "sandbox.stop", resume, "sandbox.exec", "sandbox.destroy"):
        check(t in types, f"audit of {main}: {t} ({sorted(set(types))})")
    check(types[0] == "sandbox.destroy" and types[-1] == "sandbox.create",
          f"audit of {main}: the destroy newest, the create oldest")
    for t in ("sandbox.stop", resume):
        check(any(e.event_type == t and (e.details or {}).get("outcome") == "ok" for e in one),
              f"audit: a {t} that worked, outcome ok")
    created = one[-1]
    check(created.namespace == "default" and created.sandbox_name in (None, main)
          and (created.details or {}).get("outcome") == "ok", f"a create that worked: outcome ok ({created})")
    team, _ = audit_events(H_ALICE, f"?sandboxId={ids['other']}")
    check(team and all(e.sandbox_id == ids["other"] and e.namespace == "team-a" for e in team),
          "audit of the team-a sandbox, with its namespace")
    r = raw("GET", f"/audit?sandboxId={ids['bob_only']}", H_ALICE)
    check(r.status_code == 404 and "error" in r.json(),
          f"alice's audit of bob's sandbox: not hers, 404 ({r.status_code} {r.text[:200]})")

    # The refused create made no sandbox: its event may name none, but
    # none other than the one asked for.
    lim, _ = audit_events(H_LIMITED)
    refused = [e for e in lim if e.event_type == "sandbox.create" and e.timestamp >= gov["since"]
               and (e.details or {}).get("outcome") != "ok"]
    # (Two through agenttier, one through the native API.)
    check(len(refused) >= 2 and all(e.sandbox_id in (None, gov["denied"], gov["lim2"])
                                    and e.sandbox_name in (None, gov["denied"], gov["lim2"]) for e in refused),
          f"limited's refused creates are audited, outcome not ok ({[(e.sandbox_id, e.details) for e in refused]})")
    check(all((e.details or {}).get("outcome") for e in refused), "each with an outcome")
    check(any(e.event_type == "sandbox.create" and e.sandbox_id == gov["lim1"]
              and (e.details or {}).get("outcome") == "ok" for e in lim), "limited's create that worked")

    r = raw("GET", PADDOCK + "/v1/audit", {"Authorization": f"Bearer {KEY_ALICE}"})
    check(r.status_code == 200 and "sandbox.create" in r.text, f"native /v1/audit ({r.status_code})")


# ---- 0.8.1: clone, files, archive, agent mode -------------------------------


def newer():
    with client(APIKeyAuth(KEY_ALICE)) as alice:
        made(H_ALICE, f"{P}-agent")
        sb = alice.create_sandbox(template="general-coding", name=f"{P}-agent")
        running_of(sb)
        files(sb)
        clone(alice, sb)
        agent(sb)
        sb.terminate()


def files(sb):
    f = sb.files
    f.write("/workspace/a b.txt", "hello")
    check(f.read("/workspace/a b.txt") == b"hello", "files.write then files.read (a space in the name)")
    check(sb.exec("cat '/workspace/a b.txt'").stdout == "hello", "the written file is in the sandbox")
    sb.exec("mkdir -p /workspace/sub/deep")
    f.write("/workspace/sub/deep/n.txt", b"nested")
    f.write("/workspace/\u00fcml.txt", "\u00fc")
    check(f.read("/workspace/\u00fcml.txt") == "\u00fc".encode(), "a non-ASCII path")
    entries = {e.name: e for e in f.list("/workspace")}
    a = entries.get("a b.txt")
    check(a is not None and a.size == 5 and a.is_dir is False, f"files.list: a b.txt, 5 bytes ({a})")
    check(isinstance(a.mode, str) and re.fullmatch(r"-[r-][w-][xsS-][r-][w-][xsS-][r-][w-][xtT-]", a.mode),
          f"mode like -rw-r--r-- ({a.mode})")
    check(isinstance(a.modified_at, int) and abs(a.modified_at - time.time()) < 600,
          f"modifiedAt: epoch seconds of now ({a.modified_at})")
    d = entries.get("sub")
    check(d is not None and d.is_dir is True and (d.mode or "").startswith("d"), f"a directory ({d})")
    check("deep" in [e.name for e in f.list("/workspace/sub")], "files.list of a subdirectory")
    expect(lambda: f.read("/workspace/nope.txt"), NotFoundError, "files.read of a missing file")
    expect(lambda: f.list("/workspace/nope"), NotFoundError, "files.list of a missing directory")

    with tempfile.TemporaryDirectory() as tmp:
        big = os.path.join(tmp, "big")
        with open(big, "wb") as fh:
            fh.truncate(33 * 1024 * 1024)
        expect(lambda: f.upload("/workspace/big", big), ValueError, "upload of 33 MiB: refused by the SDK")
        payload = open(big, "rb").read()
        expect_status(raw("PUT", f"/sandboxes/{sb.id}/files/workspace/big",
                          {**H_ALICE, "Content-Type": "application/octet-stream"}, content=payload),
                      413, "a 33 MiB PUT")
        expect(lambda: f.write("/workspace/big", payload), APIError, "files.write of 33 MiB", status=413)
        check(sb.exec("test -e /workspace/big || echo absent").stdout == "absent\n", "nothing of it written")

        blob = os.urandom(1024 * 1024)
        src, dst = os.path.join(tmp, "src"), os.path.join(tmp, "dst")
        open(src, "wb").write(blob)
        check(f.upload("/workspace/sub/blob.bin", src) == len(blob), "files.upload of 1 MiB of random bytes")
        check(f.download("/workspace/sub/blob.bin", dst) == len(blob) and open(dst, "rb").read() == blob,
              "files.download: the same bytes")
        check(sb.exec("wc -c < /workspace/sub/blob.bin").stdout.strip() == str(len(blob)), "its size inside")

        zpath = os.path.join(tmp, "ws.zip")
        n = f.archive(zpath)
        check(n == os.path.getsize(zpath) and zipfile.is_zipfile(zpath), f"files.archive: a zip ({n} bytes)")
        with zipfile.ZipFile(zpath) as z:
            check(z.testzip() is None, "the zip's CRCs hold")
            names = {zip_name(i.filename): i for i in z.infolist() if not i.is_dir()}
            check({"a b.txt", "sub/deep/n.txt", "sub/blob.bin"} <= set(names), f"zip entries ({sorted(names)})")
            check(z.read(names["a b.txt"]) == b"hello" and z.read(names["sub/deep/n.txt"]) == b"nested"
                  and z.read(names["sub/blob.bin"]) == blob, "zip contents")


def clone(alice, sb):
    sb.exec("echo cloned-content > /workspace/keep.txt")
    made(H_ALICE, f"{P}-clone")
    c = sb.clone(name=f"{P}-clone")
    check(c.id == f"{P}-clone" and c.name == c.id and c.namespace == "default", f"clone: its id ({c!r})")
    st = c.wait_until_running(timeout=60, poll_interval=0.5)
    check(st.status == "Running" and st.sandbox_id == c.id, "the clone runs")
    check(alice.get_sandbox(c.id).id == c.id, "get_sandbox of the clone")
    check(c.exec("cat /workspace/keep.txt").stdout == "cloned-content\n", "the clone has the source's files")
    c.exec("echo changed > /workspace/keep.txt")
    check(sb.exec("cat /workspace/keep.txt").stdout == "cloned-content\n", "the source is not the clone")
    expect(lambda: sb.clone(name=f"{P}-clone"), ConflictError, "clone to an existing name")
    c.terminate()


AGENT_PY = "import sys\nprint('got', sys.stdin.read())\nprint('warn', file=sys.stderr)\n"
ARGV_PY = "import json, sys\nprint(json.dumps({'argv': sys.argv[1:], 'stdin': sys.stdin.read()}))\n"


def agent(sb):
    ag = sb.agent
    logs = []
    args = dict(
        files=[{"path": "/workspace/agent.py", "content": AGENT_PY}, ("/workspace/bin.dat", b"\xff\x00")],
        install_command=["sh", "-c", "echo installing; echo oops >&2"],
        entrypoint=["python3", "/workspace/agent.py"],
    )
    res = ag.configure(**args, on_log=lambda s, line: logs.append((s, line)))
    check(res.entrypoint == ["python3", "/workspace/agent.py"] and res.install_exit_code == 0
          and res.skipped is False, f"configure: result ({res})")
    check(isinstance(res.install_command_hash, str) and res.install_command_hash, "configure: installCommandHash")
    check(isinstance(res.last_configured_at, datetime.datetime),
          f"configure: lastConfiguredAt ({res.last_configured_at})")
    check(("stdout", "installing") in logs and ("stderr", "oops") in logs, f"configure: on_log lines ({logs})")
    check(sb.files.read("/workspace/bin.dat") == b"\xff\x00", "configure: a binary file (contentBase64)")
    check(sb.files.read("/workspace/agent.py") == AGENT_PY.encode(), "configure: a text file")
    again = ag.configure(**args)
    check(again.skipped is True and again.install_command_hash == res.install_command_hash,
          f"configure again, same arguments: skipped ({again})")

    r = ag.invoke({"q": 1})
    check((r.exit_code, r.reason, r.stdout, r.stderr) == (0, "completed", 'got {"q": 1}', "warn"),
          f"invoke(dict) ({r})")
    check(isinstance(r.invoke_id, str) and r.invoke_id and r.duration_ms >= 0, "invoke: id and duration")
    r2 = ag.invoke("text")
    check((r2.exit_code, r2.stdout, r2.stderr) == (0, "got text", "warn"), f"invoke(str) ({r2})")
    r3 = ag.invoke(b"raw")
    check((r3.exit_code, r3.stdout) == (0, "got raw"), f"invoke(bytes) ({r3})")
    check(len({r.invoke_id, r2.invoke_id, r3.invoke_id}) == 3, "each invoke its own id")
    expect(lambda: ag.invoke_cancel(r.invoke_id), NotFoundError, "invoke_cancel of a finished invoke")
    expect(lambda: ag.invoke_cancel("nope"), NotFoundError, "invoke_cancel of an unknown id")

    evs = list(ag.invoke_stream({"s": 1}))
    check(evs and evs[0].event == "start" and evs[0].data.get("invokeId"), f"invoke_stream: start first ({evs[:1]})")
    check(evs[-1].event == "exit" and evs[-1].data.get("reason") == "completed"
          and evs[-1].data.get("exitCode") == 0, f"invoke_stream: exit last ({evs[-1:]})")
    logs_ = [(e.data.get("stream"), e.data.get("data")) for e in evs if e.event == "log"]
    check(("stdout", 'got {"s": 1}') in logs_ and ("stderr", "warn") in logs_, f"invoke_stream: log events ({logs_})")

    # prompt: --prompt=<p> in argv, and stdin when there is no payload.
    ag.configure(files=[{"path": "/workspace/argv.py", "content": ARGV_PY}],
                 entrypoint=["python3", "/workspace/argv.py", "fixed"])
    out = json.loads(ag.invoke(prompt="hi").stdout)
    check(out["argv"] == ["fixed", "--prompt=hi"] and out["stdin"].rstrip("\n") == "hi",
          f"invoke(prompt=): argv and stdin ({out})")
    out = json.loads(ag.invoke({"q": 2}, prompt="p2").stdout)
    check(out["argv"] == ["fixed", "--prompt=p2"] and out["stdin"] == '{"q": 2}',
          f"invoke(payload, prompt=): the payload on stdin ({out})")

    # A server-side timeout.
    ag.configure(entrypoint=["sh", "-c", "sleep 38"])
    t = time.monotonic()
    r = ag.invoke(invoke_timeout="1s")
    took = time.monotonic() - t
    check(r.reason == "timeout" and took < 10, f"invoke_timeout=1s: reason timeout after {took:.1f}s ({r})")

    # Cancel: from another thread while the stream is read.
    ag.configure(entrypoint=["sh", "-c", "sleep 39"])
    events, started = [], threading.Event()

    def consume():
        try:
            for ev in sb.agent.invoke_stream(None):
                events.append(ev)
                if ev.event == "start":
                    started.set()
        except BaseException as e:  # reported below
            events.append(e)
        finally:
            started.set()

    th = threading.Thread(target=consume, daemon=True)
    th.start()
    check(started.wait(15) and events and getattr(events[0], "event", None) == "start",
          f"cancel: the start event ({events[:1]})")
    t = time.monotonic()
    ag.invoke_cancel(events[0].data["invokeId"])
    th.join(15)
    check(not th.is_alive() and time.monotonic() - t < 10, "cancel: the stream ends")
    last = events[-1]
    check(getattr(last, "event", None) == "exit" and last.data.get("reason") == "canceled",
          f"cancel: an exit event, reason canceled ({last})")

    # Disconnect: the client going away cancels (the whole process).
    # (Its sleep would end by itself 6.5 s in: the checks are done before,
    # and the marker looked for after.)
    ag.configure(entrypoint=["sh", "-c", "sleep 6.5; touch /workspace/late"])
    t = time.monotonic()
    gen = ag.invoke_stream(None)
    first = next(gen)
    check(first.event == "start", "disconnect: started")
    check(sb.exec("pgrep -f 'slee[p] 6.5' || echo gone").stdout.strip() != "gone", "disconnect: it runs")
    gen.close()
    poll(lambda: sb.exec("pgrep -f 'slee[p] 6.5' || echo gone").stdout.strip() == "gone", 3,
         "disconnect: the process is killed")
    check(time.monotonic() - t < 6, "disconnect: killed before it would have ended")
    time.sleep(max(0.0, 8 - (time.monotonic() - t)))
    check(sb.exec("test -e /workspace/late && echo late || echo never").stdout == "never\n",
          "disconnect: its shell never went on")
    check(sb.exec("pgrep -f 'slee[p] 3[89]' || echo gone").stdout.strip() == "gone",
          "timed-out and canceled invokes left no process")

    # A failing install.
    expect(lambda: ag.configure(install_command=["sh", "-c", "exit 7"]), RuntimeError,
               "configure: a failing install command", contains="install")


# ---- async ------------------------------------------------------------------


async def async_part():
    async with aclient(APIKeyAuth(KEY_ALICE)) as c:
        me = await c.current_user()
        check(me.sub == "alice", "async: current_user")
        check("small" in [t.name for t in await c.list_templates()], "async: list_templates")
        check((await c.get_template("small")).description == "A small sandbox", "async: get_template")
        await aexpect(c.get_template("nope"), NotFoundError, "async: unknown template")
        name = f"{P}-async"
        made(H_ALICE, name)
        sb = await c.create_sandbox(template="general-coding", name=name, timeout="30m")
        check(isinstance(sb, AsyncSandbox) and sb.id == name, f"async: create ({sb!r})")
        t = time.monotonic()
        st = await sb.wait_until_running(timeout=30)
        check(st.status == "Running" and time.monotonic() - t < 1.5, "async: wait_until_running at once")
        await aexpect(c.create_sandbox(template="general-coding", name=name), ConflictError, "async: duplicate")
        r = await sb.exec("echo out; echo err >&2; exit 3")
        check((r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3), f"async: exec ({r})")
        r = await sb.exec("echo keep > /workspace/k.txt && cat /workspace/k.txt")
        check(r.stdout == "keep\n", "async: a file written")
        check(name in [s.sandbox_id for s in await c.list_sandboxes()], "async: list_sandboxes")

        fp = await sb.forward_port(8081)
        check(fp.port == 8081 and fp.protocol == "http" and fp.preview_url.startswith(URL + "/"),
              f"async: forward_port ({fp})")
        check([p.port for p in await sb.list_ports()] == [8081], "async: list_ports")
        await aexpect(sb.forward_port(8081, protocol="udp"), APIError, "async: udp", status=400)
        await sb.remove_port(8081)
        check(await sb.list_ports() == [], "async: remove_port")

        # Two execs at once on one connection pool.
        a, b = await asyncio.gather(sb.exec("sleep 1; echo a"), sb.exec("sleep 1; echo b"))
        check((a.stdout, b.stdout) == ("a\n", "b\n"), "async: two execs at once")

        await sb.stop()
        check((await sb.status()).status == "Stopped", "async: stop")
        await aexpect(sb.exec("true"), ConflictError, "async: exec when stopped")
        await aexpect(sb.stop(), ConflictError, "async: stop twice")
        await sb.resume()
        st = await sb.wait_until_running(timeout=60, poll_interval=0.5)
        check(st.status == "Running", "async: resume")
        check((await sb.exec("cat /workspace/k.txt")).stdout == "keep\n", "async: the file survived stop")
        await aexpect(sb.resume(), ConflictError, "async: resume when running")

        if V08:
            await async_newer(sb)

        await sb.terminate()
        await aexpect(sb.status(), NotFoundError, "async: status after terminate")
    async with aclient(APIKeyAuth("pdk_bogus")) as c:
        await aexpect(c.current_user(), AuthenticationError, "async: a wrong key")
    async with aclient(BearerTokenAuth(carol_token())) as c:
        check((await c.current_user()).sub == "oidc:" + CAROL["sub"], "async: a JWT")


async def async_newer(sb):
    f = sb.files
    await f.write("/workspace/x y.txt", "async hello")
    check(await f.read("/workspace/x y.txt") == b"async hello", "async: files write/read")
    ent = {e.name: e for e in await f.list("/workspace")}
    check(ent.get("x y.txt") is not None and ent["x y.txt"].size == 11, "async: files.list")
    await aexpect(f.read("/workspace/none"), NotFoundError, "async: files.read of a missing file")
    with tempfile.TemporaryDirectory() as tmp:
        z = os.path.join(tmp, "a.zip")
        await f.archive(z)
        with zipfile.ZipFile(z) as zz:
            check("x y.txt" in [zip_name(n) for n in zz.namelist()], "async: archive")

    ag = sb.agent
    seen = []

    async def on_log(stream, line):
        seen.append((stream, line))

    res = await ag.configure(files=[{"path": "/workspace/agent.py", "content": AGENT_PY}],
                             install_command=["sh", "-c", "echo async-install"],
                             entrypoint=["python3", "/workspace/agent.py"], on_log=on_log)
    check(res.install_exit_code == 0 and not res.skipped and ("stdout", "async-install") in seen,
          f"async: configure ({res}, {seen})")
    r = await ag.invoke({"q": 3})
    check((r.exit_code, r.reason, r.stdout, r.stderr) == (0, "completed", 'got {"q": 3}', "warn"),
          f"async: invoke ({r})")
    await aexpect(ag.invoke_cancel("nope"), NotFoundError, "async: invoke_cancel of an unknown id")

    await ag.configure(entrypoint=["sh", "-c", "sleep 40"])
    events, started = [], asyncio.Event()

    async def consume():
        async for ev in ag.invoke_stream(None):
            events.append(ev)
            if ev.event == "start":
                started.set()

    task = asyncio.create_task(consume())
    await asyncio.wait_for(started.wait(), 15)
    await ag.invoke_cancel(events[0].data["invokeId"])
    await asyncio.wait_for(task, 15)
    check(events[-1].event == "exit" and events[-1].data.get("reason") == "canceled",
          f"async: cancel ({events[-1]})")


# ---- the README's quick start, as written (no auth: the operator) -----------


def readme():
    for k in ("AGENTTIER_API_KEY", "AGENTTIER_TOKEN"):
        os.environ.pop(k, None)
    check(not os.path.exists("/var/run/secrets/kubernetes.io/serviceaccount/token"),
          "no ServiceAccount token here: the README's client sends no auth header")
    name = f"{P}-demo"
    made({}, name)
    out = []
    with AgentTierClient(api_url=URL) as client_:
        client_._http.event_hooks["response"].append(_watch)
        sandbox = client_.create_sandbox(template="general-coding", name=name)
        sandbox.wait_until_running()
        out.append(sandbox.exec("uname -a").stdout)
        print(out[-1], end="")
        sandbox.terminate()
    check(out[0].startswith("Linux "), f"README quick start: uname -a ({out[0].strip()[:60]})")
    r = raw("GET", f"/sandboxes/{name}")
    check(r.status_code == 404, "README quick start: terminated")


# ---- clean-up and its check -------------------------------------------------


def nothing_left():
    problems = remove_all()
    check(not problems, f"every sandbox of the run removed ({problems})")
    principals = {
        "alice": APIKeyAuth(KEY_ALICE),
        "bob": BearerTokenAuth(KEY_BOB),
        "limited": APIKeyAuth(KEY_LIMITED),
        "carol": BearerTokenAuth(carol_token()),
        "rita": BearerTokenAuth(rita_token()),
        "local": no_auth(),
    }
    for who, auth in principals.items():
        with client(auth) as c:
            left = [s.sandbox_id for s in c.list_sandboxes() if is_ours(s)]
            check(not left, f"{who}: none of this run's sandboxes left ({left})")


def main():
    t0 = time.time()
    print(f"agenttier {agenttier.__version__} against {URL} (run {P})", flush=True)
    os.environ.pop("AGENTTIER_DEPRECATION_WARNINGS", None)
    for k in ("AGENTTIER_API_KEY", "AGENTTIER_TOKEN"):
        os.environ.pop(k, None)
    ok = False
    try:
        version()
        identity()
        templates()
        ids = sandboxes()
        gov = governance()
        audit(ids, gov)
        if V08:
            newer()
        asyncio.run(async_part())
        readme()
        nothing_left()
        check(SEEN["responses"] > 100 and not SEEN["deprecated"],
              f"{SEEN['responses']} responses, none with a Deprecation header ({SEEN['deprecated'][:3]})")
        ok = True
    finally:
        if not ok:
            problems = remove_all()
            if problems:
                print("clean-up after the failure left:", problems, flush=True)
    print(f"agenttier {VERSION}: {time.time() - t0:.1f}s", flush=True)
    print("all agenttier checks passed")


if __name__ == "__main__":
    main()
