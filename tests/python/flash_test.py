"""flash-sandbox 0.1.1, unmodified, against a real `paddock serve`.

Run by crates/paddock/tests/flash.rs with the pinned SDK from PyPI:
    FLASH_HTTP=127.0.0.1:P FLASH_GRPC=127.0.0.1:Q PADDOCK_URL=http://... python flash_test.py
`alpine:latest` (a busybox image without Python) and `python:3.12-alpine`
come through a registry mirror on loopback. Every check raises on failure;
the script exits non-zero on the first.
"""

import json
import os
import time

import grpc
import requests

from flash_sandbox import (
    HTTPClient,
    MetricsResult,
    SandboxClient,
    SandboxHTTPError,
    SandboxNotFoundError,
)
from flash_sandbox.proto import sandbox_pb2

HTTP_HOST, HTTP_PORT = os.environ["FLASH_HTTP"].split(":")
GRPC_HOST, GRPC_PORT = os.environ["FLASH_GRPC"].split(":")
HTTP_PORT, GRPC_PORT = int(HTTP_PORT), int(GRPC_PORT)
PADDOCK = os.environ["PADDOCK_URL"]
ALPINE = "alpine:latest"
PYTHON = "python:3.12-alpine"
MISSING_ID = "00000000-0000-4000-8000-000000000000"
# An image the test registry does not hold.
NO_IMAGE = os.environ["FLASH_REGISTRY"] + "/library/no-such-image:1"


def check(cond, what):
    if not cond:
        raise AssertionError(what)
    print("ok -", what.split("\n")[0][:140], flush=True)


def expect_http(fn, status, what, contains=None, cls=SandboxHTTPError):
    try:
        fn()
    except SandboxHTTPError as e:
        check(isinstance(e, cls), f"{what}: {cls.__name__} ({type(e).__name__})")
        check(e.status_code == status, f"{what}: HTTP {e.status_code} == {status} ({e.detail})")
        body = json.loads(e.detail)
        check(body.get("message") and body.get("code"), f"{what}: a JSON error ({e.detail})")
        if contains:
            check(contains in e.detail, f"{what}: the message names {contains!r} ({e.detail})")
        return body
    raise AssertionError(f"{what}: no error")


def expect_grpc(fn, code, what, contains=None):
    try:
        fn()
    except grpc.RpcError as e:
        check(e.code() == code, f"{what}: {e.code()} == {code} ({e.details()})")
        if contains:
            check(contains in e.details(), f"{what}: the message names {contains!r} ({e.details()})")
        return e
    raise AssertionError(f"{what}: no error")


def native(method, path, **kw):
    r = requests.request(method, PADDOCK + path, timeout=30, **kw)
    r.raise_for_status()
    return r.json() if r.content else None


# ---- the README's quick starts, with their image names ----------------------


