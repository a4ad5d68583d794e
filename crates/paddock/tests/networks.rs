//! Private networks through the native API and the CLI, against real
//! sandboxes: sandboxes on one network reach each other on any port, by
//! address and by name (key and id); a sandbox on another network (its
//! owner's or anyone else's) and an isolated one reach none of them, and
//! none of them reaches those. Networks are their owners' only, come back
//! after a restart, and `paddock serve --cleanup` removes their bridges.

mod common;
use common::*;
use serde_json::{json, Value};

/// A TCP server in a sandbox: answers `hello-from-<name>` on port 7000.
const LISTEN: &str = r#"
import socket, sys
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("0.0.0.0", 7000)); s.listen(8)
while True:
    c, _ = s.accept(); c.sendall(("hello-from-%s\n" % sys.argv[1]).encode()); c.close()
"#;

/// `probe.py HOST PORT`: `open <greeting>` or `closed: why`.
const PROBE: &str = r#"
import socket, sys
try:
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), timeout=2)
    print("open", s.recv(100).decode().strip())
except Exception as e:
    print("closed:", repr(e))
"#;

fn put_script(api: &Api, id: &str, path: &str, text: &str) {
    let put = put_file(api, id, path, "", text.as_bytes().to_vec());
    assert_eq!(put.status, 201, "{}", put.text);
}

/// A sandbox of `api`'s principal made with `spec`, listening on port
/// 7000 as `name`; destroyed when dropped.
fn listener<'a>(api: &'a Api, name: &str, spec: Value) -> Sb<'a> {
    let sb = Sb::new(api, spec);
    put_script(api, &sb.id, "/workspace/listen.py", LISTEN);
    put_script(api, &sb.id, "/workspace/probe.py", PROBE);
    sb.sh(&format!(
        "(python3 /workspace/listen.py {name} >/dev/null 2>&1 &)"
    ));
    // Listening before anyone probes it (its own loopback).
    eventually(10, || {
        let r = sb.sh("python3 /workspace/probe.py 127.0.0.1 7000");
        r["stdout"]
            .as_str()
            .unwrap()
            .starts_with("open")
            .then_some(())
    });
    sb
}

fn probe(sb: &Sb, host: &str) -> String {
    let r = sb.sh(&format!("python3 /workspace/probe.py {host} 7000"));
    r["stdout"].as_str().unwrap().trim().to_string()
}

fn ip_of(api: &Api, sb: &Sb) -> String {
    api.get(&sb.path("")).body["ip"]
        .as_str()
        .unwrap_or_else(|| panic!("no ip for {}", sb.id))
        .to_string()
}

/// `from` reaches `to` (address `host`) and gets its greeting.
fn reaches(from: &Sb, host: &str, name: &str) {
    assert_eq!(
        probe(from, host),
        format!("open hello-from-{name}"),
        "{} did not reach {name} at {host}",
        from.id
    );
}

fn blocked(from: &Sb, host: &str, what: &str) {
    let p = probe(from, host);
    assert!(
        p.starts_with("closed:"),
        "{} reached {what} at {host}: {p}",
        from.id
    );
}

fn own_daemon() -> &'static Daemon {
    let d = Box::leak(Box::new(Daemon::start()));
    clean_up_at_exit(d);
    d
}

