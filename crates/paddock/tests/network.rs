//! Networking, ports and the proxy: each sandbox has its own network
//! namespace; ports listening inside are listed and reachable through the
//! HTTP and WebSocket proxy. Sandboxes reach neither each other nor the
//! host's services (bar what they are given), hold no raw sockets, and
//! cannot send as another sandbox.

mod common;
use common::*;
use serde_json::json;
use std::io::{Read, Write};

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
    // The host reaches the sandbox's address (that is what the proxy uses);
    // other sandboxes do not (`sandboxes_cannot_reach_each_other`).
    a.sh("(python3 -m http.server 8080 --directory /etc >/dev/null 2>&1 &)");
    let mut s = eventually(10, || {
        std::net::TcpStream::connect(format!("{ip_a}:8080")).ok()
    });
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

/// A TCP server in a sandbox: answers `hello-from-sandbox` on port 7000.
const LISTEN: &str = r#"
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(b"hello-from-sandbox\n"); c.close()
"#;

/// `probe.py tcp HOST PORT`: `open` or `closed: why`; `probe.py ping
/// HOST`: `reply` or `noreply: why`, through an ICMP echo socket (what
/// ping uses without CAP_NET_RAW).
const PROBE: &str = r#"
import socket, struct, sys
what, host = sys.argv[1], sys.argv[2]
try:
    if what == "tcp":
        s = socket.create_connection((host, int(sys.argv[3])), timeout=2)
        print("open", s.recv(100).decode().strip())
    else:
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM, socket.IPPROTO_ICMP)
        s.settimeout(2)
        s.sendto(struct.pack("!BBHHH", 8, 0, 0, 0, 1) + b"paddock", (host, 0))
        d = s.recv(1024)
        print("reply" if d[0] == 0 else "noreply: type %d" % d[0])
except Exception as e:
    print("closed:" if what == "tcp" else "noreply:", repr(e))
"#;

fn put_script(api: &Api, sb: &Sb, path: &str, text: &str) {
    let put = api.send(
        api.req(
            reqwest::Method::PUT,
            &sb.path(&format!("/files?path={path}")),
        )
        .header("content-type", "application/octet-stream")
        .body(text.to_string()),
    );
    assert_eq!(put.status, 201, "{}", put.text);
}

fn probe(api: &Api, sb: &Sb, args: &str) -> String {
    put_script(api, sb, "/workspace/probe.py", PROBE);
    let r = sb.sh(&format!("python3 /workspace/probe.py {args}"));
    r["stdout"].as_str().unwrap().trim().to_string()
}

fn ip_of(api: &Api, sb: &Sb) -> String {
    api.get(&sb.path("")).body["ip"]
        .as_str()
        .unwrap()
        .to_string()
}

/// The sandbox's network slot, as the daemon recorded it.
fn slot(d: &Daemon, sb: &Sb) -> serde_json::Value {
    let p = d.data.join("sandboxes").join(&sb.id).join("net.json");
    serde_json::from_str(&std::fs::read_to_string(p).unwrap()).unwrap()
}