def http_quick_start():
    client = HTTPClient(host=HTTP_HOST, port=HTTP_PORT)

    # Start a Docker sandbox
    sandbox_id = client.start_sandbox(
        type="docker",
        image="alpine:latest",
        command=["tail", "-f", "/dev/null"],
        memory_mb=128,
        cpu_cores=0.5,
    )
    print(f"Sandbox ID: {sandbox_id}")

    # Execute a command
    result = client.exec_command(sandbox_id, ["echo", "Hello from HTTP!"])
    print(f"Output: {result.stdout.strip()}")
    print(f"Exit code: {result.exit_code}")
    check(result.stdout.strip() == "Hello from HTTP!" and result.exit_code == 0, "http quick start: exec")

    # Check status
    status = client.get_status(sandbox_id)
    print(f"Status: {status}")
    check(status == "running", "http quick start: status running")

    # Get resource metrics
    metrics = client.get_metrics(sandbox_id)
    print(f"Memory: {metrics.memory_usage_bytes} / {metrics.memory_limit_bytes}")
    print(f"CPU: {metrics.cpu_percent}%")
    check(metrics.memory_limit_bytes == 128 << 20, "http quick start: the 128 MiB limit is the cgroup's")
    check(0 < metrics.memory_usage_bytes < 128 << 20, "http quick start: memory in use")

    # Execute arbitrary Python code / Get Platform Information: 0.1.1's
    # HTTPClient has no run_python or get_platform_info, whatever its README
    # says (AttributeError before anything is sent); the server's HTTP forms
    # of both are checked in http_methods, the SDK's gRPC ones in grpc_methods.

    # Snapshot and resume: the filesystem is kept (no memory: containers),
    # the sandbox runs on, and a new one starts from the snapshot's path.
    # (The image's user, app, may not write its root-owned /tmp: root does,
    # through the native API.)
    r = native("POST", f"/v1/sandboxes/{sandbox_id}/exec",
               json={"cmd": ["sh", "-c", "echo kept > /tmp/kept"], "user": "root"})
    check(r["exit_code"] == 0, f"http quick start: a file to keep ({r})")
    snap = client.snapshot_sandbox(sandbox_id)
    print(f"Snapshot: {snap}")
    check(len(snap["snapshot_path"]) == 36 and snap["mem_file_path"] == "", "http quick start: snapshot paths")
    client.resume_sandbox(sandbox_id)
    check(client.get_status(sandbox_id) == "running", "http quick start: resumed, running")
    native("POST", f"/v1/sandboxes/{sandbox_id}/exec",
           json={"cmd": ["sh", "-c", "echo later > /tmp/kept"], "user": "root"})
    restored = client.start_sandbox(type="docker", image=ALPINE, snapshot_path=snap["snapshot_path"])
    r = client.exec_command(restored, ["cat", "/tmp/kept"])
    check(r.stdout == "kept\n" and restored != sandbox_id, f"http quick start: restored from the snapshot ({r.stdout!r} {r.stderr!r} {r.exit_code})")
    client.stop_sandbox(restored)

    # Stop
    client.stop_sandbox(sandbox_id)
    client.close()
    expect_http(
        lambda: HTTPClient(host=HTTP_HOST, port=HTTP_PORT).get_status(sandbox_id),
        404,
        "http quick start: gone after stop",
        cls=SandboxNotFoundError,
    )


def grpc_quick_start():
    client = SandboxClient(host=GRPC_HOST, port=GRPC_PORT)

    # Start a Docker sandbox
    docker_id = client.start_sandbox(
        type="docker",
        image="alpine:latest",
        command=["tail", "-f", "/dev/null"],
        memory_mb=128,
        cpu_cores=0.5,
    )
    print(f"Docker Sandbox ID: {docker_id}")

    # Firecracker and gVisor: their backends do not exist yet; the error
    # names what is missing.
    expect_grpc(
        lambda: client.start_sandbox(
            type="firecracker", image="alpine:latest", command=["tail", "-f", "/dev/null"], memory_mb=512, cpu_cores=1.0
        ),
        grpc.StatusCode.UNIMPLEMENTED,
        "grpc quick start: firecracker",
        "microvm backend",
    )
    expect_grpc(
        lambda: client.start_sandbox(
            type="gvisor", image="alpine:latest", command=["tail", "-f", "/dev/null"], memory_mb=256, cpu_cores=1.0
        ),
        grpc.StatusCode.UNIMPLEMENTED,
        "grpc quick start: gvisor",
        "gvisor backend",
    )

    # Check status
    status = client.get_status(docker_id)
    print(f"Docker Status: {status}")
    check(status == "running", "grpc quick start: status running")

    # Snapshot and Resume
    snap = client.snapshot_sandbox(docker_id)
    check(len(snap["snapshot_path"]) == 36 and snap["mem_file_path"] == "", f"grpc quick start: snapshot ({snap})")
    client.resume_sandbox(docker_id)

    # Execute commands
    exec_res = client.exec_command(docker_id, ["echo", "Hello from Docker!"])
    print(f"Docker Output: {exec_res.stdout.strip()}")
    print(f"Docker Exit Code: {exec_res.exit_code}")
    check(exec_res.stdout == "Hello from Docker!\n" and exec_res.exit_code == 0, "grpc quick start: exec")

    # Stop sandboxes
    client.stop_sandbox(docker_id)
    client.close()


# ---- every method, on both transports -----------------------------------


def sandbox_of(sid):
    return native("GET", f"/v1/sandboxes/{sid}")


