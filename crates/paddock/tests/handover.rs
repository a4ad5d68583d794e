//! Bulk data handed over as descriptors (paddock_proto::handover): a
//! streamed command's stdout, downloads and uploads bypass the agent, and
//! behave as they do on the agent protocol (`PADDOCK_FD_HANDOVER=off`,
//! the path of backends that cannot hand descriptors to the host).

mod common;
use common::*;
use serde_json::json;
use std::time::{Duration, Instant};

/// Bytes each thread of the sandbox's agent (its init) has read and
/// written so far. Per thread: the process's own figures also count what
/// its reaped children (the commands) read and wrote.
fn agent_io(d: &Daemon, id: &str) -> Vec<(String, u64, u64)> {
    let pid = init_pid(&d.data.join("sandboxes").join(id));
    let mut v = Vec::new();
    for t in std::fs::read_dir(format!("/proc/{pid}/task")).unwrap() {
        let t = t.unwrap();
        let Ok(io) = std::fs::read_to_string(t.path().join("io")) else {
            continue; // the thread is gone
        };
        let field = |name: &str| -> u64 {
            io.lines()
                .find_map(|l| l.strip_prefix(name))
                .unwrap()
                .trim()
                .parse()
                .unwrap()
        };
        let tid = t.file_name().to_string_lossy().into_owned();
        v.push((tid, field("rchar:"), field("wchar:")));
    }
    v
}

/// Bytes the agent's threads read (`.0`) and wrote (`.1`) between two
/// readings of `agent_io` (a thread that ended in between is not counted).
fn moved(before: &[(String, u64, u64)], after: &[(String, u64, u64)]) -> (u64, u64) {
    let mut d = (0, 0);
    for (tid, r, w) in after {
        let (r0, w0) = before
            .iter()
            .find(|b| &b.0 == tid)
            .map(|b| (b.1, b.2))
            .unwrap_or((0, 0));
        d.0 += r - r0;
        d.1 += w - w0;
    }
    d
}

