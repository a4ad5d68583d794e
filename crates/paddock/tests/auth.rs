//! Auth: open on loopback; beyond it every request needs an API key, and no
//! principal sees another's sandboxes.

mod common;
use common::*;
use serde_json::json;

#[test]
fn keys_are_required_beyond_loopback_and_principals_are_isolated() {
    let d = Daemon::start_on("0.0.0.0");
    let anon = d.api();
    let r = anon.get("/sandboxes");
    assert_eq!(r.status, 401, "{}", r.text);
    assert_eq!(anon.post("/sandboxes", json!({})).status, 401);
    assert_eq!(d.api_with_key("pdk_bogus").get("/sandboxes").status, 401);

    let ka = api_key(&d, "alice");
    let kb = api_key(&d, "bob");
    assert_ne!(ka, kb);
    let alice = d.api_with_key(&ka);
    let bob = d.api_with_key(&kb);
    let id = alice.create(json!({"key": "mine"}));
    assert_eq!(
        alice.get(&format!("/sandboxes/{id}")).body["owner"],
        "alice"
    );
    // Bob sees nothing of Alice's.
    assert_eq!(bob.get(&format!("/sandboxes/{id}")).status, 404);
    assert_eq!(
        bob.post(&format!("/sandboxes/{id}/exec"), json!({"cmd": ["true"]}))
            .status,
        404
    );
    assert_eq!(bob.delete(&format!("/sandboxes/{id}")).status, 404);
    assert_eq!(
        bob.get(&format!("/sandboxes/{id}/files?path=/etc/hostname"))
            .status,
        404
    );
    assert_eq!(
        bob.get("/sandboxes").body["sandboxes"]
            .as_array()
            .unwrap()
            .len(),
        0
    );
    // Nor Alice's snapshots, nor may he take one of her sandbox.
    let sn = alice.post(
        &format!("/sandboxes/{id}/snapshots"),
        json!({"name": "hers"}),
    );
    assert_eq!(sn.status, 201, "{}", sn.text);
    let sid = sn.body["id"].as_str().unwrap().to_string();
    for path in [format!("/snapshots/{sid}"), "/snapshots/hers".to_string()] {
        assert_eq!(bob.get(&path).status, 404, "{path}");
        assert_eq!(bob.delete(&path).status, 404, "{path}");
    }
    assert_eq!(bob.get("/snapshots").body["snapshots"], json!([]));
    assert_eq!(bob.post("/sandboxes", json!({"snapshot": sid})).status, 404);
    assert_eq!(
        bob.post("/sandboxes", json!({"snapshot": "hers"})).status,
        404
    );
    assert_eq!(
        bob.post(&format!("/sandboxes/{id}/snapshots"), json!({}))
            .status,
        404
    );
    assert_eq!(
        bob.post(&format!("/sandboxes/{id}/fork"), json!({})).status,
        404
    );
    assert_eq!(alice.get("/snapshots/hers").body["owner"], "alice");
    // Keys are per owner: Bob's "mine" is his own sandbox.
    let bobs = bob.create(json!({"key": "mine"}));
    assert_ne!(bobs, id);
    // Keys are stored hashed.
    let db = std::fs::read(d.data.join("paddock.db")).unwrap();
    assert!(
        !db.windows(ka.len()).any(|w| w == ka.as_bytes()),
        "the token is stored in clear"
    );
    // Listing and revoking.
    let ls = d.cli(&["--json", "keys", "ls"]);
    let keys: serde_json::Value = serde_json::from_slice(&ls.stdout).unwrap();
    assert_eq!(keys.as_array().unwrap().len(), 2);
    assert!(d.cli(&["keys", "revoke", "bob"]).status.success());
    assert_eq!(bob.get("/sandboxes").status, 401);
    // The CLI takes the key from the environment or a flag.
    let out = std::process::Command::new(bin())
        .args(["--host", &d.url, "--api-key", &ka, "ls", "--json"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stdout).contains(&id));
    alice.destroy(&id);
}