#[test]
fn a_network_joins_its_sandboxes_and_keeps_everyone_else_out() {
    let d = own_daemon();
    let alice = d.api_with_key(&api_key(d, "alice"));
    let bob = d.api_with_key(&api_key(d, "bob"));
    let r = alice.post("/networks", json!({"name": "lab"}));
    assert_eq!(r.status, 201, "{}", r.text);
    let lab = r.body["id"].as_str().unwrap().to_string();
    assert!(
        r.body["subnet"].as_str().unwrap().ends_with("/24"),
        "{}",
        r.text
    );
    assert_eq!(r.body["status"], "ready");
    assert_eq!(r.body["is_default"], false);
    assert_eq!(
        alice.post("/networks", json!({"name": "other"})).status,
        201
    );

    let web = listener(&alice, "web", json!({"key": "web", "network": "lab"}));
    let db = listener(&alice, "db", json!({"key": "db", "network": lab}));
    assert_eq!(
        alice.get(&web.path("")).body["config"]["network"],
        lab.as_str()
    );
    let (ip_web, ip_db) = (ip_of(&alice, &web), ip_of(&alice, &db));
    // By address and by name (key, id, hostname), both ways.
    reaches(&db, &ip_web, "web");
    reaches(&db, "web", "web");
    reaches(&db, &web.id, "web");
    reaches(&web, &ip_db, "db");
    reaches(&web, "db", "db");
    // A sandbox on alice's other network, one on bob's default network and
    // an isolated one: none reaches web, web reaches none of them.
    let other = listener(&alice, "other", json!({"network": "other"}));
    let bobs = listener(&bob, "bob", json!({"network": "default"}));
    let alone = listener(&alice, "alone", json!({}));
    for (sb, what, api) in [
        (&other, "alice's other network", &alice),
        (&bobs, "bob's network", &bob),
        (&alone, "an isolated sandbox", &alice),
    ] {
        let ip = ip_of(api, sb);
        blocked(sb, &ip_web, "web");
        blocked(&web, &ip, what);
        // Names of another network mean nothing there.
        blocked(sb, "web", "web by name");
    }
    // A late member learns the names, and is learnt.
    let late = listener(&alice, "late", json!({"key": "late", "network": "lab"}));
    reaches(&late, "web", "web");
    reaches(&web, "late", "late");
    drop(late);
    // Gone: its name with it.
    let gone = probe(&web, "late");
    assert!(gone.starts_with("closed:"), "{gone}");
}

#[test]
fn networks_are_their_owners_and_checked() {
    let d = own_daemon();
    let alice = d.api_with_key(&api_key(d, "alice"));
    let bob = d.api_with_key(&api_key(d, "bob"));
    // The default network is made on first use, one per principal.
    assert_eq!(alice.get("/networks/default").status, 404);
    let sb = Sb::new(&alice, json!({"network": "default"}));
    let def = alice.get("/networks/default");
    assert_eq!(def.status, 200, "{}", def.text);
    assert_eq!(def.body["is_default"], true);
    let def_id = def.body["id"].as_str().unwrap().to_string();
    assert!(def_id.starts_with("net-"), "{def_id}");
    assert_eq!(
        alice.get(&sb.path("")).body["config"]["network"],
        def_id.as_str()
    );
    let list = alice.get("/networks");
    assert_eq!(
        list.body["networks"].as_array().unwrap().len(),
        1,
        "{}",
        list.text
    );
    assert_eq!(bob.get("/networks").body["networks"], json!([]));

    // Bad input: 400 naming the field.
    for (body, field) in [
        (json!({"name": "default"}), "name"),
        (json!({"name": "a b"}), "name"),
        (json!({"name": "-x"}), "name"),
        (json!({"name": "x".repeat(65)}), "name"),
        (json!({"name": 5}), "name"),
        (json!({"nam": "x"}), "nam"),
    ] {
        let r = alice.post("/networks", body.clone());
        assert_eq!(r.status, 400, "{body}: {}", r.text);
        assert!(r.text.contains(field), "{body}: {}", r.text);
    }
    assert_eq!(alice.post("/networks", json!({"name": "lab"})).status, 201);
    let dup = alice.post("/networks", json!({"name": "lab"}));
    assert_eq!(dup.status, 409, "{}", dup.text);
    assert!(dup.text.contains("lab"), "{}", dup.text);

    // Another principal's network is not found, to see, delete or join.
    assert_eq!(bob.get(&format!("/networks/{def_id}")).status, 404);
    assert_eq!(bob.get("/networks/lab").status, 404);
    assert_eq!(bob.delete(&format!("/networks/{def_id}")).status, 404);
    let join = bob.post("/sandboxes", json!({"network": def_id}));
    assert_eq!(join.status, 404, "{}", join.text);
    let nope = alice.post("/sandboxes", json!({"network": "nope"}));
    assert_eq!(nope.status, 404, "{}", nope.text);
    let bad = alice.post("/sandboxes", json!({"network": ""}));
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(bad.text.contains("network"), "{}", bad.text);

    // Deleted only once empty.
    let busy = alice.delete("/networks/default");
    assert_eq!(busy.status, 409, "{}", busy.text);
    assert!(busy.text.contains(&sb.id), "{}", busy.text);
    drop(sb);
    assert_eq!(alice.delete(&format!("/networks/{def_id}")).status, 204);
    assert_eq!(alice.get(&format!("/networks/{def_id}")).status, 404);

    // The CLI (the operator's own principal on loopback).
    let id = d.cli_ok(&["networks", "create", "--name", "cli1"]);
    let id = id.trim();
    assert!(id.starts_with("net-"), "{id}");
    let ls = d.cli_ok(&["networks", "ls"]);
    assert!(ls.contains(id) && ls.contains("cli1"), "{ls}");
    let sbid = d.cli_ok(&["create", "--network", "cli1"]);
    let sbid = sbid.trim();
    let rm = d.cli(&["networks", "rm", "cli1"]);
    assert!(!rm.status.success(), "removed while in use");
    d.cli_ok(&["rm", sbid]);
    d.cli_ok(&["networks", "rm", "cli1"]);
    assert!(!d.cli_ok(&["networks", "ls"]).contains("cli1"));
}

