//! Files: streamed upload and download, atomic writes, listing, stat,
//! remove, rename, mkdir, and paths that try to leave the sandbox.

mod common;
use common::*;
use serde_json::json;

#[test]
fn upload_download_roundtrip() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    let data: Vec<u8> = (0..(24u32 << 20))
        .map(|i| (i.wrapping_mul(2654435761) >> 13) as u8)
        .collect();
    let r = put_file(
        &api,
        &sb.id,
        "/workspace/deep/dir/blob.bin",
        "&mode=600",
        data.clone(),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["size"], data.len());
    assert_eq!(r.body["mode"], 0o600);
    let (status, back) = get_file(&api, &sb.id, "/workspace/deep/dir/blob.bin");
    assert_eq!(status, 200);
    assert!(back == data, "downloaded bytes differ");
    // The sandbox sees the same bytes.
    let sum = sb.sh("md5sum < /workspace/deep/dir/blob.bin | cut -d' ' -f1")["stdout"]
        .as_str()
        .unwrap()
        .trim()
        .to_string();
    let out = std::process::Command::new("md5sum")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    out.stdin.as_ref().unwrap().write_all(&data).unwrap();
    let host = String::from_utf8(out.wait_with_output().unwrap().stdout).unwrap();
    assert_eq!(host.split_whitespace().next().unwrap(), sum);
    // Empty files, and append.
    assert_eq!(
        put_file(&api, &sb.id, "/workspace/empty", "", vec![]).status,
        201
    );
    assert_eq!(get_file(&api, &sb.id, "/workspace/empty").1, b"");
    put_file(&api, &sb.id, "/workspace/log", "", b"a".to_vec());
    put_file(
        &api,
        &sb.id,
        "/workspace/log",
        "&append=true",
        b"b".to_vec(),
    );
    assert_eq!(get_file(&api, &sb.id, "/workspace/log").1, b"ab");
}

#[test]
fn list_stat_mkdir_rename_remove() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    assert_eq!(
        api.post(&sb.path("/files/mkdir?path=/workspace/a/b/c"), json!({}))
            .status,
        201
    );
    put_file(&api, &sb.id, "/workspace/a/one.txt", "", b"1".to_vec());
    sb.sh("ln -s one.txt /workspace/a/link");
    let l = api.get(&sb.path("/files/list?path=/workspace/a"));
    assert_eq!(l.status, 200, "{}", l.text);
    let names: Vec<(String, String)> = l.body["entries"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["name"].as_str().unwrap().into(),
                e["kind"].as_str().unwrap().into(),
            )
        })
        .collect();
    assert_eq!(
        names,
        vec![
            ("b".into(), "dir".into()),
            ("link".into(), "symlink".into()),
            ("one.txt".into(), "file".into())
        ]
    );
    let s = api.get(&sb.path("/files/stat?path=/workspace/a/one.txt"));
    assert_eq!(s.body["size"], 1);
    assert_eq!(s.body["kind"], "file");
    let r = api.post(
        &sb.path("/files/rename"),
        json!({"from": "/workspace/a/one.txt", "to": "/workspace/two.txt"}),
    );
    assert_eq!(r.status, 204, "{}", r.text);
    assert_eq!(
        api.get(&sb.path("/files/stat?path=/workspace/a/one.txt"))
            .status,
        404
    );
    assert_eq!(get_file(&api, &sb.id, "/workspace/two.txt").1, b"1");
    // A non-empty directory needs recursive=true.
    let r = api.delete(&sb.path("/files?path=/workspace/a"));
    assert_eq!(r.status, 409, "{}", r.text);
    assert_eq!(
        api.delete(&sb.path("/files?path=/workspace/a&recursive=true"))
            .status,
        204
    );
    assert_eq!(
        api.get(&sb.path("/files/list?path=/workspace/a")).status,
        404
    );
    // Errors.
    assert_eq!(
        api.get(&sb.path("/files?path=/workspace/missing")).status,
        404
    );
    let r = api.get(&sb.path("/files?path=/workspace"));
    assert_eq!(r.status, 400, "{}", r.text);
    assert_eq!(
        api.get(&sb.path("/files/list")).status,
        400,
        "path is required"
    );
    let r = put_file(&api, &sb.id, "/usr/bin/evil", "", b"x".to_vec());
    assert!(
        r.status == 409 || r.status == 403 || r.status == 400,
        "read-only /usr: {} {}",
        r.status,
        r.text
    );
}

