//! Exec: buffered, streamed over SSE, interactive over WebSocket with a PTY.

mod common;
use common::*;
use serde_json::{json, Value};
use tungstenite::Message;

#[test]
fn buffered_exec() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({"env": {"FROM_SPEC": "spec"}}));
    let r = api.exec(
        &sb.id,
        json!({"cmd": ["sh", "-c", "echo out; echo err >&2; exit 7"]}),
    );
    assert_eq!(r["stdout"], "out\n");
    assert_eq!(r["stderr"], "err\n");
    assert_eq!(r["exit_code"], 7);
    // env (the sandbox's and the call's), cwd, stdin, user.
    let r = api.exec(&sb.id, json!({"shell": "echo $FROM_SPEC $FROM_CALL; pwd; cat", "env": {"FROM_CALL": "call"}, "cwd": "/tmp", "stdin": "piped"}));
    assert_eq!(r["stdout"], "spec call\n/tmp\npiped", "{r}");
    // A start too large for the call's metadata (a long stdin) goes on
    // the call's stream instead; both arrive whole.
    for n in [100, 4000, 5000, 300_000] {
        let stdin: String = (0..n).map(|i| char::from(b'a' + (i % 26) as u8)).collect();
        let r = api.exec(&sb.id, json!({"shell": "cat; echo", "stdin": stdin}));
        assert_eq!(
            r["stdout"].as_str().unwrap(),
            format!("{stdin}\n"),
            "{n} bytes"
        );
    }
    // Output left in both pipes as the command exits, more than a pipe
    // holds: all of it, each on its own stream.
    let r = api.exec(
        &sb.id,
        json!({"shell": "head -c 200000 /dev/zero | tr '\\0' o; head -c 150000 /dev/zero | tr '\\0' e >&2"}),
    );
    let (out, err) = (r["stdout"].as_str().unwrap(), r["stderr"].as_str().unwrap());
    assert!(
        out.len() == 200_000 && out.bytes().all(|b| b == b'o'),
        "{}",
        out.len()
    );
    assert!(
        err.len() == 150_000 && err.bytes().all(|b| b == b'e'),
        "{}",
        err.len()
    );
    // The agent (PID 1) closes every pipe of a finished command.
    let fds = |api: &Api| {
        let r = api.exec(&sb.id, json!({"shell": "ls /proc/1/fd | wc -l"}));
        r["stdout"].as_str().unwrap().trim().parse::<u32>().unwrap()
    };
    let before = fds(&api);
    for _ in 0..20 {
        api.exec(&sb.id, json!({"shell": "echo out; echo err >&2"}));
    }
    // (Within a few: the agent may hold one open for a moment for other
    // work; a leak would be one or two per exec.)
    let after = fds(&api);
    assert!(after < before + 5, "{before} -> {after} after 20 execs");
    let r = api.exec(&sb.id, json!({"cmd": ["id", "-u"], "user": "nobody"}));
    assert_eq!(r["stdout"], "65534\n", "{r}");
    // The default working directory.
    assert_eq!(
        api.exec(&sb.id, json!({"cmd": ["pwd"]}))["stdout"],
        "/workspace\n"
    );
    // Killed by a signal.
    let r = api.exec(&sb.id, json!({"shell": "kill -9 $$"}));
    assert_eq!(r["signal"], 9, "{r}");
    assert_eq!(r["exit_code"], 137);
    // A missing program is exit code 127, as in a shell.
    let r = api.exec(&sb.id, json!({"cmd": ["/no/such/program"]}));
    assert_eq!(r["exit_code"], 127, "{r}");
    assert!(r["stderr"].as_str().unwrap().contains("/no/such/program"));
}

#[test]
fn exec_timeout_and_output_cap() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    let t0 = std::time::Instant::now();
    let r = api.exec(
        &sb.id,
        json!({"shell": "echo before; sleep 30", "timeout": 0.5}),
    );
    assert_eq!(r["timed_out"], true, "{r}");
    assert_eq!(r["stdout"], "before\n");
    assert!(t0.elapsed().as_secs() < 20);
    // Output beyond the cap is cut and reported.
    let r = api.exec(
        &sb.id,
        json!({"shell": "head -c 3000000 /dev/zero", "max_output_bytes": 1000}),
    );
    assert_eq!(r["stdout"].as_str().unwrap().len(), 1000);
    assert_eq!(r["stdout_truncated"], true);
    let r = api.exec(
        &sb.id,
        json!({"shell": "head -c 3000000 /dev/zero | tr '\\0' a"}),
    );
    assert_eq!(
        r["stdout"].as_str().unwrap().len(),
        1 << 20,
        "default cap is 1 MiB"
    );
    assert_eq!(r["stdout_truncated"], true);
    // A background process holding stdout open does not hang the call.
    let r = api.exec(&sb.id, json!({"shell": "sleep 60 & echo done"}));
    assert_eq!(r["stdout"], "done\n");
}

#[test]
fn exec_bad_input() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    for (body, field) in [
        (json!({}), "cmd"),
        (json!({"cmd": []}), "cmd"),
        (json!({"cmd": ["true"], "shell": "true"}), "cmd"),
        (json!({"cmd": ["true"], "cwd": "rel"}), "cwd"),
        (json!({"cmd": ["true"], "cwd": "/does/not/exist"}), "cwd"),
        (json!({"cmd": ["true"], "timeout": -1}), "timeout"),
        (json!({"cmd": ["true"], "user": "nosuchuser"}), "user"),
        (json!({"cmd": "true"}), "cmd"),
    ] {
        let r = api.post(&sb.path("/exec"), body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert_eq!(r.body["field"], field, "{body}: {}", r.text);
    }
}