/// The names of this daemon's network bridges on the host.
fn network_bridges(d: &Daemon) -> Vec<String> {
    let out = std::process::Command::new("ip")
        .args(["-o", "link", "show", "type", "bridge"])
        .output()
        .unwrap();
    String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| l.split(": ").nth(1))
        .map(|n| n.split('@').next().unwrap().to_string())
        .filter(|n| n.starts_with(&format!("{}-n", d.bridge)))
        .collect()
}

#[test]
fn networks_survive_a_restart_and_cleanup_removes_them() {
    let d = own_daemon();
    let api = d.api();
    assert_eq!(api.post("/networks", json!({"name": "n1"})).status, 201);
    assert_eq!(api.post("/networks", json!({"name": "n2"})).status, 201);
    // One with nobody on it yet: its bridge is set up all the same.
    assert_eq!(api.post("/networks", json!({"name": "n3"})).status, 201);
    assert_eq!(network_bridges(d).len(), 3, "{:?}", network_bridges(d));
    let a = listener(&api, "a", json!({"key": "a", "network": "n1"}));
    let b = listener(&api, "b", json!({"key": "b", "network": "n1"}));
    let c = listener(&api, "c", json!({"key": "c", "network": "n2"}));
    let ip_a = ip_of(&api, &a);
    reaches(&b, "a", "a");
    blocked(&c, &ip_a, "a");

    d.kill9();
    d.restart();
    // The rules are rebuilt from what is recorded.
    reaches(&b, "a", "a");
    reaches(&a, "b", "b");
    blocked(&c, &ip_a, "a");
    blocked(&a, &ip_of(&api, &c), "c");
    let late = listener(&api, "late", json!({"key": "late", "network": "n1"}));
    reaches(&late, "a", "a");
    reaches(&a, "late", "late");
    let n3 = listener(&api, "n3", json!({"network": "n3"}));
    blocked(&n3, &ip_a, "a");
    assert_eq!(network_bridges(d).len(), 3, "{:?}", network_bridges(d));
    drop((a, b, c, late, n3));

    d.stop_for_good();
    assert_eq!(network_bridges(d), Vec::<String>::new());
    let nft = std::process::Command::new("nft")
        .args(["list", "tables"])
        .output()
        .unwrap();
    let tables = String::from_utf8_lossy(&nft.stdout).into_owned();
    let t = format!(
        "paddock_{}",
        d.bridge.replace(|c: char| !c.is_ascii_alphanumeric(), "_")
    );
    assert!(!tables.contains(&format!("{t}\n")), "{tables}");
}