fn run(cmd: &str, args: &[&str]) -> (bool, String) {
    let o = std::process::Command::new(cmd).args(args).output().unwrap();
    (
        o.status.success(),
        format!(
            "{}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        ),
    )
}

/// A TCP listener of the test process on 0.0.0.0:`port` (every host
/// address), answering `host-PORT`.
fn host_listener(port: u16) {
    let l = std::net::TcpListener::bind(("0.0.0.0", port)).unwrap();
    std::thread::spawn(move || {
        for mut c in l.incoming().flatten() {
            let _ = c.write_all(format!("host-{port}\n").as_bytes());
        }
    });
}

#[test]
fn sandboxes_cannot_reach_each_other() {
    let api = shared().api();
    let a = Sb::new(&api, json!({}));
    let b = Sb::new(&api, json!({}));
    let ip_a = ip_of(&api, &a);
    put_script(&api, &a, "/workspace/listen.py", LISTEN);
    a.sh("(python3 /workspace/listen.py >/dev/null 2>&1 &)");
    // It listens: the host (the proxy's path) gets its answer.
    let mut s = eventually(10, || {
        std::net::TcpStream::connect(format!("{ip_a}:7000")).ok()
    });
    let mut hello = String::new();
    s.read_to_string(&mut hello).unwrap();
    assert_eq!(hello, "hello-from-sandbox\n");
    // Another sandbox gets nothing, over TCP or ICMP.
    let tcp = probe(&api, &b, &format!("tcp {ip_a} 7000"));
    assert!(tcp.starts_with("closed:"), "b reached a's server: {tcp}");
    let ping = probe(&api, &b, &format!("ping {ip_a}"));
    assert!(ping.starts_with("noreply:"), "b pinged a: {ping}");
    // Ping works without CAP_NET_RAW, through an ICMP echo socket (as
    // iputils' ping does; busybox's wants a raw socket): the sandbox
    // reaches its gateway.
    let gw = &shared().gateway;
    assert_eq!(probe(&api, &b, &format!("ping {gw}")), "reply");
}

#[test]
fn raw_and_packet_sockets_are_refused() {
    let api = shared().api();
    let sb = Sb::new(&api, json!({}));
    for (what, args) in [
        ("AF_PACKET", "socket.AF_PACKET, socket.SOCK_RAW"),
        (
            "raw IPv4",
            "socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW",
        ),
    ] {
        let r = sb.sh(&format!(
            "python3 -c 'import socket\ntry:\n  socket.socket({args}); print(\"opened\")\nexcept OSError as e: print(e.errno)'"
        ));
        assert_eq!(
            r["stdout"].as_str().unwrap().trim(),
            libc::EPERM.to_string(),
            "{what}: {r}"
        );
    }
    let caps = sb.sh("grep CapEff /proc/self/status")["stdout"]
        .as_str()
        .unwrap()
        .to_string();
    let eff = u64::from_str_radix(caps.split_whitespace().nth(1).unwrap(), 16).unwrap();
    assert_eq!(eff & (1 << 13), 0, "CAP_NET_RAW held: {caps}");
}

#[test]
fn host_services_are_reached_only_when_given() {
    let (closed, offered) = (free_port(), free_port());
    host_listener(closed);
    host_listener(offered);
    let d = Daemon::start_with("127.0.0.1", &["--host-port", &offered.to_string()]);
    let api = d.api();
    let gw = &d.gateway;
    // Another address of the host, in the daemon's subnet (the host's
    // other interfaces are as much the host).
    let o: Vec<&str> = gw.split('.').collect();
    let other = format!("{}.{}.255.254", o[0], o[1]);
    let (ok, out) = run(
        "ip",
        &["addr", "add", &format!("{other}/32"), "dev", &d.bridge],
    );
    assert!(ok, "{out}");
    let plain = Sb::new(&api, json!({}));
    for addr in [gw, &other] {
        let r = probe(&api, &plain, &format!("tcp {addr} {closed}"));
        assert!(r.starts_with("closed:"), "reached {addr}:{closed}: {r}");
    }
    // The port the operator offers.
    assert_eq!(
        probe(&api, &plain, &format!("tcp {gw} {offered}")),
        format!("open host-{offered}")
    );
    // A sandbox that asked for the host gateway reaches it.
    let given = Sb::new(&api, json!({"extra_hosts": ["hostbox:host-gateway"]}));
    assert_eq!(
        probe(&api, &given, &format!("tcp hostbox {closed}")),
        format!("open host-{closed}")
    );
    let r = probe(&api, &given, &format!("tcp {other} {closed}"));
    assert!(r.starts_with("closed:"), "reached {other}:{closed}: {r}");
    // Its address, and its namespace, go to the next sandbox without it.
    let given_ip = ip_of(&api, &given);
    drop(given);
    let mut others = Vec::new();
    let next = loop {
        assert!(others.len() < 12, "the namespace was not reused");
        let sb = Sb::new(&api, json!({}));
        if ip_of(&api, &sb) == given_ip {
            break sb;
        }
        others.push(sb);
    };
    let r = probe(&api, &next, &format!("tcp {gw} {closed}"));
    assert!(
        r.starts_with("closed:"),
        "the next sandbox reached the host: {r}"
    );
    let _ = run(
        "ip",
        &["addr", "del", &format!("{other}/32"), "dev", &d.bridge],
    );
}

/// Sends, from eth0 of the network namespace `netns` as root (with every
/// capability a sandbox lacks), ARP replies (`arp ETHER_SRC SHA SPA THA
/// TPA`) or a UDP datagram with a forged source (`udp SRC DST PORT`).
const SPOOF: &str = r#"
import socket, struct, sys, time
def mac(s): return bytes(int(x, 16) for x in s.split(":"))
ip = socket.inet_aton
if sys.argv[1] == "arp":
    src, sha, spa, tha, tpa = sys.argv[2:7]
    s = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    s.bind(("eth0", 0))
    f = mac(tha) + mac(src) + b"\x08\x06" + struct.pack("!HHBBH", 1, 0x0800, 6, 4, 2)
    f += mac(sha) + ip(spa) + mac(tha) + ip(tpa)
    for _ in range(5):
        s.send(f); time.sleep(0.05)
else:
    src, dst, port = sys.argv[2], sys.argv[3], int(sys.argv[4])
    data = b"spoofed"
    udp = struct.pack("!HHHH", 40000, port, 8 + len(data), 0) + data
    hdr = struct.pack("!BBHHHBBH4s4s", 0x45, 0, 20 + len(udp), 0, 0, 64, 17, 0, ip(src), ip(dst))
    s = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_RAW)
    for _ in range(5):
        s.sendto(hdr + udp, (dst, 0)); time.sleep(0.05)
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    for _ in range(5):
        u.sendto(b"legit", (dst, port)); time.sleep(0.05)
