//! agenttier's wire: its bodies (camelCase), and the pure conversions the
//! adapter makes (Go durations, Kubernetes names and quantities, ids,
//! phases), each unit-tested.

use std::collections::BTreeMap;

use paddock_core::model::{Sandbox, State};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// Labels the adapter keeps on a sandbox.
pub const NAME: &str = "agenttier.io/name";
pub const NAMESPACE: &str = "agenttier.io/namespace";
pub const ENTRYPOINT: &str = "agenttier.io/entrypoint";
pub const CONFIGURED_AT: &str = "agenttier.io/configured-at";
pub const INSTALL_HASH: &str = "agenttier.io/install-hash";

pub const DEFAULT_NAMESPACE: &str = "default";

// ---- requests --------------------------------------------------------------

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CreateRequest {
    pub name: String,
    #[serde(default)]
    pub namespace: Option<String>,
    pub template_ref: TemplateRef,
    #[serde(default)]
    pub timeout: Option<String>,
    #[serde(default)]
    pub idle_timeout: Option<String>,
    #[serde(default)]
    pub storage: Option<Storage>,
}

#[derive(Debug, Deserialize)]
pub struct TemplateRef {
    pub name: String,
    #[serde(default)]
    pub kind: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct Storage {
    pub size: String,
}

#[derive(Debug, Deserialize)]
pub struct ExecRequest {
    pub command: String,
    #[serde(default)]
    pub timeout: Option<i64>,
}

#[derive(Debug, Deserialize)]
pub struct PortRequest {
    pub port: i64,
    #[serde(default)]
    pub protocol: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CloneRequest {
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub snapshot_class: Option<String>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigureRequest {
    #[serde(default)]
    pub files: Vec<ConfigureFile>,
    #[serde(default)]
    pub install_command: Vec<String>,
    #[serde(default)]
    pub entrypoint: Vec<String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ConfigureFile {
    pub path: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub content_base64: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct CancelRequest {
    pub invoke_id: String,
}

// ---- answers ---------------------------------------------------------------

/// A sandbox as the SDK's `SandboxSummary` reads it (plus `sandboxId`,
/// which create answers).
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Summary {
    pub sandbox_id: String,
    pub name: String,
    pub namespace: String,
    pub status: &'static str,
    pub pod_name: String,
    /// The template's name: a string here, an object in the create.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template_ref: Option<String>,
    pub created_at: String,
    pub last_activity_at: String,
    pub created_by: CreatedBy,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CreatedBy {
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    pub display_name: String,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CommandResult {
    pub stdout: String,
    pub stderr: String,
    pub exit_code: i32,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct ForwardedPort {
    pub port: u16,
    pub protocol: &'static str,
    pub preview_url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub internal_url: Option<String>,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Template {
    pub name: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub image: Option<String>,
    pub resource_version: String,
    pub spec: serde_json::Value,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct CurrentUser {
    pub sub: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub groups: Vec<String>,
    pub is_admin: bool,
}

#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct FileEntry {
    pub name: String,
    pub size: u64,
    pub is_dir: bool,
    pub mode: String,
    pub modified_at: i64,
}

/// The SDK's `AuditEvent`.
#[derive(Debug, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct AuditEvent {
    pub timestamp: String,
    pub event_type: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub sandbox_name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub user_email: String,
    pub details: serde_json::Value,
}

/// The SDK's `UsageAnalytics` (snake_case on this one).
#[derive(Debug, Serialize)]
pub struct UsageAnalytics {
    pub total_sandboxes: usize,
    pub status_breakdown: BTreeMap<String, usize>,
    pub template_breakdown: BTreeMap<String, usize>,
    pub avg_startup_ms: u64,
    pub startup_sample_count: usize,
}

// ---- conversions -------------------------------------------------------------

/// The phase the SDK reads (case matters: `Running`, never `running`).
pub fn phase(s: State) -> &'static str {
    match s {
        State::Creating => "Creating",
        State::Running => "Running",
        State::Paused | State::Stopped => "Stopped",
        State::Error => "Error",
        State::Destroyed => "Deleting",
    }
}

/// Whether `s` is a Kubernetes object name (an RFC 1123 label): 1-63 of
/// `a-z`, `0-9`, `-`, a letter or digit at each end.
pub fn valid_name(s: &str) -> bool {
    let b = s.as_bytes();
    !b.is_empty()
        && b.len() <= 63
        && b.iter()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || *c == b'-')
        && b[0] != b'-'
        && b[b.len() - 1] != b'-'
}

/// The engine's key of a sandbox named `name` in `namespace` (keys are
/// unique per owner; a name is unique per owner and namespace).
pub fn key_of(namespace: &str, name: &str) -> String {
    let h = Sha256::digest(format!("{namespace}/{name}").as_bytes());
    format!("at-{}", &hex::encode(h)[..40])
}

/// The id the SDK puts in URLs: the name in the `default` namespace (0.8.1's
/// `clone` takes the name for the id), `name.namespace` elsewhere (a dot is
/// in neither).
pub fn id_of(namespace: &str, name: &str) -> String {
    if namespace == DEFAULT_NAMESPACE {
        name.to_string()
    } else {
        format!("{name}.{namespace}")
    }
}

/// `(namespace, name)` of an id, if it is one.
pub fn parse_id(id: &str) -> Option<(String, String)> {
    let (name, ns) = match id.split_once('.') {
        Some((n, ns)) => (n, ns),
        None => (id, DEFAULT_NAMESPACE),
    };
    (valid_name(name) && valid_name(ns)).then(|| (ns.to_string(), name.to_string()))
}

/// A Go duration (`"8h"`, `"1h30m"`, `"1.5s"`, `"300ms"`) in whole seconds,
/// rounded up; none, negative or malformed is an error.
pub fn parse_go_duration(s: &str) -> Result<u64, String> {
    let bad = || format!("{s:?} is not a duration (e.g. \"30m\", \"8h\", \"1h30m\")");
    let mut rest = s.strip_prefix('+').unwrap_or(s);
    if rest.starts_with('-') {
        return Err(format!("{s:?}: a duration must not be negative"));
    }
    if rest == "0" {
        return Ok(0);
    }
    if rest.is_empty() {
        return Err(bad());
    }
    let mut nanos: f64 = 0.0;
    while !rest.is_empty() {
        let num_len = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        if num_len == 0 {
            return Err(bad());
        }
        let n: f64 = rest[..num_len].parse().map_err(|_| bad())?;
        rest = &rest[num_len..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit() || c == '.')
            .unwrap_or(rest.len());
        let unit = match &rest[..unit_len] {
            "ns" => 1.0,
            "us" | "µs" | "μs" => 1e3,
            "ms" => 1e6,
            "s" => 1e9,
            "m" => 60e9,
            "h" => 3600e9,
            _ => return Err(bad()),
        };
        rest = &rest[unit_len..];
        nanos += n * unit;
    }
    if !nanos.is_finite() || nanos > 1e9 * 3600.0 * 24.0 * 365.0 * 100.0 {
        return Err(format!("{s:?} is too long"));
    }
    Ok((nanos / 1e9).ceil() as u64)
}

/// A Kubernetes quantity of bytes (`"512Mi"`, `"2Gi"`, `"1G"`, `"1048576"`)
/// in MiB, rounded up.
pub fn parse_quantity_mib(s: &str) -> Result<i64, String> {
    let bad = || format!("{s:?} is not a quantity (e.g. \"512Mi\", \"10Gi\")");
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(s.len());
    if split == 0 {
        return Err(bad());
    }
    let n: f64 = s[..split].parse().map_err(|_| bad())?;
    let mult: f64 = match &s[split..] {
        "" => 1.0,
        "k" | "K" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return Err(bad()),
    };
    let mib = (n * mult / (1024.0 * 1024.0)).ceil();
    if !mib.is_finite() || mib < 1.0 || mib > i64::MAX as f64 / 2.0 {
        return Err(format!("{s:?} is out of range"));
    }
    Ok(mib as i64)
}

/// `ls -l`'s mode string of a file of `kind` with permission bits `mode`.
pub fn mode_string(kind: &str, mode: u32) -> String {
    let mut s = String::with_capacity(10);
    s.push(match kind {
        "dir" => 'd',
        "symlink" => 'l',
        "file" => '-',
        _ => '?',
    });
    for (i, c) in "rwxrwxrwx".chars().enumerate() {
        s.push(if mode & (1 << (8 - i)) != 0 { c } else { '-' });
    }
    s
}

/// The summary of `sb` with id `id`.
pub fn summary(sb: &Sandbox) -> Summary {
    let ns = sb
        .labels
        .get(NAMESPACE)
        .cloned()
        .unwrap_or_else(|| DEFAULT_NAMESPACE.into());
    let name = sb
        .labels
        .get(NAME)
        .cloned()
        .unwrap_or_else(|| sb.id.to_string());
    Summary {
        sandbox_id: id_of(&ns, &name),
        status: phase(sb.state),
        pod_name: sb.id.to_string(),
        template_ref: sb.template.clone(),
        created_at: sb.created_at.to_rfc3339(),
        last_activity_at: sb.last_active_at.to_rfc3339(),
        created_by: CreatedBy {
            email: None,
            display_name: sb.owner.clone(),
        },
        message: sb.message.clone(),
        name,
        namespace: ns,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn go_durations() {
        assert_eq!(parse_go_duration("8h"), Ok(8 * 3600));
        assert_eq!(parse_go_duration("30m"), Ok(1800));
        assert_eq!(parse_go_duration("1h30m"), Ok(5400));
        assert_eq!(parse_go_duration("1.5s"), Ok(2));
        assert_eq!(parse_go_duration("300ms"), Ok(1));
        assert_eq!(parse_go_duration("0"), Ok(0));
        assert_eq!(parse_go_duration("2h45m30s"), Ok(2 * 3600 + 45 * 60 + 30));
        for bad in ["", "forever", "8", "h", "-1s", "1d", "1.2.3s", "5 m"] {
            assert!(parse_go_duration(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn names_ids_and_keys() {
        for ok in ["demo", "a", "x-1", &"a".repeat(63)] {
            assert!(valid_name(ok), "{ok}");
        }
        for bad in ["", "Bad_Name", "-x", "x-", "a.b", &"a".repeat(64), "UPPER"] {
            assert!(!valid_name(bad), "{bad}");
        }
        assert_eq!(id_of("default", "demo"), "demo");
        assert_eq!(id_of("team", "demo"), "demo.team");
        assert_eq!(parse_id("demo"), Some(("default".into(), "demo".into())));
        assert_eq!(parse_id("demo.team"), Some(("team".into(), "demo".into())));
        assert_eq!(parse_id("Demo"), None);
        assert_eq!(parse_id("a.b.c"), None);
        let k = key_of("default", "demo");
        assert!(paddock_core::model::valid_key(&k), "{k}");
        assert_ne!(k, key_of("team", "demo"));
        // No two (namespace, name) pairs share a key by concatenation.
        assert_ne!(key_of("a-b", "c"), key_of("a", "b-c"));
    }

    #[test]
    fn quantities() {
        assert_eq!(parse_quantity_mib("512Mi"), Ok(512));
        assert_eq!(parse_quantity_mib("2Gi"), Ok(2048));
        assert_eq!(parse_quantity_mib("1G"), Ok(954));
        assert_eq!(parse_quantity_mib("1048576"), Ok(1));
        for bad in ["", "Mi", "1Xi", "-1Gi", "0"] {
            assert!(parse_quantity_mib(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn phases_and_modes() {
        assert_eq!(phase(State::Running), "Running");
        assert_eq!(phase(State::Stopped), "Stopped");
        assert_eq!(mode_string("file", 0o644), "-rw-r--r--");
        assert_eq!(mode_string("dir", 0o755), "drwxr-xr-x");
    }
}