#[test]
fn streaming_exec_over_sse() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    let r = api.post(
        &sb.path("/exec/stream"),
        json!({"shell": "for i in 1 2 3; do echo line$i; done; echo oops >&2; exit 4"}),
    );
    assert_eq!(r.status, 200, "{}", r.text);
    let evs = sse_events(&r.text);
    assert_eq!(evs.first().unwrap().0, "started");
    assert_eq!(sse_stdout(&evs), "line1\nline2\nline3\n");
    assert!(evs
        .iter()
        .any(|e| e.0 == "stderr" && e.1["data"] == "oops\n"));
    let exit = evs.last().unwrap();
    assert_eq!(exit.0, "exit");
    assert_eq!(exit.1["exit_code"], 4);
    // Throughput case: 32 MiB through the stream arrive whole.
    let r = api.post(
        &sb.path("/exec/stream"),
        json!({"shell": "head -c 33554432 /dev/zero | tr '\\0' x"}),
    );
    let n = sse_stdout(&sse_events(&r.text)).len();
    assert_eq!(n, 32 << 20);
    // A character cut between two reads (its first byte, a pause, the
    // rest) arrives whole; a byte that starts no character is U+FFFD.
    let r = api.post(
        &sb.path("/exec/stream"),
        json!({"shell": "printf '\\342'; sleep 0.3; printf '\\234\\223 ok'; sleep 0.3; printf '\\342'"}),
    );
    let out = sse_stdout(&sse_events(&r.text));
    assert_eq!(out, "\u{2713} ok\u{fffd}", "{}", r.text);
}

fn ws_connect(
    d: &Daemon,
    id: &str,
) -> tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>> {
    let url = format!(
        "{}/v1/sandboxes/{id}/exec/ws",
        d.url.replacen("http", "ws", 1)
    );
    let (ws, _) = tungstenite::connect(url).unwrap();
    ws
}

/// Reads until the exit message; returns (stdout, stderr, exit message).
fn ws_collect(
    ws: &mut tungstenite::WebSocket<tungstenite::stream::MaybeTlsStream<std::net::TcpStream>>,
) -> (String, String, Value) {
    let (mut out, mut err) = (Vec::new(), Vec::new());
    loop {
        match ws.read().unwrap() {
            Message::Binary(b) => match b[0] {
                1 => out.extend_from_slice(&b[1..]),
                _ => err.extend_from_slice(&b[1..]),
            },
            Message::Text(t) => {
                let v: Value = serde_json::from_str(&t).unwrap();
                if v["type"] == "exit" || v["type"] == "error" {
                    return (
                        String::from_utf8_lossy(&out).into(),
                        String::from_utf8_lossy(&err).into(),
                        v,
                    );
                }
            }
            _ => {}
        }
    }
}

#[test]
fn interactive_exec_over_websocket_with_stdin() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(&api, json!({}));
    let mut ws = ws_connect(d, &sb.id);
    ws.send(Message::Text(
        json!({"cmd": ["sh", "-c", "read a; echo got:$a; cat; echo done >&2"]})
            .to_string()
            .into(),
    ))
    .unwrap();
    ws.send(Message::Binary(b"first\n".to_vec().into()))
        .unwrap();
    ws.send(Message::Binary(b"rest of input".to_vec().into()))
        .unwrap();
    ws.send(Message::Text(json!({"type": "eof"}).to_string().into()))
        .unwrap();
    let (out, err, exit) = ws_collect(&mut ws);
    assert_eq!(out, "got:first\nrest of input");
    assert_eq!(err, "done\n");
    assert_eq!(exit["exit_code"], 0);
}

#[test]
fn pty_with_resize_and_signals() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(&api, json!({}));
    let mut ws = ws_connect(d, &sb.id);
    ws.send(Message::Text(json!({"cmd": ["sh", "-c", "tty; stty size; read x; stty size; echo x=$x; exit 3"], "pty": {"rows": 30, "cols": 100}}).to_string().into())).unwrap();
    // Wait for the first size report before resizing.
    let mut seen = String::new();
    while !seen.contains("30 100") {
        if let Message::Binary(b) = ws.read().unwrap() {
            seen.push_str(&String::from_utf8_lossy(&b[1..]));
        }
    }
    assert!(seen.contains("/dev/pts/"), "{seen}");
    ws.send(Message::Text(
        json!({"type": "resize", "rows": 50, "cols": 160})
            .to_string()
            .into(),
    ))
    .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(100));
    ws.send(Message::Binary(b"typed\r".to_vec().into()))
        .unwrap();
    let (out, _, exit) = ws_collect(&mut ws);
    assert!(out.contains("50 160"), "{out}");
    assert!(out.contains("x=typed"), "{out}");
    assert_eq!(exit["exit_code"], 3);

    // A signal reaches the command.
    let mut ws = ws_connect(d, &sb.id);
    ws.send(Message::Text(
        json!({"cmd": ["sleep", "60"]}).to_string().into(),
    ))
    .unwrap();
    loop {
        if let Message::Text(t) = ws.read().unwrap() {
            if t.contains("started") {
                break;
            }
        }
    }
    ws.send(Message::Text(
        json!({"type": "signal", "signal": 15}).to_string().into(),
    ))
    .unwrap();
    let (_, _, exit) = ws_collect(&mut ws);
    assert_eq!(exit["signal"], 15, "{exit}");
}

#[test]
fn many_execs_in_parallel() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    std::thread::scope(|s| {
        for t in 0..8 {
            let api = &api;
            let id = &sb.id;
            s.spawn(move || {
                for i in 0..25 {
                    let r = api.exec(id, json!({"cmd": ["echo", format!("{t}-{i}")]}));
                    assert_eq!(r["stdout"], format!("{t}-{i}\n"));
                }
            });
        }
    });
}