"#;

fn in_netns(netns: &str, args: &[&str]) -> String {
    let mut a = vec!["netns", "exec", netns, "python3", "-c", SPOOF];
    a.extend_from_slice(args);
    let (ok, out) = run("ip", &a);
    assert!(ok, "{out}");
    out
}

/// The host's neighbour entry for `ip` on `bridge`: its MAC address.
fn neighbour(bridge: &str, ip: &str) -> Option<String> {
    let (_, out) = run("ip", &["neigh", "show", ip, "dev", bridge]);
    let mut w = out.split_whitespace();
    w.find(|x| *x == "lladdr").and(w.next()).map(str::to_string)
}

#[test]
fn a_sandbox_cannot_send_as_another() {
    let port = free_port();
    let udp = std::net::UdpSocket::bind(("0.0.0.0", port)).unwrap();
    udp.set_read_timeout(Some(std::time::Duration::from_millis(300)))
        .unwrap();
    let d = Daemon::start_with("127.0.0.1", &["--host-port", &port.to_string()]);
    let api = d.api();
    let a = Sb::new(&api, json!({}));
    let b = Sb::new(&api, json!({}));
    let (ip_a, ip_b) = (ip_of(&api, &a), ip_of(&api, &b));
    let ns_a = slot(&d, &a)["netns"].as_str().unwrap().to_string();
    let ns_b = slot(&d, &b)["netns"].as_str().unwrap().to_string();
    let eth0 = |ns: &str| {
        let (ok, out) = run(
            "ip",
            &["netns", "exec", ns, "cat", "/sys/class/net/eth0/address"],
        );
        assert!(ok, "{out}");
        out.trim().to_string()
    };
    let (mac_a, mac_b) = (eth0(&ns_a), eth0(&ns_b));
    let gw_mac = std::fs::read_to_string(format!("/sys/class/net/{}/address", d.bridge))
        .unwrap()
        .trim()
        .to_string();
    // The host learns both sandboxes' addresses (a connection attempt
    // each), and lets its entries age past their lock time.
    for (ip, mac) in [(&ip_a, &mac_a), (&ip_b, &mac_b)] {
        eventually(10, || {
            let _ = std::net::TcpStream::connect_timeout(
                &format!("{ip}:1").parse().unwrap(),
                std::time::Duration::from_secs(1),
            );
            (neighbour(&d.bridge, ip).as_deref() == Some(mac)).then_some(())
        });
    }
    std::thread::sleep(std::time::Duration::from_millis(2500));
    // a claims b's address (ARP reply: b's IP at a's MAC)...
    in_netns(&ns_a, &["arp", &mac_a, &mac_a, &ip_b, &gw_mac, &d.gateway]);
    // ... and its own address at a MAC that is not its own.
    let fake = "02:de:ad:be:ef:01";
    in_netns(&ns_a, &["arp", fake, fake, &ip_a, &gw_mac, &d.gateway]);
    std::thread::sleep(std::time::Duration::from_millis(500));
    let (took_b, took_a) = (neighbour(&d.bridge, &ip_b), neighbour(&d.bridge, &ip_a));
    assert_ne!(took_b.as_deref(), Some(&*mac_a), "a took b's address");
    assert_ne!(
        took_a.as_deref(),
        Some(fake),
        "a's port sent as another MAC"
    );
    // An IPv4 packet with b's address as its source, to a port the host
    // offers sandboxes, is dropped; a's own gets there.
    in_netns(&ns_a, &["udp", &ip_b, &d.gateway, &port.to_string()]);
    let mut got = Vec::new();
    let mut buf = [0u8; 64];
    while let Ok((n, from)) = udp.recv_from(&mut buf) {
        got.push((from.ip().to_string(), buf[..n].to_vec()));
    }
    assert!(
        got.iter().any(|(ip, m)| *ip == ip_a && m == b"legit"),
        "{got:?}"
    );
    assert!(
        !got.iter().any(|(_, m)| m == b"spoofed"),
        "a forged b's address: {got:?}"
    );
}