/// What both paths must do alike; `handed` says which one `d` takes, and
/// the agent's own I/O counters say whether the data went through it.
fn same_behaviour(d: &Daemon, handed: bool) {
    let api = d.api();
    let sb = Sb::new(&api, json!({"disk_mb": 48}));
    const MIB: u64 = 1 << 20;
    // Through the agent, every byte is read by it and written again;
    // handed over, it carries only the calls (a few KiB each).
    let through = |moved: u64, n: u64| {
        if handed {
            assert!(moved < MIB, "{moved} bytes went through the agent");
        } else {
            assert!(moved >= n, "only {moved} of {n} bytes through the agent");
        }
    };

    // Stdout: 24 MiB arrive whole, before an exit that comes last.
    let io0 = agent_io(d, &sb.id);
    let r = api.post(
        &sb.path("/exec/stream"),
        json!({"shell": "head -c 25165824 /dev/zero | tr '\\0' x; echo err >&2; exit 3"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let evs = sse_events(&r.text);
    assert_eq!(evs.first().unwrap().0, "started");
    assert_eq!(sse_stdout(&evs).len(), 24 << 20);
    assert!(evs
        .iter()
        .any(|e| e.0 == "stderr" && e.1["data"] == "err\n"));
    let exit = evs.last().unwrap();
    assert_eq!((exit.0.as_str(), &exit.1["exit_code"]), ("exit", &json!(3)));
    through(moved(&io0, &agent_io(d, &sb.id)).0, 24 * MIB);

    // A background process that keeps stdout open does not hold the exit
    // back (it would for 300 s): what came before it arrives, then the exit.
    let t0 = Instant::now();
    let r = api.post(
        &sb.path("/exec/stream"),
        json!({"shell": "echo before; sleep 300 & echo after"}),
    );
    let evs = sse_events(&r.text);
    assert_eq!(sse_stdout(&evs), "before\nafter\n", "{}", r.text);
    assert_eq!(evs.last().unwrap().0, "exit", "{}", r.text);
    assert!(t0.elapsed() < Duration::from_secs(60), "{:?}", t0.elapsed());
    sb.sh("pkill sleep; true");

    // A command that cannot start: its error on stderr, exit 127.
    let r = api.post(&sb.path("/exec/stream"), json!({"cmd": ["/no/such/cmd"]}));
    let evs = sse_events(&r.text);
    assert_eq!(evs.last().unwrap().1["exit_code"], 127, "{}", r.text);

    // Upload and download: the same bytes, in and out.
    let data: Vec<u8> = (0..(16u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
        .collect();
    let memory = || {
        api.get(&sb.path("/metrics")).body["memory_bytes"]
            .as_u64()
            .unwrap()
    };
    let mem0 = memory();
    let io0 = agent_io(d, &sb.id);
    let r = put_file(&api, &sb.id, "/workspace/blob", "&mode=640", data.clone());
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (r.body["size"].as_u64(), r.body["mode"].as_u64()),
        (Some(16 * MIB), Some(0o640))
    );
    through(moved(&io0, &agent_io(d, &sb.id)).1, 16 * MIB);
    // The file's pages (a tmpfs) count against the sandbox's own memory,
    // whoever wrote them: handed over, the agent allocated them first.
    let grew = memory().saturating_sub(mem0);
    assert!(
        grew >= 15 * MIB,
        "the sandbox's memory grew by {grew} bytes"
    );
    let io0 = agent_io(d, &sb.id);
    let (status, back) = get_file(&api, &sb.id, "/workspace/blob");
    assert_eq!(status, 200);
    assert!(back == data, "downloaded bytes differ");
    through(moved(&io0, &agent_io(d, &sb.id)).0, 16 * MIB);
    let sum = sb.sh("md5sum < /workspace/blob")["stdout"]
        .as_str()
        .unwrap()[..32]
        .to_string();
    assert_eq!(sum, format!("{:032x}", md5(&data)));
    // Append and a plain overwrite.
    put_file(&api, &sb.id, "/workspace/log", "", b"a".to_vec());
    put_file(
        &api,
        &sb.id,
        "/workspace/log",
        "&append=true",
        b"b".to_vec(),
    );
    assert_eq!(get_file(&api, &sb.id, "/workspace/log").1, b"ab");
    put_file(&api, &sb.id, "/workspace/log", "", b"c".to_vec());
    assert_eq!(get_file(&api, &sb.id, "/workspace/log").1, b"c");

    // Not a regular file: a download is refused (issue 19, item 9); an
    // upload stays on the call either way (handed over only from 256 KiB
    // on, and only into a regular file).
    assert_eq!(get_file(&api, &sb.id, "/dev/null").0, 400);
    let r = put_file(&api, &sb.id, "/dev/null", "", vec![1u8; 1 << 20]);
    assert_eq!(r.status, 201, "{}", r.text);

    // An upload whose client hangs up midway: an atomic one leaves
    // nothing; a plain one what came, and no room allocated past it.
    broken_upload(&api, &sb.id, "/workspace/half", "&atomic=true");
    broken_upload(&api, &sb.id, "/workspace/plain", "&atomic=false");
    eventually(20, || {
        let out = sb.sh("ls -A /workspace; stat -c '%s %b %B' /workspace/plain 2>&1")["stdout"]
            .as_str()
            .unwrap()
            .to_string();
        let mut lines = out.lines().collect::<Vec<_>>();
        let stat: Vec<u64> = lines
            .pop()?
            .split(' ')
            .filter_map(|n| n.parse().ok())
            .collect();
        let &[size, blocks, block] = stat.as_slice() else {
            return None; // not there yet
        };
        let allocated = blocks * block;
        (lines == ["blob", "log", "plain"] && size == HALF && allocated <= HALF + 64 * 1024)
            .then_some(())
    });

    // A disk that fills: a clear 4xx naming the cause, and an atomic write
    // leaves nothing behind (not the file, not its temporary).
    let big = vec![7u8; 64 << 20];
    let r = put_file(&api, &sb.id, "/workspace/full", "&atomic=true", big);
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text);
    assert!(r.text.contains("No space left"), "{}", r.text);
    let left = sb.sh("ls -A /workspace")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(
        left.split_whitespace().collect::<Vec<_>>(),
        ["blob", "log", "plain"],
        "{left}"
    );

    // The sandbox's files are held in its memory (a tmpfs): an upload
    // larger than what is left of its memory limit is refused with a 4xx
    // naming it, whether its size comes first or not, and the sandbox
    // lives on (the OOM killer's only candidate was its agent: it died).
    let small = Sb::new(&api, json!({"memory_mb": 64, "disk_mb": 256}));
    let r = put_file(&api, &small.id, "/workspace/big", "", vec![3u8; 96 << 20]);
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text);
    assert!(r.text.contains("memory limit"), "{}", r.text);
    let chunked = reqwest::blocking::Body::new(std::io::Cursor::new(vec![3u8; 96 << 20]));
    let r = api.send(
        api.req(
            reqwest::Method::PUT,
            &format!("/sandboxes/{}/files?path=/workspace/big2", small.id),
        )
        .header("content-type", "application/octet-stream")
        .body(chunked),
    );
    // Refused as it outgrows the memory left, or at the disk's end, which
    // is within the memory (`disk_size_mb`): whichever comes first.
    assert!((400..500).contains(&r.status), "{} {}", r.status, r.text);
    assert!(
        r.text.contains("memory limit") || r.text.contains("No space left"),
        "{}",
        r.text
    );
    assert_eq!(
        small.sh("ls -A /workspace")["stdout"],
        "",
        "nothing left behind"
    );
    let r = put_file(&api, &small.id, "/workspace/fits", "", vec![4u8; 16 << 20]);
    assert_eq!(r.status, 201, "{}", r.text);
}

/// What `broken_upload` sends of the 1 MiB it announces.
const HALF: u64 = 512 * 1024;

/// Announces an upload of 1 MiB, sends half of it and hangs up.
fn broken_upload(api: &Api, id: &str, path: &str, query: &str) {
    use std::io::Write;
    // `base` is http://host:port/v1.
    let (addr, prefix) = api.base["http://".len()..].split_once('/').unwrap();
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    let auth = api
        .key
        .as_ref()
        .map(|k| format!("Authorization: Bearer {k}\r\n"))
        .unwrap_or_default();
    write!(
        s,
        "PUT /{prefix}/sandboxes/{id}/files?path={path}{query} HTTP/1.1\r\nHost: {addr}\r\n{auth}\
         Content-Type: application/octet-stream\r\nContent-Length: {}\r\n\r\n",
        2 * HALF
    )
    .unwrap();
    s.write_all(&vec![5u8; HALF as usize]).unwrap();
    // Let the daemon take it in before the hang-up.
    std::thread::sleep(Duration::from_millis(300));
}

/// MD5 by the host's md5sum.
fn md5(data: &[u8]) -> u128 {
    use std::io::Write;
    let mut c = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    c.stdin.take().unwrap().write_all(data).unwrap();
    let out = String::from_utf8(c.wait_with_output().unwrap().stdout).unwrap();
    u128::from_str_radix(&out[..32], 16).unwrap()
}

#[test]
fn handed_over_data_bypasses_the_agent() {
    same_behaviour(shared(), true);
}

#[test]
fn the_agent_protocol_path_behaves_the_same() {
    let d = Daemon::start_with_env("127.0.0.1", &[], &[("PADDOCK_FD_HANDOVER", "off")]);
    same_behaviour(&d, false);
}
