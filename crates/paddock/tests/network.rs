//! Networking, ports and the proxy: each sandbox has its own network
//! namespace; ports listening inside are listed and reachable through the
//! HTTP and WebSocket proxy.

mod common;
use common::*;
use serde_json::json;
use std::io::{Read, Write};

const WS_ECHO: &str = r#"
import socket, base64, hashlib
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 9001)); s.listen(5)
while True:
    c, _ = s.accept()
    req = b""
    while b"\r\n\r\n" not in req:
        req += c.recv(4096)
    key = [l.split(b": ")[1] for l in req.split(b"\r\n") if l.lower().startswith(b"sec-websocket-key")][0]
    acc = base64.b64encode(hashlib.sha1(key + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest())
    c.sendall(b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Accept: " + acc + b"\r\n\r\n")
    while True:
        d = c.recv(4096)
        if len(d) < 6: break
        n = d[1] & 0x7f
        mask = d[2:6]
        payload = bytes(b ^ mask[i % 4] for i, b in enumerate(d[6:6 + n]))
        c.sendall(bytes([d[0], n]) + payload)
    c.close()
"#;

#[test]
fn ports_and_http_proxy() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(&api, json!({"ports": [8000, 8123]}));
    sb.sh("mkdir -p /workspace/www && echo hello-from-sandbox > /workspace/www/index.html && cd /workspace/www && (python3 -m http.server 8000 >/dev/null 2>&1 &)");
    let ports = eventually(10, || {
        let p = api.get(&sb.path("/ports"));
        p.body["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["port"] == 8000 && x["listening"] == true)
            .then_some(p.body)
    });
    let declared = ports["ports"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["port"] == 8123)
        .unwrap();
    assert_eq!(declared["listening"], false);
    assert_eq!(declared["declared"], true);

    let body = reqwest::blocking::get(format!(
        "{}/v1/sandboxes/{}/proxy/8000/index.html",
        d.url, sb.id
    ))
    .unwrap();
    assert_eq!(body.status(), 200);
    assert_eq!(body.text().unwrap(), "hello-from-sandbox\n");
    let r =
        reqwest::blocking::get(format!("{}/v1/sandboxes/{}/proxy/8000/", d.url, sb.id)).unwrap();
    assert_eq!(r.status(), 200);
    let r = reqwest::blocking::get(format!(
        "{}/v1/sandboxes/{}/proxy/8000/nope?x=1",
        d.url, sb.id
    ))
    .unwrap();
    assert_eq!(r.status(), 404);
    // Nothing listening: a 502 that says so.
    let r = api.get(&sb.path("/proxy/8124/"));
    assert_eq!(r.status, 502, "{}", r.text);
    assert_eq!(api.get(&sb.path("/proxy/notaport/")).status, 400);
}

#[test]
fn websocket_proxy() {
    let d = shared();
    let api = d.api();
    let sb = Sb::new(&api, json!({}));
    let put = api.send(
        api.req(
            reqwest::Method::PUT,
            &sb.path("/files?path=/workspace/ws.py"),
        )
        .header("content-type", "application/octet-stream")
        .body(WS_ECHO),
    );
    assert_eq!(put.status, 201);
    sb.sh("(python3 /workspace/ws.py >/dev/null 2>&1 &)");
    eventually(10, || {
        api.get(&sb.path("/ports")).body["ports"]
            .as_array()
            .unwrap()
            .iter()
            .any(|x| x["port"] == 9001)
            .then_some(())
    });
    let url = format!(
        "{}/v1/sandboxes/{}/proxy/9001/echo",
        d.url.replacen("http", "ws", 1),
        sb.id
    );
    let (mut ws, _) = tungstenite::connect(url).unwrap();
    ws.send(tungstenite::Message::Text("ping through the proxy".into()))
        .unwrap();
    let m = ws.read().unwrap();
    assert_eq!(m.into_text().unwrap().as_str(), "ping through the proxy");
}

#[test]
fn each_sandbox_has_its_own_network_and_outbound_works() {
    let api = shared().api();
    let a = Sb::new(&api, json!({}));
    let b = Sb::new(&api, json!({}));
    let ip_a = api.get(&a.path("")).body["ip"]
        .as_str()
        .unwrap()
        .to_string();
    let ip_b = api.get(&b.path("")).body["ip"]
        .as_str()
        .unwrap()
        .to_string();
    assert_ne!(ip_a, ip_b);
    // Its own namespace: only lo and eth0, with its own address.
    let links = a.sh("ls /sys/class/net | sort | tr '\\n' ' '")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    assert_eq!(links.trim(), "eth0 lo");
    // Outbound: b reaches a server in a (through the bridge and routing).
    a.sh("(python3 -m http.server 8080 --directory /etc >/dev/null 2>&1 &)");
    let r = eventually(10, || {
        let r = b.sh(&format!("python3 -c \"import urllib.request;print(urllib.request.urlopen('http://{ip_a}:8080/hostname').read().decode())\""));
        (r["exit_code"] == 0).then_some(r)
    });
    assert!(r["stdout"].as_str().unwrap().starts_with("sb-"), "{r}");
    // The host reaches the sandbox's address (that is what the proxy uses).
    let mut s = std::net::TcpStream::connect(format!("{ip_a}:8080")).unwrap();
    s.write_all(b"GET /hostname HTTP/1.0\r\n\r\n").unwrap();
    let mut resp = String::new();
    s.read_to_string(&mut resp).unwrap();
    assert!(resp.starts_with("HTTP/1.0 200"), "{resp}");
    // A resolver is configured.
    assert!(a.sh("cat /etc/resolv.conf")["stdout"]
        .as_str()
        .unwrap()
        .contains("nameserver"));
}
