//! Templates: a named image plus sandbox defaults, through the API and the
//! CLI, with the default image (registry images are in images.rs).

mod common;
use common::*;
use serde_json::{json, Value};

#[test]
fn template_defaults_apply_and_can_be_overridden() {
    let d = shared();
    let api = d.api();
    let name = format!("tpl-{}", std::process::id());
    let r = api.post(
        "/templates",
        json!({
            "name": name,
            "cpu": 0.5,
            "memory_mb": 256,
            "env": {"FROM_TEMPLATE": "yes", "SHARED": "template"},
            "labels": {"team": "a"},
            "ttl_secs": 3600,
            "ports": [8000],
            "cwd": "/tmp"
        }),
    );
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["name"], name.as_str());
    assert_eq!(r.body["defaults"]["memory_mb"], 256);

    // A sandbox from it takes every default.
    let sb = Sb::new(&api, json!({"template": name}));
    let got = api.get(&format!("/sandboxes/{}", sb.id)).body;
    assert_eq!(got["template"], name.as_str(), "{got}");
    assert_eq!(got["config"]["memory_mb"], 256);
    assert_eq!(got["config"]["cpu"], 0.5);
    assert_eq!(got["config"]["ttl_secs"], 3600);
    assert_eq!(got["config"]["ports"], json!([8000]));
    assert_eq!(got["labels"]["team"], "a");
    assert!(got["expires_at"].is_string(), "{got}");
    let out = sb.sh("pwd; echo $FROM_TEMPLATE $SHARED; cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes");
    assert_eq!(
        out["stdout"],
        format!("/tmp\nyes template\n{}\n", 256u64 << 20),
        "{out}"
    );

    // Each default can be overridden; env and labels merge key by key.
    let sb2 = Sb::new(
        &api,
        json!({"template": name, "memory_mb": 128, "env": {"SHARED": "mine"},
               "labels": {"extra": "1"}, "cwd": "/workspace"}),
    );
    let got = api.get(&format!("/sandboxes/{}", sb2.id)).body;
    assert_eq!(got["config"]["memory_mb"], 128);
    assert_eq!(got["config"]["cpu"], 0.5);
    assert_eq!(got["labels"], json!({"team": "a", "extra": "1"}));
    assert_eq!(
        sb2.sh("pwd; echo $FROM_TEMPLATE $SHARED")["stdout"],
        "/workspace\nyes mine\n"
    );

    // Listed and inspected; deleting it leaves its sandboxes alone.
    let list = api.get("/templates").body;
    assert!(list["templates"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == name.as_str()));
    assert_eq!(
        api.get(&format!("/templates/{name}")).body["defaults"]["cpu"],
        0.5
    );
    assert_eq!(api.delete(&format!("/templates/{name}")).status, 204);
    assert_eq!(api.get(&format!("/templates/{name}")).status, 404);
    assert_eq!(api.delete(&format!("/templates/{name}")).status, 404);
    assert_eq!(sb.sh("echo alive")["stdout"], "alive\n");
}

#[test]
fn template_bad_input() {
    let d = shared();
    let api = d.api();
    let name = format!("bad-{}", std::process::id());
    let field_of = |r: &Resp| r.body["field"].as_str().unwrap_or("").to_string();
    // No name, a bad name, a bad default, an unknown field, a key.
    for (body, field) in [
        (json!({"cpu": 1}), "name"),
        (json!({"name": "has space"}), "name"),
        (json!({"name": "../x"}), "name"),
        (json!({"name": name, "memory_mb": -1}), "memory_mb"),
        (json!({"name": name, "cpus": 1}), "cpus"),
        (json!({"name": name, "key": "k"}), "key"),
        (json!({"name": name, "isolation": "teleport"}), "isolation"),
    ] {
        let r = api.post("/templates", body.clone());
        assert!(r.status == 400 || r.status == 422, "{body}: {}", r.text);
        assert_eq!(field_of(&r), field, "{body}: {}", r.text);
    }
    // A duplicate name: 409.
    assert_eq!(api.post("/templates", json!({"name": name})).status, 201);
    let r = api.post("/templates", json!({"name": name, "cpu": 2}));
    assert_eq!(r.status, 409, "{}", r.text);
    // Creating from an unknown template names the field.
    let r = api.post("/sandboxes", json!({"template": "no-such-template"}));
    assert!(r.status == 400 || r.status == 422, "{}", r.text);
    assert_eq!(field_of(&r), "template", "{}", r.text);
    assert!(r.text.contains("no-such-template"), "{}", r.text);
    // A template's bad default is caught when the template is made, an
    // override's when the sandbox is.
    let r = api.post("/sandboxes", json!({"template": name, "cwd": "relative"}));
    assert_eq!(field_of(&r), "cwd", "{}", r.text);
    assert_eq!(api.delete(&format!("/templates/{name}")).status, 204);
}

#[test]
fn templates_belong_to_their_principal() {
    let d = Daemon::start_on("0.0.0.0");
    let key = |p: &str| -> String {
        let out = d.cli(&["keys", "create", "--principal", p, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        v["token"].as_str().unwrap().to_string()
    };
    let (a, b) = (d.api_with_key(&key("alice")), d.api_with_key(&key("bob")));
    assert_eq!(
        a.post("/templates", json!({"name": "mine", "cpu": 0.25}))
            .status,
        201
    );
    assert_eq!(b.get("/templates/mine").status, 404);
    // Bob sees none of alice's: only the operator's.
    let names: Vec<Value> = b.get("/templates").body["templates"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["name"].clone())
        .collect();
    assert_eq!(names, [json!("general-coding")]);
    let r = b.post("/sandboxes", json!({"template": "mine"}));
    assert_eq!(r.body["field"], "template", "{}", r.text);
    // Bob may have his own of the same name.
    assert_eq!(
        b.post("/templates", json!({"name": "mine", "cpu": 0.75}))
            .status,
        201
    );
    assert_eq!(a.get("/templates/mine").body["defaults"]["cpu"], 0.25);
}

#[test]
fn templates_through_the_cli() {
    let d = shared();
    let name = format!("cli-tpl-{}", std::process::id());
    let ok = |args: &[&str]| d.cli_ok(args);
    ok(&[
        "templates",
        "create",
        &name,
        "--memory",
        "200",
        "-e",
        "T=1",
        "--label",
        "l=v",
    ]);
    let ls = ok(&["templates", "ls"]);
    assert!(ls.contains(&name) && ls.contains("200"), "{ls}");
    let js: Value = serde_json::from_str(&ok(&["templates", "ls", "--json"])).unwrap();
    assert!(js
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["name"] == name.as_str()));
    let t: Value = serde_json::from_str(&ok(&["templates", "inspect", &name])).unwrap();
    assert_eq!(t["defaults"]["env"]["T"], "1");
    let id = ok(&["create", "--template", &name, "-e", "U=2"])
        .trim()
        .to_string();
    let out = ok(&["exec", &id, "--", "sh", "-c", "echo $T$U"]);
    assert_eq!(out, "12\n");
    let sb: Value = serde_json::from_str(&ok(&["inspect", &id, "--json"]))
        .or_else(|_| serde_json::from_str(&ok(&["inspect", &id])))
        .unwrap();
    assert_eq!(sb["config"]["memory_mb"], 200);
    ok(&["rm", &id]);
    ok(&["templates", "rm", &name]);
    let out = d.cli(&["templates", "inspect", &name]);
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("not found"));
}
