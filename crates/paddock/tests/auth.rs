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

/// Tokens the daemon signs: a read-only one reads and changes nothing, one
/// scoped to a sandbox sees that one alone, a revoked one is refused at
/// once, and they outlive a restart and a rotation of the signing key but
/// not the revocation of the key that made them.
#[test]
fn scoped_tokens_narrow_expire_and_are_revoked() {
    let d = Daemon::start_on("0.0.0.0");
    let ka = api_key(&d, "alice");
    let alice = d.api_with_key(&ka);
    let a = alice.create(json!({"key": "a"}));
    let b = alice.create(json!({"key": "b"}));

    let r = alice.post("/tokens", json!({"read_only": true}));
    assert_eq!(r.status, 201, "{}", r.text);
    let ro = r.body["token"].as_str().unwrap().to_string();
    let ro_jti = r.body["jti"].as_str().unwrap().to_string();
    let ro_api = d.api_with_key(&ro);
    assert_eq!(
        ro_api.get("/sandboxes").body["sandboxes"]
            .as_array()
            .unwrap()
            .len(),
        2
    );
    let f = ro_api.get(&format!("/sandboxes/{a}/files?path=/etc/hostname"));
    assert_eq!(f.status, 200, "{}", f.text);
    for (what, s) in [
        (
            "exec",
            ro_api
                .post(&format!("/sandboxes/{a}/exec"), json!({"cmd": ["true"]}))
                .status,
        ),
        (
            "stop",
            ro_api
                .post(&format!("/sandboxes/{a}/stop"), json!({}))
                .status,
        ),
        ("create", ro_api.post("/sandboxes", json!({})).status),
        ("delete", ro_api.delete(&format!("/sandboxes/{b}")).status),
        ("token", ro_api.post("/tokens", json!({})).status),
    ] {
        assert_eq!(s, 403, "a read-only token's {what}");
    }

    // The CLI makes one scoped to sandbox "a".
    let out = {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_paddock"));
        c.args(["tokens", "create", "--sandbox", a.as_str(), "--ttl", "1h"])
            .env("PADDOCK_HOST", &d.url)
            .env("PADDOCK_API_KEY", &ka);
        c.output().unwrap()
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let scoped = String::from_utf8(out.stdout).unwrap().trim().to_string();
    let sa = d.api_with_key(&scoped);
    let seen = sa.get("/sandboxes").body["sandboxes"].clone();
    assert_eq!(seen.as_array().unwrap().len(), 1, "{seen}");
    assert_eq!(seen[0]["id"], a.as_str());
    assert_eq!(sa.get(&format!("/sandboxes/{b}")).status, 404);
    // Acting on it: refused by the token's scope (its principal's own
    // sandbox: nothing to hide from the holder).
    assert_eq!(
        sa.post(&format!("/sandboxes/{b}/exec"), json!({"cmd": ["true"]}))
            .status,
        403
    );
    let e = sa.post(&format!("/sandboxes/{a}/exec"), json!({"cmd": ["true"]}));
    assert_eq!(e.status, 200, "{}", e.text);
    assert_eq!(sa.post("/sandboxes", json!({})).status, 403);

    // Listed without the tokens; bad input named.
    let l = alice.get("/tokens");
    assert_eq!(l.body["tokens"].as_array().unwrap().len(), 2, "{}", l.text);
    assert!(!l.text.contains(&ro) && !l.text.contains(&scoped));
    let bad = alice.post("/tokens", json!({"ttl_secs": 99_999_999}));
    assert_eq!(bad.status, 400, "{}", bad.text);
    assert!(
        bad.text.contains("expires_in") || bad.text.contains("ttl"),
        "{}",
        bad.text
    );
    let kb = api_key(&d, "bob");
    let bob = d.api_with_key(&kb);
    assert_eq!(bob.post("/tokens", json!({"sandboxes": [a]})).status, 404);
    assert_eq!(bob.delete(&format!("/tokens/{ro_jti}")).status, 404);
    assert_eq!(ro_api.get("/sandboxes").status, 200);

    // A restart and a rotation keep them; a revocation ends one at once.
    d.restart();
    assert_eq!(ro_api.get("/sandboxes").status, 200);
    assert_eq!(alice.post("/tokens/rotate-key", json!({})).status, 403);
    assert_eq!(d.api().post("/tokens/rotate-key", json!({})).status, 401);
    assert_eq!(alice.delete(&format!("/tokens/{ro_jti}")).status, 204);
    assert_eq!(ro_api.get("/sandboxes").status, 401);
    assert_eq!(sa.get("/sandboxes").status, 200);
    // A forged one (the payload changed: another principal) is refused.
    let parts: Vec<&str> = scoped.split('.').collect();
    use base64::Engine as _;
    let b64 = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut claims: serde_json::Value =
        serde_json::from_slice(&b64.decode(parts[1]).unwrap()).unwrap();
    claims["sub"] = json!("bob");
    let forged = format!(
        "{}.{}.{}",
        parts[0],
        b64.encode(claims.to_string()),
        parts[2]
    );
    assert_eq!(d.api_with_key(&forged).get("/sandboxes").status, 401);
    // Revoking alice's key ends what it made.
    let out = d.cli(&["keys", "revoke", "alice"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(sa.get("/sandboxes").status, 401);
}