#[test]
fn filters_follow_the_daemon_and_cleanup_removes_them() {
    let d = Daemon::start_with("127.0.0.1", &["--net-pool", "2"]);
    let api = d.api();
    let table = format!("paddock_{}", d.bridge);
    let ports = || run("nft", &["list", "set", "bridge", &table, "ports"]);
    let sb = Sb::new(&api, json!({}));
    let veth = slot(&d, &sb)["veth"].as_str().unwrap().to_string();
    let (ok, out) = ports();
    assert!(ok && out.contains(&veth), "{out}");
    let (_, link) = run("bridge", &["-d", "link", "show", "dev", &veth]);
    assert!(link.contains("isolated on"), "{link}");
    // A new daemon (after kill -9) rebuilds the tables with the running
    // sandbox's port in them: it still reaches its gateway.
    d.restart();
    let (ok, out) = ports();
    assert!(ok && out.contains(&veth), "{out}");
    assert_eq!(probe(&api, &sb, &format!("ping {}", d.gateway)), "reply");
    // A stop (SIGTERM) keeps the running sandbox's port pinned and drops
    // the pool's.
    drop(sb);
    let sb = Sb::new(&api, json!({}));
    let veth = slot(&d, &sb)["veth"].as_str().unwrap().to_string();
    std::mem::forget(sb);
    eventually(20, || {
        (ports().1.matches("\"pv").count() >= 2).then_some(())
    });
    // SAFETY: a signal to the daemon this test started.
    unsafe { libc::kill(d.pid() as i32, libc::SIGTERM) };
    let out = eventually(20, || {
        let (ok, out) = ports();
        (ok && out.matches("\"pv").count() == 1).then_some(out)
    });
    assert!(out.contains(&veth), "{out}");
    // `paddock serve --cleanup` removes the tables.
    d.stop_for_good();
    for family in ["bridge", "inet"] {
        let (ok, out) = run("nft", &["list", "table", family, &table]);
        assert!(!ok, "{family} {table} left: {out}");
    }
}