def exercise(client, transport):
    """What both clients share: start, exec, status, stop, and limits."""
    t = transport
    sid = client.start_sandbox(
        type="docker",
        image=PYTHON,
        command=["sh", "-c", "echo $$ > /tmp/main.pid; echo main-says-hi; exec sleep 3600"],
        memory_mb=128,
        cpu_cores=0.5,
    )
    check(isinstance(sid, str) and sid, f"{t}: start_sandbox returns an id")
    sb = sandbox_of(sid)
    check(sb["state"] == "running", f"{t}: running as soon as start_sandbox answers")
    check(sb["config"]["memory_mb"] == 128 and sb["config"]["cpu"] == 0.5, f"{t}: memory_mb and cpu_cores kept")
    check(sb["config"]["isolation"] == "container", f"{t}: type docker runs on the container backend")
    # cpu_cores is the cgroup's CPU quota, as the sandbox sees it.
    r = client.exec_command(sid, ["sh", "-c", "cat /sys/fs/cgroup/cpu.max 2>/dev/null || "
                                  "echo $(cat /sys/fs/cgroup/cpu/cpu.cfs_quota_us) $(cat /sys/fs/cgroup/cpu/cpu.cfs_period_us)"])
    quota, period = (int(x) for x in r.stdout.split())
    check(quota / period == 0.5, f"{t}: cpu_cores 0.5 is the cgroup quota ({r.stdout.strip()})")
    # The command is the sandbox's main process, and it lives.
    r = client.exec_command(sid, ["sh", "-c", 'kill -0 "$(cat /tmp/main.pid)" && echo alive'])
    check(r.stdout == "alive\n" and r.exit_code == 0, f"{t}: the command runs as the main process ({r})")
    logs = requests.get(f"{PADDOCK}/v1/sandboxes/{sid}/logs", timeout=10).text
    check("main-says-hi" in logs, f"{t}: the main process's output is the sandbox's log")

    # exec: argv without a shell, stdout/stderr/exit code, unicode
    r = client.exec_command(sid, ["sh", "-c", "echo out; echo err >&2; exit 3"])
    check((r.stdout, r.stderr, r.exit_code) == ("out\n", "err\n", 3), f"{t}: stdout, stderr and exit code ({r})")
    r = client.exec_command(sid, ["echo", "a b", "$HOME", "héllo ✓"])
    check(r.stdout == "a b $HOME héllo ✓\n", f"{t}: argv reaches the program untouched ({r.stdout!r})")
    r = client.exec_command(sid, ["no-such-program"])
    check(r.exit_code == 127 and "no-such-program" in r.stderr, f"{t}: a missing program exits 127 ({r})")
    r = client.exec_command(sid, ["sh", "-c", "kill -9 $$"])
    check(r.exit_code == 137, f"{t}: killed by a signal: 128 + signal ({r.exit_code})")
    r = client.exec_command(sid, ["sh", "-c", "head -c 300000 /dev/zero | tr '\\0' x"])
    check(r.stdout == "x" * 300000, f"{t}: 300 kB of output intact")

    # memory_mb is a cgroup limit: 200 MiB in a 128 MiB sandbox is killed.
    r = client.exec_command(sid, ["python3", "-c", "x = bytearray(200 << 20); print('survived')"])
    check(r.exit_code == 137 and "survived" not in r.stdout, f"{t}: memory_mb enforced (OOM kill, exit {r.exit_code})")
    r = client.exec_command(sid, ["python3", "-c", "x = bytearray(40 << 20); print('fits')"])
    check(r.stdout == "fits\n", f"{t}: 40 MiB fits in 128 MiB")

    check(client.get_status(sid) == "running", f"{t}: get_status running")
    # Paused through the native API: status says so; resume_sandbox resumes.
    native("POST", f"/v1/sandboxes/{sid}/pause")
    check(client.get_status(sid) == "paused", f"{t}: get_status paused")
    client.resume_sandbox(sid)
    check(client.get_status(sid) == "running", f"{t}: resume_sandbox resumes a paused sandbox")
    r = client.exec_command(sid, ["echo", "back"])
    check(r.stdout == "back\n", f"{t}: exec after resume")
    return sid


