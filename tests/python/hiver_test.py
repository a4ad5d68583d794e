"""hiver-py 0.1.18, unmodified, against a real `paddock serve`.

Run by crates/paddock/tests/hiver.rs with the pinned SDK from PyPI:
    HIVER_URL=http://127.0.0.1:PORT python hiver_test.py
Every check raises on failure; the script exits non-zero on the first.
"""

import asyncio
import os
import shutil
import sys
import time
import uuid

import httpx

import hiver
from hiver.controller import watch_sandbox_events  # not re-exported by 0.1.18
from hiver.sandbox import Sandbox, SandboxError
from hiver.schemas import SandboxRef, Snapshot  # Snapshot: not re-exported by 0.1.18

URL = os.environ["HIVER_URL"]
RUN = uuid.uuid4().hex[:8]
IMAGE = "hiversh/python:3.13-alpine"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what.split("\n")[0][:120], flush=True)


async def expect_error(coro, status, what, contains=None):
    try:
        await coro
    except SandboxError as e:
        check(e.status == status, f"{what}: status {e.status} == {status} ({e})")
        check(isinstance(e.body, dict) and e.body.get("error"), f"{what}: an {{'error'}} body ({e.body})")
        if contains:
            check(contains in str(e), f"{what}: message names {contains!r} ({e})")
        return e
    raise AssertionError(f"{what}: no error")


async def quick_start():
    """The README's quick start, with its image name (through the mirror)."""
    sandbox = await hiver.get_or_create_sandbox(
        f"my-sandbox-{RUN}",
        hiver.SandboxConfig(
            image=IMAGE,
            ttl=1800,
            fs=[
                hiver.LocalFileSystem(
                    backend="local",
                    mount="/workspace",
                    acls=[hiver.ACLRule(path="/workspace/**", access="rw")],
                )
            ],
            egress=[
                hiver.EgressRule(
                    access="allow",
                    host="api.github.com",
                    methods=["GET"],
                    paths=["/repos/*"],
                )
            ],
        ),
        gateway_url=URL,
    )
    check(len(sandbox.id) == 36, f"quick start: sandbox id {sandbox.id}")
    result = await sandbox.exec("echo hello from the sandbox")
    check(result["stdout"] == "hello from the sandbox\n" and result["exit_code"] == 0,
          f"quick start: exec {result}")
    abort = asyncio.Event()
    seen = []

    async def read():
        async for event in sandbox.get_events_stream(abort=abort):
            seen.append(event)
            if event.type == "exec.response":
                abort.set()

    await asyncio.wait_for(read(), 20)
    types = [e.type for e in seen]
    check("exec.request" in types and "exec.response" in types, f"quick start: events {types}")
    req = next(e for e in seen if e.type == "exec.request")
    resp = next(e for e in seen if e.type == "exec.response")
    check(req.command == "echo hello from the sandbox" and resp.request_id == req.id,
          "quick start: exec.response refers to its exec.request")
    # The python image really is there.
    r = await sandbox.exec("python3 -c 'print(6 * 7)'", cwd="/workspace", env={"PYTHONPATH": "/workspace"})
    check(r["stdout"].strip() == "42" and r["exit_code"] == 0, f"python3 in the image: {r}")
    await hiver.shutdown(sandbox, gateway_url=URL)
    await sandbox.aclose()


