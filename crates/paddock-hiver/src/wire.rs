//! hiver-py 0.1.18's wire types and their mapping onto the engine's.

use std::collections::BTreeMap;

use paddock_core::engine::ConfigChanges;
use paddock_core::model::{
    Access, AclRule, EgressAccess, EgressOverride, EgressRule, Isolation, Mount, SandboxConfig,
    SandboxSpec, SnapshotPolicy,
};
use paddock_core::Error;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

/// How often a hiver sandbox records `resource.usage`, seconds.
pub const USAGE_EVERY_SECS: u64 = 5;

/// hiver's default idle TTL, seconds.
pub const DEFAULT_TTL: i64 = 1800;

/// `SandboxConfig` as hiver sends and reads it. Unknown keys are ignored,
/// as the SDK's own model does.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HConfig {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub image: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub isolation: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpu: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub entrypoint: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tty: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub extra_hosts: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ttl: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fs: Option<Vec<HFileSystem>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub egress: Option<Vec<HEgressRule>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub snapshot: Option<HSnapshot>,
}

// hiver's own shapes of ACL rules, egress rules and the snapshot policy:
// the engine's refuse unknown fields (the native API's contract), while
// hiver's SDK ignores keys it does not know, so a field a newer SDK adds
// must not turn its create into a 400.

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HAcl {
    pub path: String,
    pub access: Access,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HEgressRule {
    pub access: EgressAccess,
    pub host: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ports: Option<Vec<u16>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub methods: Option<Vec<String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub paths: Option<Vec<String>>,
    #[serde(default, rename = "override", skip_serializing_if = "Option::is_none")]
    pub override_: Option<HEgressOverride>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HEgressOverride {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub prefix_path: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub query: Option<BTreeMap<String, String>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub headers: Option<BTreeMap<String, String>>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HSnapshot {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub restore_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub write_key: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub include: Option<Vec<String>>,
}

impl From<&HAcl> for AclRule {
    fn from(a: &HAcl) -> AclRule {
        AclRule {
            path: a.path.clone(),
            access: a.access,
        }
    }
}

impl From<&AclRule> for HAcl {
    fn from(a: &AclRule) -> HAcl {
        HAcl {
            path: a.path.clone(),
            access: a.access,
        }
    }
}

impl From<&HEgressRule> for EgressRule {
    fn from(r: &HEgressRule) -> EgressRule {
        EgressRule {
            access: r.access,
            host: r.host.clone(),
            ports: r.ports.clone(),
            methods: r.methods.clone(),
            paths: r.paths.clone(),
            override_: r.override_.as_ref().map(|o| EgressOverride {
                host: o.host.clone(),
                prefix_path: o.prefix_path.clone(),
                query: o.query.clone(),
                headers: o.headers.clone(),
            }),
        }
    }
}

impl From<&EgressRule> for HEgressRule {
    fn from(r: &EgressRule) -> HEgressRule {
        HEgressRule {
            access: r.access,
            host: r.host.clone(),
            ports: r.ports.clone(),
            methods: r.methods.clone(),
            paths: r.paths.clone(),
            override_: r.override_.as_ref().map(|o| HEgressOverride {
                host: o.host.clone(),
                prefix_path: o.prefix_path.clone(),
                query: o.query.clone(),
                headers: o.headers.clone(),
            }),
        }
    }
}

impl From<&HSnapshot> for SnapshotPolicy {
    fn from(p: &HSnapshot) -> SnapshotPolicy {
        SnapshotPolicy {
            restore_key: p.restore_key.clone(),
            write_key: p.write_key.clone(),
            include: p.include.clone(),
        }
    }
}

impl From<&SnapshotPolicy> for HSnapshot {
    fn from(p: &SnapshotPolicy) -> HSnapshot {
        HSnapshot {
            restore_key: p.restore_key.clone(),
            write_key: p.write_key.clone(),
            include: p.include.clone(),
        }
    }
}

/// The engine's egress rules for hiver's.
pub fn egress_of(rules: &Option<Vec<HEgressRule>>) -> Option<Vec<EgressRule>> {
    rules
        .as_ref()
        .map(|r| r.iter().map(EgressRule::from).collect())
}

pub fn snapshot_of(p: &Option<HSnapshot>) -> Option<SnapshotPolicy> {
    p.as_ref().map(SnapshotPolicy::from)
}

/// One `fs` entry. Only the `local` backend exists here; the others are
/// refused with a message that says so.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HFileSystem {
    pub backend: String,
    pub mount: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub acls: Option<Vec<HAcl>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub origin: Option<String>,
}

impl HFileSystem {
    pub fn from_mount(m: &Mount) -> HFileSystem {
        HFileSystem {
            backend: "local".into(),
            mount: m.path.clone(),
            acls: Some(m.acls.iter().map(HAcl::from).collect()),
            origin: m.origin.clone(),
        }
    }
}

pub fn mounts_of(fs: &[HFileSystem]) -> Result<Vec<Mount>, Error> {
    fs.iter()
        .enumerate()
        .map(|(i, f)| {
            if f.backend != "local" {
                return Err(Error::invalid(
                    format!("fs[{i}].backend"),
                    format!(
                        "the {:?} backend is not available on this gateway (only \"local\")",
                        f.backend
                    ),
                ));
            }
            if !f.mount.starts_with('/') {
                return Err(Error::invalid(
                    format!("fs[{i}].mount"),
                    "must be an absolute path",
                ));
            }
            Ok(Mount {
                path: f.mount.trim_end_matches('/').to_string(),
                origin: f.origin.clone(),
                acls: f.acls.iter().flatten().map(AclRule::from).collect(),
            })
        })
        .collect()
}

/// Engine field names in errors, as hiver's config names them.
pub fn hiver_field(field: &str) -> String {
    field
        .replace("mounts[", "fs[")
        .replace("].path", "].mount")
        .replace("memory_mb", "memory")
        .replace("idle_timeout_secs", "ttl")
}

pub fn isolation_of(s: Option<&str>) -> Result<Isolation, Error> {
    match s {
        None | Some("container") => Ok(Isolation::Container),
        Some("microvm") => Ok(Isolation::Microvm),
        Some(other) => Err(Error::invalid(
            "isolation",
            format!("{other:?} is not \"container\" or \"microvm\""),
        )),
    }
}

/// The engine spec for a hiver create.
pub fn spec_of(key: &str, c: &HConfig) -> Result<SandboxSpec, Error> {
    if let Some(cpu) = c.cpu {
        if cpu < 1 {
            return Err(Error::invalid("cpu", "must be at least 1"));
        }
    }
    if let Some(m) = c.memory {
        if m < 128 {
            return Err(Error::invalid("memory", "must be at least 128 (MiB)"));
        }
    }
    let ttl = c.ttl.unwrap_or(DEFAULT_TTL);
    if ttl < 0 {
        return Err(Error::invalid("ttl", "must be 0 (never) or more seconds"));
    }
    let entrypoint = match &c.entrypoint {
        Some(e) if e.trim().is_empty() => {
            return Err(Error::invalid("entrypoint", "must not be empty"))
        }
        Some(e) => Some(e.split_whitespace().map(str::to_string).collect()),
        None => None,
    };
    Ok(SandboxSpec {
        key: Some(key.to_string()),
        image: c.image.clone(),
        isolation: Some(isolation_of(c.isolation.as_deref())?),
        cpu: c.cpu.map(|c| c as f64),
        memory_mb: c.memory,
        entrypoint,
        cwd: c.cwd.clone(),
        tty: c.tty.unwrap_or(false),
        env: c.env.clone().unwrap_or_default(),
        extra_hosts: c.extra_hosts.clone().unwrap_or_default(),
        idle_timeout_secs: (ttl > 0).then_some(ttl as u64),
        mounts: mounts_of(c.fs.as_deref().unwrap_or_default())?,
        egress: egress_of(&c.egress),
        snapshot: snapshot_of(&c.snapshot),
        labels: BTreeMap::from([("dialect".to_string(), "hiver".to_string())]),
        usage_events_secs: Some(USAGE_EVERY_SECS),
        ..Default::default()
    })
}

/// The hiver view of a sandbox's configuration: valid for the SDK's strict
/// model (no empty `fs`, `cpu` an integer of at least 1).
pub fn config_of(c: &SandboxConfig) -> HConfig {
    HConfig {
        image: c.image.clone(),
        isolation: Some(c.isolation.as_str().to_string()),
        cpu: Some((c.cpu.ceil() as i64).max(1)),
        memory: Some(c.memory_mb),
        entrypoint: c
            .entrypoint
            .as_ref()
            .filter(|e| !e.is_empty())
            .map(|e| e.join(" ")),
        cwd: Some(c.cwd.clone()),
        tty: c.tty.then_some(true),
        env: (!c.env.is_empty()).then(|| c.env.clone()),
        extra_hosts: (!c.extra_hosts.is_empty()).then(|| c.extra_hosts.clone()),
        ttl: Some(c.idle_timeout_secs.map_or(0, |t| t as i64)),
        fs: (!c.mounts.is_empty()).then(|| c.mounts.iter().map(HFileSystem::from_mount).collect()),
        egress: c
            .egress
            .as_ref()
            .map(|r| r.iter().map(HEgressRule::from).collect()),
        snapshot: c.snapshot.as_ref().map(HSnapshot::from),
    }
}

/// hiver's `Changes`: only what changed.
pub fn changes_json(c: &ConfigChanges) -> Value {
    let mut out = serde_json::Map::new();
    let pair = |added: Value, removed: Value, a: bool, r: bool| {
        let mut m = serde_json::Map::new();
        if a {
            m.insert("added".into(), added);
        }
        if r {
            m.insert("removed".into(), removed);
        }
        Value::Object(m)
    };
    if !c.mounts_added.is_empty() || !c.mounts_removed.is_empty() {
        let f = |ms: &[Mount]| json!(ms.iter().map(HFileSystem::from_mount).collect::<Vec<_>>());
        out.insert(
            "fs".into(),
            pair(
                f(&c.mounts_added),
                f(&c.mounts_removed),
                !c.mounts_added.is_empty(),
                !c.mounts_removed.is_empty(),
            ),
        );
    }
    if !c.egress_added.is_empty() || !c.egress_removed.is_empty() {
        out.insert(
            "egress".into(),
            pair(
                json!(c
                    .egress_added
                    .iter()
                    .map(HEgressRule::from)
                    .collect::<Vec<_>>()),
                json!(c
                    .egress_removed
                    .iter()
                    .map(HEgressRule::from)
                    .collect::<Vec<_>>()),
                !c.egress_added.is_empty(),
                !c.egress_removed.is_empty(),
            ),
        );
    }
    if !c.warnings.is_empty() {
        out.insert("warnings".into(), json!(c.warnings));
    }
    Value::Object(out)
}

/// JSON with every non-ASCII character escaped: the SDK decodes each
/// network chunk as UTF-8 on its own, so a character split across chunks
/// would kill its stream.
pub fn ascii_json(v: &Value) -> String {
    let s = v.to_string();
    if s.is_ascii() {
        return s;
    }
    let mut out = String::with_capacity(s.len() + 16);
    for c in s.chars() {
        if c.is_ascii() {
            out.push(c);
        } else {
            let mut buf = [0u16; 2];
            for u in c.encode_utf16(&mut buf) {
                out.push_str(&format!("\\u{u:04x}"));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Issue 20: hiver's SDK ignores keys it does not know, so a rule or
    /// policy with a field a newer SDK adds is taken (the engine's own
    /// types, the native API's contract, refuse unknown fields).
    #[test]
    fn fields_a_newer_sdk_adds_are_ignored_not_refused() {
        let c: HConfig = serde_json::from_value(json!({
            "fs": [{"backend": "local", "mount": "/w", "future": 1,
                    "acls": [{"path": "/w/**", "access": "rw", "inherit": true}]}],
            "egress": [{"access": "allow", "host": "api.github.com", "methods": ["GET"],
                        "rate_limit": 10,
                        "override": {"headers": {"A": "b"}, "sign": "v4"}}],
            "snapshot": {"write_key": "k", "compress": "zstd"}
        }))
        .unwrap();
        let spec = spec_of("k", &c).unwrap();
        let config = spec
            .resolve(&paddock_core::model::Limits::default())
            .unwrap();
        let rule = &spec.egress.as_ref().unwrap()[0];
        assert_eq!(rule.host, "api.github.com");
        assert_eq!(
            rule.override_.as_ref().unwrap().headers.as_ref().unwrap()["A"],
            "b"
        );
        assert_eq!(spec.snapshot.unwrap().write_key.as_deref(), Some("k"));
        assert_eq!(spec.mounts[0].acls[0].access, Access::Rw);
        // And what it reads back has hiver's shape.
        let back = serde_json::to_value(config_of(&config)).unwrap();
        assert_eq!(back["egress"][0]["override"]["headers"]["A"], "b");
        assert_eq!(back["fs"][0]["acls"][0]["access"], "rw");
    }

    #[test]
    fn ascii_escapes_outside_ascii() {
        let v = json!({"text": "é✓😀"});
        let s = ascii_json(&v);
        assert!(s.is_ascii());
        assert_eq!(serde_json::from_str::<Value>(&s).unwrap(), v);
    }

    #[test]
    fn config_round_trip_and_defaults() {
        let c: HConfig = serde_json::from_str(
            r#"{"image":"img","ttl":60,"fs":[{"backend":"local","mount":"/workspace","acls":[{"path":"/workspace/**","access":"rw"}]}],"unknown":1}"#,
        )
        .unwrap();
        let spec = spec_of("k", &c).unwrap();
        assert_eq!(spec.idle_timeout_secs, Some(60));
        assert_eq!(spec.mounts[0].path, "/workspace");
        let none = spec_of("k", &HConfig::default()).unwrap();
        assert_eq!(none.idle_timeout_secs, Some(1800));
        let zero = spec_of(
            "k",
            &HConfig {
                ttl: Some(0),
                ..Default::default()
            },
        )
        .unwrap();
        assert_eq!(zero.idle_timeout_secs, None);
        let gcs: HConfig =
            serde_json::from_str(r#"{"fs":[{"backend":"gcs","mount":"/w","gcs_bucket":"b"}]}"#)
                .unwrap();
        let e = spec_of("k", &gcs).unwrap_err();
        assert!(e.to_string().contains("fs[0].backend"), "{e}");
    }
}