def http_methods():
    t = "http"
    with HTTPClient(host=HTTP_HOST, port=HTTP_PORT) as client:
        sid = exercise(client, t)
        # Real cgroup figures: two busy loops show up as CPU use.
        client.exec_command(
            sid, ["sh", "-c", "(timeout 5 sh -c 'while :; do :; done' &); (timeout 5 sh -c 'while :; do :; done' &); sleep 1.5"]
        )
        m = client.get_metrics(sid)
        check(m.cpu_percent > 5.0, f"{t}: cpu_percent of two busy loops ({m.cpu_percent:.1f}%)")
        check(m.memory_limit_bytes == 128 << 20, f"{t}: memory_limit_bytes from the cgroup")
        check(0 < m.memory_usage_bytes < m.memory_limit_bytes, f"{t}: memory_usage_bytes ({m.memory_usage_bytes})")
        check(abs(m.memory_percent - 100.0 * m.memory_usage_bytes / m.memory_limit_bytes) < 5, f"{t}: memory_percent")
        check(m.pids_current >= 2, f"{t}: pids_current ({m.pids_current})")
        # The raw answers: snake_case keys, exit_code always present.
        raw = requests.get(f"http://{HTTP_HOST}:{HTTP_PORT}/sandboxes/{sid}/metrics", timeout=10).json()
        for k in MetricsResult.__dataclass_fields__:
            check(k in raw, f"{t}: metrics JSON has {k}")
        raw = requests.post(
            f"http://{HTTP_HOST}:{HTTP_PORT}/sandboxes/{sid}/exec", json={"command": ["sh", "-c", ":"]}, timeout=10
        ).json()
        check(raw.get("exit_code") == 0 and raw.get("stdout") == "", f"{t}: exec JSON has exit_code ({raw})")
        raw = requests.get(f"http://{HTTP_HOST}:{HTTP_PORT}/sandboxes/{sid}", timeout=10).json()
        check(raw["id"] == sid and raw["status"] == "running" and raw["type"] == "docker", f"{t}: status JSON ({raw})")
        listed = requests.get(f"http://{HTTP_HOST}:{HTTP_PORT}/sandboxes", timeout=10).json()
        check(any(s["id"] == sid for s in listed["sandboxes"]), f"{t}: GET /sandboxes lists it")
        # run_python and platform_info as later releases send them over HTTP.
        raw = requests.post(
            f"http://{HTTP_HOST}:{HTTP_PORT}/sandboxes/{sid}/run_python", json={"code": "print(6 * 7)"}, timeout=30
        ).json()
        check(raw["result"] == "42\n" and raw["exit_code"] == 0, f"{t}: POST run_python ({raw})")
        raw = requests.get(f"http://{HTTP_HOST}:{HTTP_PORT}/sandboxes/{sid}/platform_info", timeout=10).json()
        check(json.loads(raw["info"])["system"] == "Linux", f"{t}: GET platform_info ({raw})")
        client.stop_sandbox(sid)
        expect_http(lambda: client.get_status(sid), 404, f"{t}: status after stop", sid, SandboxNotFoundError)
        expect_http(lambda: client.exec_command(sid, ["sh", "-c", ":"]), 404, f"{t}: exec after stop", cls=SandboxNotFoundError)
        expect_http(lambda: client.stop_sandbox(sid), 404, f"{t}: stop twice", cls=SandboxNotFoundError)
        st = sandbox_of(sid)
        check(st["state"] == "destroyed", f"{t}: stop_sandbox removes the sandbox")