#[test]
fn paths_cannot_leave_the_sandbox() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    // A host file the sandbox must never see.
    let secret = format!("/tmp/paddock-host-secret-{}", std::process::id());
    std::fs::write(&secret, "host secret").unwrap();
    for p in [
        "/workspace/../../etc/passwd",
        "../x",
        "/workspace/a/../../b",
    ] {
        let r = api.get(&sb.path(&format!("/files?path={p}")));
        assert_eq!(r.status, 400, "{p}: {}", r.text);
        assert_eq!(r.body["field"], "path");
        assert_eq!(
            put_file(&api, &sb.id, p, "", b"x".to_vec()).status,
            400,
            "{p}"
        );
        assert_eq!(
            api.get(&sb.path(&format!("/files/list?path={p}"))).status,
            400
        );
        assert_eq!(
            api.delete(&sb.path(&format!("/files?path={p}"))).status,
            400
        );
    }
    let r = api.post(
        &sb.path("/files/rename"),
        json!({"from": "/workspace/x", "to": "/workspace/../../tmp/y"}),
    );
    assert_eq!(r.status, 400, "{}", r.text);
    // Symlinks resolve inside the sandbox's own root, never the host's.
    sb.sh(&format!("ln -s {secret} /workspace/s1; ln -s ../../../../../../{secret} /workspace/s2; ln -s / /workspace/root"));
    for p in [
        "/workspace/s1",
        "/workspace/s2",
        &format!("/workspace/root{secret}"),
    ] {
        let (status, body) = get_file(&api, &sb.id, p);
        assert_eq!(status, 404, "{p}: {}", String::from_utf8_lossy(&body));
    }
    // Writing through a link lands in the sandbox, not on the host.
    assert_eq!(
        put_file(
            &api,
            &sb.id,
            "/workspace/s1",
            "&atomic=false",
            b"overwritten".to_vec()
        )
        .status,
        201
    );
    assert_eq!(std::fs::read_to_string(&secret).unwrap(), "host secret");
    // Host secrets under the shared /etc are masked.
    let r = sb.sh("cat /etc/shadow | wc -c");
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "0", "{r}");
    std::fs::remove_file(&secret).unwrap();
}

/// Issue 19, item 9: a download through a symlink was cut to the link's own
/// length (its lstat size), on the native API and in `paddock cp`, below
/// and above the size at which the file is handed over to the daemon.
#[test]
fn download_through_a_symlink_is_whole() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(&api, json!({}));
    let dir = std::env::temp_dir().join(format!("paddock-cp-link-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    // Below and above handover::MIN_FILE (256 KiB).
    for n in [100_000usize, 400_000] {
        let data: Vec<u8> = (0..n as u32)
            .map(|i| (i.wrapping_mul(2654435761) >> 11) as u8)
            .collect();
        let target = format!("/workspace/big{n}");
        assert_eq!(
            put_file(&api, &sb.id, &target, "", data.clone()).status,
            201
        );
        // Absolute and relative links, and a link to a link.
        sb.sh(&format!(
            "ln -s {target} /workspace/abs{n} && ln -s big{n} /workspace/rel{n} \
             && ln -s abs{n} /workspace/chain{n}"
        ));
        for link in ["abs", "rel", "chain"] {
            let p = format!("/workspace/{link}{n}");
            let (status, back) = get_file_within(&api, &sb.id, &p, 60);
            assert_eq!(status, 200, "{p}: {}", String::from_utf8_lossy(&back));
            assert_eq!(back.len(), n, "{p}: {} of {n} bytes", back.len());
            assert!(back == data, "{p}: the bytes differ");
        }
        // `paddock cp` out through the link.
        let out = dir.join(format!("out{n}"));
        d.cli_ok(&[
            "cp",
            &format!("{}:/workspace/abs{n}", sb.id),
            out.to_str().unwrap(),
        ]);
        let got = std::fs::read(&out).unwrap();
        assert_eq!(got.len(), n, "paddock cp: {} of {n} bytes", got.len());
        assert!(got == data, "paddock cp: the bytes differ");
    }
    let _ = std::fs::remove_dir_all(&dir);
}

/// Issue 19, item 9: a file of /proc (stat size 0, yet data) downloaded as
/// an empty 200.
#[test]
fn proc_files_download_their_bytes() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    let (status, body) = get_file_within(&api, &sb.id, "/proc/self/status", 30);
    assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
    let text = String::from_utf8_lossy(&body);
    assert!(text.contains("Name:") && text.contains("Pid:"), "{text:?}");
    let (status, body) = get_file_within(&api, &sb.id, "/proc/cpuinfo", 30);
    assert_eq!(status, 200);
    assert!(
        String::from_utf8_lossy(&body).contains("processor"),
        "/proc/cpuinfo came as {} bytes",
        body.len()
    );
    // And through a link to one.
    sb.sh("ln -s /proc/meminfo /workspace/mem");
    let (status, body) = get_file_within(&api, &sb.id, "/workspace/mem", 30);
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&body).contains("MemTotal"));
}

/// Issue 19, item 9: a FIFO's download hung (the agent's open blocks until
/// a writer comes). Whatever is not a regular file is a prompt 400 that
/// says what it is, through a link too.
#[test]
fn what_is_not_a_regular_file_is_refused_promptly() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    let r = sb.sh(
        "mkfifo /workspace/fifo && ln -s fifo /workspace/lfifo && mkdir /workspace/dir \
         && ln -s dir /workspace/ldir && python3 -c \"import socket; \
         socket.socket(socket.AF_UNIX).bind('/workspace/sock')\" && echo ok",
    );
    assert_eq!(r["stdout"].as_str().unwrap().trim(), "ok", "{r}");
    for (path, what) in [
        ("/workspace/fifo", "FIFO"),
        ("/workspace/lfifo", "FIFO"),
        ("/workspace/dir", "directory"),
        ("/workspace/ldir", "directory"),
        ("/workspace/sock", "socket"),
        ("/dev/zero", "device"),
        ("/dev/null", "device"),
    ] {
        let started = std::time::Instant::now();
        let (status, body) = get_file_within(&api, &sb.id, path, 15);
        let text = String::from_utf8_lossy(&body);
        assert_eq!(status, 400, "{path}: {text}");
        assert!(
            text.contains(what) && text.contains("\"path\""),
            "{path}: {text}"
        );
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "{path}: slow"
        );
    }
    // The sandbox still answers (nothing of the agent is stuck).
    assert_eq!(sb.sh("echo alive")["stdout"], "alive\n");
}