async def lifecycle():
    key = f"life-{RUN}"
    events = []
    watching = asyncio.Event()
    abort = asyncio.Event()

    async def watch():
        agen = watch_sandbox_events(gateway_url=URL, abort=abort)
        watching.set()
        async for ev in agen:
            if ev.get("key") == key:
                events.append(ev["status"])
                if ev["status"] == "destroy":
                    return

    watcher = asyncio.create_task(watch())
    await asyncio.wait_for(watching.wait(), 5)
    await asyncio.sleep(0.5)
    a = await hiver.get_or_create_sandbox(key, gateway_url=URL)
    b = await hiver.get_or_create_sandbox(key, hiver.SandboxConfig(memory=1024), gateway_url=URL)
    check(a.id == b.id and b.key == key, "get_or_create is idempotent by key")
    cfg = await b.get_config()
    check(cfg.memory == 512, f"the second config was ignored (memory {cfg.memory})")
    check(cfg.fs and cfg.fs[0].mount == "/workspace", "the SDK's default /workspace mount")
    listed = await hiver.list_sandboxes(gateway_url=URL)
    check(any(s.key == key and s.id == a.id for s in listed), "list_sandboxes lists it")
    # Stopped and started through the native API: the watch sees both.
    native = os.environ["PADDOCK_URL"]
    async with httpx.AsyncClient() as client:
        for op in ("stop", "start"):
            r = await client.post(f"{native}/v1/sandboxes/{a.id}/{op}", timeout=30)
            check(r.status_code == 200, f"native {op}: {r.status_code}")
    # Idle for 6 s: the watch stream's keep-alives beat the SDK's 5 s read timeout.
    await asyncio.sleep(6)
    check(not watcher.done(), "the lifecycle watch survives 6 s of quiet")
    await hiver.shutdown(a, gateway_url=URL)
    await asyncio.wait_for(watcher, 15)
    check(events == ["start", "stop", "start", "destroy"], f"lifecycle events {events}")

    # A sandbox whose init is killed from outside: `die`.
    key2 = f"doomed-{RUN}"
    died = []
    abort2 = asyncio.Event()

    async def watch_die():
        async for ev in watch_sandbox_events(gateway_url=URL, abort=abort2):
            if ev.get("key") == key2:
                died.append(ev["status"])
                if ev["status"] == "die":
                    return

    w2 = asyncio.create_task(watch_die())
    await asyncio.sleep(0.5)
    doomed = await hiver.get_or_create_sandbox(key2, gateway_url=URL)
    pid_file = os.path.join(os.environ["PADDOCK_DATA"], "sandboxes", doomed.id, "init.pid")
    os.kill(int(open(pid_file).read()), 9)
    await asyncio.wait_for(w2, 15)
    check(died == ["start", "die"], f"a killed sandbox: {died}")
    await expect_error(doomed.ping(), 409, "ping of a dead sandbox")
    await doomed.aclose()
    listed = await hiver.list_sandboxes(gateway_url=URL)
    check(not any(s.key == key for s in listed), "a shut-down sandbox is not listed")
    await expect_error(hiver.shutdown(a, gateway_url=URL), 404, "shutdown of a gone sandbox")
    for s in (a, b):
        await s.aclose()