def http_errors():
    t = "http errors"
    c = HTTPClient(host=HTTP_HOST, port=HTTP_PORT)
    for fn, what in [
        (lambda: c.get_status(MISSING_ID), "get_status"),
        (lambda: c.exec_command(MISSING_ID, ["true"]), "exec_command"),
        (lambda: c.get_metrics(MISSING_ID), "get_metrics"),
        (lambda: c.stop_sandbox(MISSING_ID), "stop_sandbox"),
        (lambda: c.snapshot_sandbox(MISSING_ID), "snapshot_sandbox"),
        (lambda: c.resume_sandbox(MISSING_ID), "resume_sandbox"),
        (lambda: c.get_status("not-a-sandbox"), "get_status of a non-id"),
    ]:
        expect_http(fn, 404, f"{t}: {what} of an unknown id", cls=SandboxNotFoundError)
    expect_http(lambda: c.start_sandbox(type="lxc", image=ALPINE), 400, f"{t}: unknown type", "type")
    expect_http(lambda: c.start_sandbox(type="docker", image=""), 400, f"{t}: empty image", "image")
    expect_http(lambda: c.start_sandbox(type="docker", image=ALPINE, memory_mb=-5), 400, f"{t}: negative memory", "memory_mb")
    expect_http(lambda: c.start_sandbox(type="docker", image=ALPINE, memory_mb=4), 400, f"{t}: 4 MiB", "memory_mb")
    expect_http(lambda: c.start_sandbox(type="docker", image=ALPINE, cpu_cores=-1.0), 400, f"{t}: negative cpu", "cpu_cores")
    expect_http(lambda: c.start_sandbox(type="docker", image=ALPINE, cpu_cores=512.0), 400, f"{t}: too many cores", "cpu_cores")
    body = expect_http(
        lambda: c.start_sandbox(type="docker", image=NO_IMAGE), 400, f"{t}: an image no registry has", "image"
    )
    check(body["field"] == "image", f"{t}: the field is named")
    expect_http(
        lambda: c.start_sandbox(type="docker", image=ALPINE, kernel_image="/boot/vmlinuz"),
        400,
        f"{t}: a firecracker field on docker",
        "kernel_image",
    )
    expect_http(
        lambda: c.start_sandbox(type="firecracker", image=ALPINE, kernel_image="/boot/vmlinuz"),
        501,
        f"{t}: firecracker",
        "microvm backend",
    )
    expect_http(lambda: c.start_sandbox(type="gvisor", image=ALPINE), 501, f"{t}: gvisor", "gvisor backend")
    expect_http(
        lambda: c.start_sandbox(type="docker", image=ALPINE, snapshot_path="/snap", mem_file_path="/mem"),
        501,
        f"{t}: restoring memory",
        "mem_file_path",
    )
    body = expect_http(
        lambda: c.start_sandbox(type="docker", image=ALPINE, snapshot_path="no-such-snapshot"),
        400,
        f"{t}: an unknown snapshot",
        "snapshot_path",
    )
    check(body["field"] == "snapshot_path", f"{t}: the snapshot's field is named")
    # Bodies must say they are JSON: a web page can POST text/plain to
    # loopback without a preflight.
    r = requests.post(
        f"http://{HTTP_HOST}:{HTTP_PORT}/sandboxes",
        data=json.dumps({"type": "docker", "image": ALPINE}),
        headers={"Content-Type": "text/plain"},
        timeout=10,
    )
    check(r.status_code == 415 and r.json()["field"] == "Content-Type", f"{t}: a text/plain body is refused ({r.text})")
    base = f"http://{HTTP_HOST}:{HTTP_PORT}"
    for body, field in [
        ("{", "body"),
        ('{"image": 5}', "image"),
        ('{"memory_mb": "lots", "image": "x"}', "memory_mb"),
        ('{"command": "ls", "image": "x"}', "command"),
        ("[1, 2]", "body"),
    ]:
        r = requests.post(f"{base}/sandboxes", data=body, headers={"Content-Type": "application/json"}, timeout=10)
        check(r.status_code == 400 and r.json()["field"] == field, f"{t}: {body!r} is a 400 naming {field} ({r.text})")
    sid = c.start_sandbox(type="docker", image=ALPINE)
    expect_http(lambda: c.exec_command(sid, []), 400, f"{t}: empty exec", "command")
    r = requests.post(
        f"{base}/sandboxes/{sid}/exec", data='{"command": [1]}', headers={"Content-Type": "application/json"}, timeout=10
    )
    check(r.status_code == 400 and "command" in r.json()["field"], f"{t}: a non-string argv is a 400 ({r.text})")
    r = requests.post(f"{base}/sandboxes/{sid}/run_python", json={"code": "print(1)"}, timeout=30)
    check(r.status_code == 409 and "python" in r.json()["message"], f"{t}: run_python without Python ({r.text})")
    r = requests.get(f"{base}/nowhere", timeout=10)
    check(r.status_code == 404 and r.json()["code"] == "route_not_found", f"{t}: unknown route ({r.text})")
    # Defaults: no command is the image's, no limits are the daemon's.
    sb = sandbox_of(sid)
    check(sb["config"]["command"] == ["sleep", "600"], f"{t}: no command runs the image's ({sb['config']['command']})")
    c.stop_sandbox(sid)
    c.close()


