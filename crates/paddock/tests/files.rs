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