async def surface():
    sb = await hiver.get_or_create_sandbox(
        f"surface-{RUN}",
        hiver.SandboxConfig(
            image=IMAGE,
            env={"FROM_CONFIG": "yes"},
            entrypoint="python3 -u -m http.server 8080",
            cwd="/workspace",
            fs=[
                hiver.LocalFileSystem(
                    backend="local",
                    mount="/workspace",
                    acls=[hiver.ACLRule(path="/workspace/**", access="rw")],
                )
            ],
        ),
        gateway_url=URL,
    )
    await sb.ping()
    check(await sb.get_ports() == [8080], "get_ports: the image's EXPOSE")

    # exec: env merged over the config's, cwd, exit codes, stderr.
    r = await sb.exec("echo $FROM_CONFIG $MINE; pwd; echo err >&2; exit 3", cwd="/tmp", env={"MINE": "1"})
    check(r == {"stdout": "yes 1\n/tmp\n", "stderr": "err\n", "exit_code": 3}, f"exec {r}")
    # Longer than the SDK's 3 s read timeout.
    t = time.monotonic()
    r = await sb.exec("sleep 4.5; echo done")
    check(r["stdout"] == "done\n" and time.monotonic() - t >= 4.5, f"a 4.5 s exec: {r}")

    # exec_stream: stdin, stdout, stderr, exit code.
    p = await sb.exec_stream("python3 -c 'import sys; l = sys.stdin.readline(); print(l.strip().upper()); print(\"e\", file=sys.stderr); sys.exit(5)'")
    await p.write_stdin("hello stream\n")
    out, err = "", ""
    async for pipe in p.pipes:
        out += pipe.get("stdout", "")
        err += pipe.get("stderr", "")
    check(out == "HELLO STREAM\n" and err == "e\n", f"exec_stream pipes {out!r} {err!r}")
    check(await p.exit_code == 5, "exec_stream exit code")
    # Non-ASCII output survives the SSE framing.
    p = await sb.exec_stream("python3 -c 'print(\"h\\u00e9llo \\u2713 \\U0001F600\")'")
    out = "".join([x.get("stdout", "") async for x in p.pipes])
    check(out == "h\u00e9llo \u2713 \U0001F600\n" and await p.exit_code == 0, f"UTF-8 output {out!r}")
    # A real terminal: the README's REPL example.
    p = await sb.exec_stream("python3", cwd="/workspace", tty=True)
    await p.write_stdin("print('the answer is', 6 * 7)\r")
    await p.write_stdin("exit()\r")
    out = ""
    async for pipe in p.pipes:
        check("stderr" not in pipe, "tty merges stderr into stdout")
        out += pipe.get("stdout", "")
    check("the answer is 42" in out, f"tty REPL output {out[-200:]!r}")
    check(await p.exit_code == 0, "tty exit code")
    p2 = await sb.exec_stream("tty")
    out = "".join([x.get("stdout", "") async for x in p2.pipes])
    check("not a tty" in out, f"without tty=True no terminal ({out!r})")
    await expect_error(_stdin_unknown(sb), 404, "stdin to an unknown exec")

    # Files: upload, list, download; str content; ACLs.
    res = await sb.upload_file("/workspace", "data.csv", b"a,b\n1,2\n")
    check(res == {"path": "/workspace/data.csv", "bytes": 8}, f"upload_file {res}")
    res = await sb.upload_file("/workspace", "unicode.txt", "h\u00e9llo")
    check(res["bytes"] == 6, f"str upload is UTF-8 ({res})")
    entries = await sb.list_directory("/workspace")
    names = {e["name"]: e for e in entries}
    check("data.csv" in names and names["data.csv"]["size"] == 8 and not names["data.csv"]["is_dir"]
          and names["data.csv"]["path"] == "/workspace/data.csv", f"list_directory {entries}")
    check(await sb.download_file("/workspace/data.csv") == b"a,b\n1,2\n", "download_file")
    r = await sb.exec("cat /workspace/unicode.txt")
    check(r["stdout"] == "h\u00e9llo", "the uploaded file is in the sandbox")
    await sb.exec("mkdir -p /workspace/ro /workspace/secret && echo s > /workspace/secret/x && echo r > /workspace/ro/y")
    # Read-only and denied parts, applied to the running sandbox: they hold
    # for its processes as for the file API.
    cfg = await sb.get_config()
    guarded = await sb.apply_config(cfg.model_copy(update={"fs": [hiver.LocalFileSystem(
        backend="local", mount="/workspace", acls=[
            hiver.ACLRule(path="/workspace/**", access="rw"),
            hiver.ACLRule(path="/workspace/ro/**", access="ro"),
            hiver.ACLRule(path="/workspace/secret/**", access="deny"),
        ])]}))
    check(guarded.applied, f"ACLs applied to a running sandbox ({guarded.error})")
    r = await sb.exec("cat /workspace/secret/x; echo w >> /workspace/ro/y; cat /workspace/ro/y")
    check(r["stdout"] == "r\n" and "Permission denied" in r["stderr"],
          f"a process inside can neither read the denied file nor write the read-only one: {r}")
    check(await sb.download_file("/workspace/ro/y") == b"r\n", "ro: reads allowed")
    await expect_error(sb.download_file("/workspace/secret/x"), 403, "ACL deny", "secret")
    await expect_error(sb.list_directory("/workspace/secret"), 403, "ACL deny on a listing")
    await expect_error(sb.download_file("/etc/passwd"), 403, "a path outside every mount", "outside")
    # Symlinks are judged by where they lead.
    await sb.exec("python3 -c \"import os; os.symlink('/workspace/secret/x', '/workspace/peek'); os.symlink('/etc', '/workspace/etc-link')\"")
    await expect_error(sb.download_file("/workspace/peek"), 403, "a symlink into a denied path")
    await expect_error(sb.download_file("/workspace/etc-link/passwd"), 403, "a symlink out of every mount")
    await expect_error(sb.upload_file("/tmp", "x", b"x"), 400, "upload to a non-mount", "destination")
    await expect_error(sb.download_file("/workspace/nope"), 404, "a missing file")

    # The HTTP proxy into a port of the sandbox.
    # The entrypoint (python3 -m http.server, serving /workspace) through
    # the HTTP proxy.
    async with httpx.AsyncClient() as client:
        for _ in range(50):
            try:
                res = await client.get(sb.proxy_url(8080) + "/data.csv")
                if res.status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
        check(res.status_code == 200 and res.content == b"a,b\n1,2\n", f"proxy_url {res.status_code}")

    # Config: round trip, apply with a diff, immutable fields, rollback.
    cfg = await sb.get_config()
    check(cfg.image == IMAGE and cfg.cpu == 1 and cfg.memory == 512 and cfg.ttl == 1800, f"get_config {cfg}")
    same = await sb.apply_config(cfg)
    check(same.applied and not (same.changes.warnings or []), f"applying the same config changes nothing ({same.changes})")
    rule = hiver.EgressRule(access="allow", host="api.github.com", methods=["GET"], paths=["/repos/*"])
    result = await sb.apply_config(cfg.model_copy(update={
        "egress": [rule, *(cfg.egress or [])],
        "image": "other:1",
        "memory": 1024,
        "ttl": 600,
        "fs": [*cfg.fs, hiver.LocalFileSystem(backend="local", mount="/data",
                                              acls=[hiver.ACLRule(path="/data/**", access="rw")])],
    }))
    check(result.applied, f"apply_config applied ({result.error})")
    check(len(result.changes.egress.added) == 1 and result.changes.egress.added[0].host == "api.github.com",
          f"changes.egress.added {result.changes}")
    check(len(result.changes.fs.added) == 1 and result.changes.fs.added[0].mount == "/data", "changes.fs.added")
    w = " ".join(result.changes.warnings or [])
    check("image" in w and "memory" in w, f"immutable fields in warnings: {w}")
    check(result.config.image == IMAGE and result.config.memory == 512 and result.config.ttl == 600,
          "immutable kept, mutable applied")
    await sb.upload_file("/data", "d.txt", b"d")
    check((await sb.exec("cat /data/d.txt"))["stdout"] == "d", "a mount added while running works")
    bad = await sb.apply_config(result.config.model_copy(update={
        "egress": [],
        "fs": [*result.config.fs, hiver.LocalFileSystem(backend="local", mount="/host", origin="/tmp")],
    }))
    check(not bad.applied and bad.error, f"a host origin on a running sandbox rolls back ({bad.error})")
    now = await sb.get_config()
    check(now.egress == result.config.egress and [f.mount for f in now.fs] == ["/workspace", "/data"],
          "nothing of the rolled-back apply took effect")

    # The activity stream: every event once, in order, resumable.
    abort = asyncio.Event()
    got = []

    async def drain(last=None, stop_after=None):
        out = []
        async for ev in sb.get_events_stream(last_event_id=last, abort=abort):
            out.append(ev)
            if stop_after and len(out) >= stop_after:
                break
        return out

    async def read_until_quiet(last=None):
        out = []
        agen = sb.get_events_stream(last_event_id=last)
        try:
            while True:
                ev = await asyncio.wait_for(agen.__anext__(), 1.5)
                out.append(ev)
        except (asyncio.TimeoutError, StopAsyncIteration):
            # A timed-out read cancels the generator, which then ends.
            pass
        finally:
            await agen.aclose()
        return out

    # Every event on the wire is one the SDK's model accepts.
    raw = []
    async with httpx.AsyncClient() as client:
        try:
            async with client.stream("GET", f"{sb.api_server_url}/v1/events",
                                     headers={"accept": "text/event-stream"},
                                     timeout=httpx.Timeout(2.0)) as res:
                async for line in res.aiter_lines():
                    if line.startswith("data:"):
                        raw.append(line[5:].strip())
        except httpx.ReadTimeout:
            pass
    from hiver.schemas import SandboxEventAdapter
    for data in raw:
        try:
            SandboxEventAdapter.validate_json(data)
        except Exception as e:
            raise AssertionError(f"an event the SDK refuses: {data}: {e}")
    check(len(raw) > 10, f"{len(raw)} events, all valid for the SDK")
    got = await read_until_quiet()
    ids = [e.id for e in got]
    check(ids == sorted(set(ids)), "event ids increase, none twice")
    types = {e.type for e in got}
    for t in ["exec.request", "exec.response", "fs.request", "fs.response", "config.apply",
              "stdio", "resource.usage"]:
        check(t in types, f"event type {t} is streamed")
    denied = [e for e in got if e.type == "fs.request" and e.access == "denied"]
    check(any(e.path == "/workspace/secret/x" for e in denied), "the ACL denial is an fs.request event")
    applies = [e for e in got if e.type == "config.apply"]
    check(any(not e.success and e.error_message for e in applies), "a failed apply is recorded with errorMessage")
    stdio = "".join((e.stdout or "") + (e.stderr or "") for e in got if e.type == "stdio")
    check("GET /data.csv" in stdio, f"the entrypoint's output is stdio events ({stdio[-300:]!r})")
    usage = [e for e in got if e.type == "resource.usage"]
    check(usage[-1].memory_bytes > 1 << 20, f"resource.usage reports memory ({usage[-1]})")
    mid = ids[len(ids) // 2]
    rest = await read_until_quiet(mid)
    rest_ids = [e.id for e in rest]
    expected = [i for i in ids if i > mid]
    # Events that happened since (usage, output) may follow.
    check(rest_ids[:len(expected)] == expected and rest_ids == sorted(set(rest_ids)),
          f"resuming from lastEventId misses nothing ({rest_ids[:5]}... vs {expected[:5]}...)")

    # Errors.
    ghost = Sandbox(SandboxRef(id=str(uuid.uuid4()), key=f"ghost-{RUN}"), URL)
    await expect_error(ghost.ping(), 404, "ping of an unknown key")
    await expect_error(ghost.exec("true"), 404, "exec in an unknown key")
    await ghost.aclose()
    await expect_error(
        hiver.get_or_create_sandbox(f"overlap-{RUN}", hiver.SandboxConfig(fs=[
            hiver.LocalFileSystem(backend="local", mount="/a"),
            hiver.LocalFileSystem(backend="local", mount="/a/b"),
        ]), gateway_url=URL),
        400, "overlapping mounts", "overlaps")
    await expect_error(
        hiver.get_or_create_sandbox(f"micro-{RUN}", hiver.SandboxConfig(isolation="microvm"), gateway_url=URL),
        501, "isolation microvm without a microVM backend", "microvm")
    await expect_error(
        hiver.get_or_create_sandbox(f"gcs-{RUN}", hiver.SandboxConfig(fs=[
            hiver.GCSFileSystem(backend="gcs", mount="/g", gcs_bucket="b", gcs_service_account_json="{}"),
        ]), gateway_url=URL),
        400, "an fs backend this gateway lacks", "gcs")
    await hiver.shutdown(sb, gateway_url=URL)
    await sb.aclose()


async def config_fields():
    """origin binds a host directory; snapshot and egress are stored and
    returned; the context-manager form; ttl lapses unless pinged."""
    host_dir = f"/tmp/paddock-hiver-origin-{RUN}"
    os.makedirs(host_dir, exist_ok=True)
    with open(f"{host_dir}/from-host.txt", "w") as f:
        f.write("host file\n")
    snap = Snapshot(restore_key="session-42", include=["/root/**"])
    async with await hiver.get_or_create_sandbox(
        f"fields-{RUN}",
        hiver.SandboxConfig(
            fs=[hiver.LocalFileSystem(backend="local", mount="/mnt/host", origin=host_dir,
                                      acls=[hiver.ACLRule(path="/mnt/host/**", access="ro")])],
            egress=[
                # The README's override example: a secret the sandbox never sees.
                hiver.EgressRule(
                    access="allow",
                    host="api.example.com",
                    paths=["/v1/*"],
                    override=hiver.EgressOverride(
                        headers={"Authorization": "Bearer sk-live-abc123"},
                        query={"api_key": "sk-live-abc123"},
                    ),
                ),
                *hiver.allowed_python_packages("numpy"),
            ],
            snapshot=snap,
            extra_hosts=["gateway.test:10.1.2.3"],
            cpu=2,
            memory=256,
        ),
        gateway_url=URL,
    ) as sb:
        check(await sb.download_file("/mnt/host/from-host.txt") == b"host file\n", "origin binds a host directory")
        await expect_error(sb.upload_file("/mnt/host", "x", b"x"), 403, "ro ACL refuses writes")
        r = await sb.exec("cat /mnt/host/from-host.txt; grep gateway.test /etc/hosts")
        check(r["stdout"] == "host file\n10.1.2.3\tgateway.test\n", f"inside the sandbox too, and extra_hosts: {r}")
        cfg = await sb.get_config()
        check(cfg.snapshot == snap, f"snapshot stored and returned ({cfg.snapshot})")
        check(cfg.egress and any("pypi" in (e.host or "") or "pythonhosted" in (e.host or "") for e in cfg.egress),
              "egress rules stored and returned")
        check(cfg.egress[0].override.headers == {"Authorization": "Bearer sk-live-abc123"}
              and cfg.egress[0].override.query == {"api_key": "sk-live-abc123"}, "egress overrides stored and returned")
        r = await sb.exec("env")
        check("sk-live" not in r["stdout"], "the override's secret is not in the sandbox's environment")
        check(cfg.cpu == 2 and cfg.memory == 256 and cfg.extra_hosts == ["gateway.test:10.1.2.3"], f"cpu, memory {cfg}")
        r = await sb.exec("cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
        check(r["stdout"].strip() == str(256 << 20), f"memory is a cgroup limit ({r['stdout']!r})")
        await hiver.shutdown(sb, gateway_url=URL)
    shutil.rmtree(host_dir, ignore_errors=True)

    # ttl: idle seconds, reset by ping.
    sb = await hiver.get_or_create_sandbox(f"ttl-{RUN}", hiver.SandboxConfig(ttl=3), gateway_url=URL)
    for _ in range(5):
        await asyncio.sleep(1)
        await sb.ping()
    print("ok - pinged past its ttl: still alive", flush=True)
    await asyncio.sleep(5)
    listed = await hiver.list_sandboxes(gateway_url=URL)
    check(not any(s.key == sb.key for s in listed), "idle past its ttl: gone")
    try:
        await sb.ping()
        raise AssertionError("ping of an expired sandbox succeeded")
    except SandboxError as e:
        check(e.status in (404, 409), f"ping after expiry fails ({e.status})")
    await sb.aclose()


async def snapshot_policy():
    """A snapshot policy is acted on: at shutdown (and when an idle ttl
    lapses) the files under `include` are kept under `write_key`, else
    `restore_key`; a sandbox created with that `restore_key` starts with
    them, and with nothing else of the old one."""
    key = f"policy-{RUN}"
    snap = Snapshot(restore_key=key, include=["/root/**"])
    a = await hiver.get_or_create_sandbox(f"policy-a-{RUN}", hiver.SandboxConfig(snapshot=snap), gateway_url=URL)
    r = await a.exec("test -e /root/notes; echo $?; echo kept > /root/notes; mkdir -p /root/deep/er; "
                     "echo deep > /root/deep/er/f; echo not > /outside")
    check(r["stdout"] == "1\n", f"a first boot under a new restore_key starts without its files: {r}")
    await hiver.shutdown(a, gateway_url=URL)
    b = await hiver.get_or_create_sandbox(
        f"policy-b-{RUN}",
        hiver.SandboxConfig(snapshot=Snapshot(restore_key=key, write_key=f"{key}-next", include=["/root/**"])),
        gateway_url=URL,
    )
    r = await b.exec("cat /root/notes /root/deep/er/f; test -e /outside; echo $?")
    check(r["stdout"] == "kept\ndeep\n1\n", f"restored: the files under include, nothing else: {r}")
    await b.exec("echo changed > /root/notes")
    await hiver.shutdown(b, gateway_url=URL)
    # b wrote to its write_key; restore_key's files are as a left them.
    for restore, want in [(key, "kept\n"), (f"{key}-next", "changed\n")]:
        c = await hiver.get_or_create_sandbox(
            f"policy-{restore}-c", hiver.SandboxConfig(snapshot=Snapshot(restore_key=restore)), gateway_url=URL
        )
        r = await c.exec("cat /root/notes")
        check(r["stdout"] == want, f"{restore}: {r}")
        await hiver.shutdown(c, gateway_url=URL)


async def _stdin_unknown(sb):
    res = await sb._client.post(f"{sb.api_server_url}/v1/exec-stream/{uuid.uuid4()}/stdin", json={"data": "x"})
    if not res.is_success:
        from hiver.sandbox import _to_error
        raise _to_error(res, "exec_stream_stdin")


async def main():
    await quick_start()
    await lifecycle()
    await surface()
    await config_fields()
    await snapshot_policy()
    print("all hiver checks passed")


if __name__ == "__main__":
    asyncio.run(main())