def grpc_methods():
    t = "grpc"
    with SandboxClient(host=GRPC_HOST, port=GRPC_PORT) as client:
        sid = exercise(client, t)
        # GetMetrics is in the service though 0.1.1's client never calls it.
        client.exec_command(
            sid, ["sh", "-c", "(timeout 5 sh -c 'while :; do :; done' &); (timeout 5 sh -c 'while :; do :; done' &); sleep 1.5"]
        )
        m = client.stub.GetMetrics(sandbox_pb2.MetricsRequest(id=sid))
        check(m.memory_limit_bytes == 128 << 20 and m.memory_usage_bytes > 0, f"{t}: GetMetrics memory")
        check(5.0 < m.cpu_percent < 85.0 and m.pids_current >= 2, f"{t}: GetMetrics cpu {m.cpu_percent:.1f}%")
        st = client.stub.GetStatus(sandbox_pb2.StatusRequest(id=sid))
        check(st.id == sid and st.status == "running", f"{t}: GetStatus carries the id")

        # run_python: stdout of the snippet; a failure is a status with the traceback.
        out = client.run_python(sid, "print('Hello Python in Sandbox')")
        check(out == "Hello Python in Sandbox\n", f"{t}: run_python ({out!r})")
        out = client.run_python(sid, "import sys\nfor i in range(3):\n    print(i, 'é', file=sys.stdout)")
        check(out == "0 é\n1 é\n2 é\n", f"{t}: run_python multi-line code")
        e = expect_grpc(lambda: client.run_python(sid, "raise ValueError('boom')"), grpc.StatusCode.UNKNOWN, f"{t}: python raises", "ValueError: boom")
        check("status 1" in e.details(), f"{t}: the exit status is said")

        # get_platform_info: uname from inside the sandbox.
        info = json.loads(client.get_platform_info(sid))
        check(set(info) >= {"system", "node", "release", "version", "machine", "processor"}, f"{t}: platform keys ({info})")
        inside = client.exec_command(sid, ["python3", "-c", "import platform, json; print(json.dumps(platform.uname()._asdict()))"])
        want = json.loads(inside.stdout)
        for k in ("system", "node", "release", "version", "machine"):
            check(info[k] == want[k], f"{t}: platform {k} is the sandbox's own ({info[k]!r})")
        check(info["node"] != os.uname().nodename, f"{t}: node is the sandbox's hostname, not the host's")

        client.stop_sandbox(sid)
        expect_grpc(lambda: client.get_status(sid), grpc.StatusCode.NOT_FOUND, f"{t}: status after stop", sid)


def grpc_errors():
    t = "grpc errors"
    c = SandboxClient(host=GRPC_HOST, port=GRPC_PORT)
    nf = grpc.StatusCode.NOT_FOUND
    inv = grpc.StatusCode.INVALID_ARGUMENT
    for fn, what in [
        (lambda: c.get_status(MISSING_ID), "get_status"),
        (lambda: c.exec_command(MISSING_ID, ["true"]), "exec_command"),
        (lambda: c.stop_sandbox(MISSING_ID), "stop_sandbox"),
        (lambda: c.snapshot_sandbox(MISSING_ID), "snapshot_sandbox"),
        (lambda: c.resume_sandbox(MISSING_ID), "resume_sandbox"),
        (lambda: c.run_python(MISSING_ID, "1"), "run_python"),
        (lambda: c.get_platform_info(MISSING_ID), "get_platform_info"),
        (lambda: c.stub.GetMetrics(sandbox_pb2.MetricsRequest(id=MISSING_ID)), "GetMetrics"),
    ]:
        expect_grpc(fn, nf, f"{t}: {what} of an unknown id", MISSING_ID)
    expect_grpc(lambda: c.get_status(""), inv, f"{t}: an empty id", "id")
    expect_grpc(lambda: c.start_sandbox(type="lxc", image=ALPINE), inv, f"{t}: unknown type", "type")
    expect_grpc(lambda: c.start_sandbox(type="docker", image=""), inv, f"{t}: empty image", "image")
    expect_grpc(lambda: c.start_sandbox(type="docker", image=ALPINE, memory_mb=-1), inv, f"{t}: negative memory", "memory_mb")
    expect_grpc(lambda: c.start_sandbox(type="docker", image=ALPINE, cpu_cores=-2.0), inv, f"{t}: negative cpu", "cpu_cores")
    expect_grpc(lambda: c.start_sandbox(type="docker", image=NO_IMAGE), nf, f"{t}: missing image", "image")
    sid = c.start_sandbox(type="", image=ALPINE)
    check(sandbox_of(sid)["config"]["isolation"] == "container", f"{t}: an empty type is the default backend")
    expect_grpc(lambda: c.exec_command(sid, []), inv, f"{t}: empty exec", "command")
    expect_grpc(
        lambda: c.run_python(sid, "print(1)"), grpc.StatusCode.FAILED_PRECONDITION, f"{t}: run_python without Python", "python"
    )
    # More output than a gRPC message holds: cut, and said so, not a failure.
    r = c.exec_command(sid, ["sh", "-c", "head -c 6000000 /dev/zero"])
    check(r.exit_code == 0 and len(r.stdout) < 4 << 20 and "truncated" in r.stderr, f"{t}: 6 MB of output is cut ({len(r.stdout)})")
    # Bytes that are not UTF-8 grow threefold once decoded (U+FFFD): still
    # one message the SDK accepts.
    r = c.exec_command(sid, ["sh", "-c", "head -c 3000000 /dev/zero | tr '\\0' '\\200'"])
    size = len(r.stdout.encode()) + len(r.stderr.encode())
    check(r.exit_code == 0 and size < 4 << 20 and "4 MiB" in r.stderr, f"{t}: undecodable output is cut to fit ({size} bytes)")
    c.stop_sandbox(sid)
    c.close()


def prefixed():
    """Both clients with a reverse proxy's path prefix in their address."""
    h = HTTPClient(address=f"http://{HTTP_HOST}:{HTTP_PORT}/v1/service/sandbox")
    sid = h.start_sandbox(type="docker", image=ALPINE, command=["tail", "-f", "/dev/null"], memory_mb=64, cpu_cores=0.25)
    check(h.exec_command(sid, ["echo", "via prefix"]).stdout == "via prefix\n", "prefix http: exec")
    check(h.get_status(sid) == "running", "prefix http: status")
    check(h.get_metrics(sid).memory_limit_bytes == 64 << 20, "prefix http: metrics")
    g = SandboxClient(address=f"{GRPC_HOST}:{GRPC_PORT}/v1/service/sandbox")
    check(g.get_status(sid) == "running", "prefix grpc: sees the same sandbox")
    check(g.exec_command(sid, ["echo", "grpc prefix"]).stdout == "grpc prefix\n", "prefix grpc: exec")
    info = json.loads(g.get_platform_info(sid))
    check(info["system"] == "Linux", "prefix grpc: platform info")
    sid2 = g.start_sandbox(type="docker", image=ALPINE)
    check(h.get_status(sid2) == "running", "prefix grpc: start")
    g.stop_sandbox(sid2)
    expect_grpc(lambda: g.get_status(sid2), grpc.StatusCode.NOT_FOUND, "prefix grpc: not found")
    # A prefix with a sandboxes segment of its own.
    h2 = HTTPClient(address=f"http://{HTTP_HOST}:{HTTP_PORT}/team/sandboxes/api")
    check(h2.get_status(sid) == "running", "prefix http: a prefix holding /sandboxes")
    check(h2.exec_command(sid, ["echo", "x"]).stdout == "x\n", "prefix http: exec under that prefix")
    h2.close()
    h.stop_sandbox(sid)
    expect_http(lambda: h.get_status(sid), 404, "prefix http: not found", cls=SandboxNotFoundError)
    # A scheme in the gRPC address is dropped by the SDK, as is a trailing slash.
    g2 = SandboxClient(address=f"http://{GRPC_HOST}:{GRPC_PORT}/v1/service/sandbox/")
    expect_grpc(lambda: g2.get_status(MISSING_ID), grpc.StatusCode.NOT_FOUND, "prefix grpc: scheme and slash")
    g.close()
    g2.close()
    h.close()


def main():
    t0 = time.time()
    http_quick_start()
    grpc_quick_start()
    http_methods()
    grpc_methods()
    http_errors()
    grpc_errors()
    prefixed()
    print(f"all flash checks passed in {time.time() - t0:.1f}s")


if __name__ == "__main__":
    main()
