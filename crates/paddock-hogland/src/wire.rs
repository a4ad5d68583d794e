//! hogland's wire types and its validation rules, pure (no engine, no
//! HTTP): the request bodies as the SDK sends them, the response models as
//! it validates them (`extra="ignore"`, required fields always present),
//! and each range of the spec as a check that names the field the way
//! Huma's `errors[].location` does (`body.cpus`, `query.path`).

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

// ---- ranges (protocol spec §5) ----------------------------------------------

pub const CPUS: (f64, f64) = (0.25, 180.0);
pub const MEMORY_MIB: (i64, i64) = (256, 368_640);
pub const DISK_GIB: (i64, i64) = (5, 100);
pub const DISK_IOPS: (i64, i64) = (0, 10_000);
pub const DISK_MBPS: (i64, i64) = (0, 1_000);
pub const NET_MBPS: (f64, f64) = (0.0, 40_000.0);
pub const MAX_BOOTSTRAP: usize = 262_144;
/// 0.1.0's model takes a bootstrap of at most this many characters.
pub const MAX_BOOTSTRAP_V01: usize = 32_768;
pub const MAX_TTL: i64 = 604_800;
pub const MIN_TTL: i64 = 60;
/// A box's TTL when the create gives none (or 0): 24 h.
pub const DEFAULT_TTL: u64 = 86_400;
pub const MAX_ENV: usize = 50;
pub const MAX_ENV_VALUE: usize = 4096;
pub const MAX_ENV_RENDERED: usize = 16 << 10;
/// What hogland passes through its metadata service: bootstrap and env.
pub const MAX_BOOT_DATA: usize = 51_200;
pub const MAX_ARGV: usize = 64 << 10;
pub const MAX_EXEC_TIMEOUT: i64 = 21_600;
/// Batch exec's stdout and stderr, each.
pub const MAX_OUTPUT: u64 = 1 << 20;
/// Files read or written whole.
pub const MAX_FILE: u64 = 64 << 20;
pub const DEFAULT_CPUS: f64 = 1.0;
pub const DEFAULT_MEMORY_MIB: i64 = 1024;
pub const DEFAULT_DISK_GIB: i64 = 10;
pub const MAX_PEN_NAME: usize = 32;

// ---- errors ----------------------------------------------------------------

/// One entry of a problem's `errors[]`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct ErrorDetail {
    pub location: String,
    pub message: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub value: Option<serde_json::Value>,
}

impl ErrorDetail {
    pub fn new(location: impl Into<String>, message: impl Into<String>) -> ErrorDetail {
        ErrorDetail {
            location: location.into(),
            message: message.into(),
            value: None,
        }
    }

    pub fn with(mut self, v: impl Serialize) -> ErrorDetail {
        self.value = serde_json::to_value(v).ok();
        self
    }
}

// ---- requests --------------------------------------------------------------

/// `POST /v1/hogboxes` (§3.2), and a pen's `spec` (0.5.0's `BoxSpec`).
#[derive(Debug, Clone, Default, PartialEq, Deserialize, Serialize)]
pub struct CreateBox {
    #[serde(default)]
    pub cpus: Option<f64>,
    #[serde(default)]
    pub memory_mib: Option<i64>,
    #[serde(default)]
    pub disk_gib: Option<i64>,
    #[serde(default)]
    pub disk_class: Option<String>,
    #[serde(default)]
    pub disk_iops: Option<i64>,
    #[serde(default)]
    pub disk_mbps: Option<i64>,
    #[serde(default)]
    pub net_mbps: Option<f64>,
    #[serde(default)]
    pub access_type: Option<String>,
    #[serde(default)]
    pub snapshot_id: Option<String>,
    #[serde(default)]
    pub ssh_public_key: Option<String>,
    #[serde(default)]
    pub bootstrap: Option<String>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub ttl_seconds: Option<i64>,
    #[serde(default)]
    pub name: Option<String>,
    #[serde(default)]
    pub kind: Option<String>,
    #[serde(default)]
    pub tags: Option<Vec<String>>,
    #[serde(default)]
    pub cpu_request: Option<f64>,
    #[serde(default)]
    pub memory_request_mib: Option<i64>,
    #[serde(default)]
    pub web_port: Option<i64>,
    #[serde(default)]
    pub boot_args: Option<Vec<String>>,
}

/// The access a box gives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Access {
    SshPublic,
    SshPrivate,
    None,
}

impl Access {
    pub fn parse(s: &str) -> Option<Access> {
        match s {
            "ssh-public" => Some(Access::SshPublic),
            "ssh-private" => Some(Access::SshPrivate),
            "none" => Some(Access::None),
            _ => None,
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Access::SshPublic => "ssh-public",
            Access::SshPrivate => "ssh-private",
            Access::None => "none",
        }
    }
}

fn in_range_f(errs: &mut Vec<ErrorDetail>, loc: &str, v: Option<f64>, (lo, hi): (f64, f64)) {
    if let Some(v) = v {
        if !(v.is_finite() && v >= lo && v <= hi) {
            errs.push(ErrorDetail::new(loc, format!("expected number from {lo} to {hi}")).with(v));
        }
    }
}

fn in_range_i(errs: &mut Vec<ErrorDetail>, loc: &str, v: Option<i64>, (lo, hi): (i64, i64)) {
    if let Some(v) = v {
        if !(lo..=hi).contains(&v) {
            errs.push(ErrorDetail::new(loc, format!("expected integer from {lo} to {hi}")).with(v));
        }
    }
}

/// `[A-Za-z_][A-Za-z0-9_]*`.
pub fn valid_env_name(k: &str) -> bool {
    let mut b = k.bytes();
    b.next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == b'_')
        && b.all(|c| c.is_ascii_alphanumeric() || c == b'_')
}

impl CreateBox {
    /// Every range the spec sets (`prefix` is `body` for a create and
    /// `body.spec` for a pen's), each failure one entry.
    pub fn check(&self, prefix: &str) -> Vec<ErrorDetail> {
        let mut e = Vec::new();
        let loc = |f: &str| format!("{prefix}.{f}");
        in_range_f(&mut e, &loc("cpus"), self.cpus, CPUS);
        in_range_i(&mut e, &loc("memory_mib"), self.memory_mib, MEMORY_MIB);
        in_range_i(&mut e, &loc("disk_gib"), self.disk_gib, DISK_GIB);
        in_range_i(&mut e, &loc("disk_iops"), self.disk_iops, DISK_IOPS);
        in_range_i(&mut e, &loc("disk_mbps"), self.disk_mbps, DISK_MBPS);
        in_range_f(&mut e, &loc("net_mbps"), self.net_mbps, NET_MBPS);
        in_range_f(&mut e, &loc("cpu_request"), self.cpu_request, CPUS);
        in_range_i(
            &mut e,
            &loc("memory_request_mib"),
            self.memory_request_mib,
            MEMORY_MIB,
        );
        if let (Some(r), Some(c)) = (self.cpu_request, self.cpus) {
            if r > c {
                e.push(ErrorDetail::new(loc("cpu_request"), "must be at most cpus").with(r));
            }
        }
        if let (Some(r), Some(m)) = (self.memory_request_mib, self.memory_mib) {
            if r > m {
                e.push(
                    ErrorDetail::new(loc("memory_request_mib"), "must be at most memory_mib")
                        .with(r),
                );
            }
        }
        if let Some(p) = self.web_port {
            if !(1..=65535).contains(&p) {
                e.push(
                    ErrorDetail::new(loc("web_port"), "expected a port from 1 to 65535").with(p),
                );
            }
        }
        if let Some(c) = &self.disk_class {
            if c != "mirrored" {
                e.push(ErrorDetail::new(loc("disk_class"), "expected \"mirrored\"").with(c));
            }
        }
        if let Some(a) = &self.access_type {
            if Access::parse(a).is_none() {
                e.push(
                    ErrorDetail::new(
                        loc("access_type"),
                        "expected \"ssh-public\", \"ssh-private\" or \"none\"",
                    )
                    .with(a),
                );
            }
        }
        if let Some(b) = &self.bootstrap {
            if b.len() > MAX_BOOTSTRAP {
                e.push(ErrorDetail::new(
                    loc("bootstrap"),
                    format!("expected at most {MAX_BOOTSTRAP} bytes"),
                ));
            } else if b.contains('\0') {
                e.push(ErrorDetail::new(loc("bootstrap"), "must not contain NUL"));
            }
        }
        if let Some(t) = self.ttl_seconds {
            if t != 0 && !(MIN_TTL..=MAX_TTL).contains(&t) {
                e.push(
                    ErrorDetail::new(
                        loc("ttl_seconds"),
                        format!("expected 0 or from {MIN_TTL} to {MAX_TTL}"),
                    )
                    .with(t),
                );
            }
        }
        let mut rendered = 0;
        if let Some(env) = &self.env {
            if env.len() > MAX_ENV {
                e.push(ErrorDetail::new(
                    loc("env"),
                    format!("expected at most {MAX_ENV} entries"),
                ));
            }
            for (k, v) in env {
                if !valid_env_name(k) {
                    e.push(
                        ErrorDetail::new(
                            format!("{}.{k}", loc("env")),
                            "a name is [A-Za-z_][A-Za-z0-9_]*",
                        )
                        .with(k),
                    );
                }
                if v.len() > MAX_ENV_VALUE || v.contains(['\0', '\r']) {
                    e.push(ErrorDetail::new(
                        format!("{}.{k}", loc("env")),
                        format!("a value is at most {MAX_ENV_VALUE} bytes, without NUL or CR"),
                    ));
                }
                rendered += k.len() + v.len() + 2;
            }
            if rendered > MAX_ENV_RENDERED {
                e.push(ErrorDetail::new(
                    loc("env"),
                    format!("expected at most {MAX_ENV_RENDERED} bytes in all"),
                ));
            }
        }
        if rendered + self.bootstrap.as_ref().map_or(0, String::len) > MAX_BOOT_DATA {
            e.push(ErrorDetail::new(
                loc("bootstrap"),
                format!("bootstrap and env together must be at most {MAX_BOOT_DATA} bytes"),
            ));
        }
        if let Some(n) = &self.name {
            if n.len() > 253 || n.contains(char::is_control) {
                e.push(ErrorDetail::new(
                    loc("name"),
                    "expected at most 253 characters, no control characters",
                ));
            }
        }
        if let Some(k) = &self.kind {
            if k.len() > 63 || k.contains(char::is_control) {
                e.push(ErrorDetail::new(
                    loc("kind"),
                    "expected at most 63 characters, no control characters",
                ));
            }
        }
        if let Some(tags) = &self.tags {
            if tags.len() > 32
                || tags
                    .iter()
                    .any(|t| t.len() > 63 || t.contains(char::is_control))
            {
                e.push(ErrorDetail::new(
                    loc("tags"),
                    "expected at most 32 tags of at most 63 characters",
                ));
            }
        }
        e
    }

    /// The access asked for: an explicit type, else `ssh-public` when a
    /// key is given, else none (the README's bare create works).
    pub fn access(&self) -> Access {
        match self.access_type.as_deref().and_then(Access::parse) {
            Some(a) => a,
            None if self.ssh_public_key.is_some() => Access::SshPublic,
            None => Access::None,
        }
    }
}

/// `POST .../exec` and `.../exec/stream` (§3.3).
#[derive(Debug, Clone, Default, Deserialize)]
pub struct ExecBody {
    pub argv: Vec<String>,
    #[serde(default)]
    pub timeout_seconds: Option<i64>,
    #[serde(default)]
    pub env: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub workdir: Option<String>,
}

impl ExecBody {
    pub fn check(&self) -> Vec<ErrorDetail> {
        let mut e = Vec::new();
        if self.argv.is_empty() {
            e.push(ErrorDetail::new("body.argv", "expected at least 1 item"));
        }
        let total: usize = self.argv.iter().map(|a| a.len() + 1).sum();
        if total > MAX_ARGV {
            e.push(ErrorDetail::new(
                "body.argv",
                format!("expected at most {MAX_ARGV} bytes in all"),
            ));
        }
        if self.argv.iter().any(|a| a.contains('\0')) {
            e.push(ErrorDetail::new("body.argv", "must not contain NUL"));
        }
        in_range_i(
            &mut e,
            "body.timeout_seconds",
            self.timeout_seconds,
            (0, MAX_EXEC_TIMEOUT),
        );
        if let Some(env) = &self.env {
            for (k, v) in env {
                if !valid_env_name(k) || v.contains('\0') {
                    e.push(ErrorDetail::new(
                        format!("body.env.{k}"),
                        "a name is [A-Za-z_][A-Za-z0-9_]*, a value has no NUL",
                    ));
                }
            }
        }
        if let Some(w) = &self.workdir {
            if !w.starts_with('/') || w.contains('\0') {
                e.push(ErrorDetail::new(
                    "body.workdir",
                    "expected an absolute path",
                ));
            }
        }
        e
    }
}

/// `POST /v1/pens`.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct CreatePen {
    pub name: String,
    #[serde(default)]
    pub source_alias: Option<String>,
    #[serde(default)]
    pub spec: Option<CreateBox>,
    #[serde(default)]
    pub on_idle: Option<String>,
    #[serde(default)]
    pub wake: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
}

/// `PATCH /v1/pens/{name}`: each key given replaces; `""`/`{}` clear.
#[derive(Debug, Clone, Default, Deserialize)]
pub struct UpdatePen {
    #[serde(default)]
    pub current_box_id: Option<String>,
    #[serde(default)]
    pub latest_snapshot_id: Option<String>,
    #[serde(default)]
    pub source_alias: Option<String>,
    #[serde(default)]
    pub spec: Option<CreateBox>,
    #[serde(default)]
    pub on_idle: Option<String>,
    #[serde(default)]
    pub wake: Option<String>,
    #[serde(default)]
    pub metadata: Option<BTreeMap<String, String>>,
    #[serde(default)]
    pub expected_current_box_id: Option<String>,
}

/// Pen names: lower-case letters, digits and `-`, at most 32.
pub fn valid_pen_name(n: &str) -> bool {
    !n.is_empty()
        && n.len() <= MAX_PEN_NAME
        && n.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !n.starts_with('-')
        && !n.ends_with('-')
}

// ---- responses -------------------------------------------------------------

/// `BoxSpec`, as both versions validate it.
#[derive(Debug, Clone, Default, PartialEq, Serialize)]
pub struct BoxSpec {
    pub cpus: f64,
    pub memory_mib: i64,
    pub disk_gib: i64,
    pub disk_class: &'static str,
    pub disk_iops: i64,
    pub disk_mbps: i64,
    pub net_mbps: f64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub access_type: Option<&'static str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub bootstrap: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ttl_seconds: Option<i64>,
    pub env: BTreeMap<String, String>,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub snapshot_id: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_public_key: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cpu_request: Option<f64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub memory_request_mib: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_port: Option<i64>,
}

impl BoxSpec {
    /// As a client of `version` can parse it: 0.1.0 knows no access
    /// `none` and no bootstrap past 32768 characters.
    pub fn for_client(mut self, v: ClientVersion) -> BoxSpec {
        if v == ClientVersion::V01 {
            if self.access_type == Some("none") {
                self.access_type = None;
            }
            if self
                .bootstrap
                .as_ref()
                .is_some_and(|b| b.chars().count() > MAX_BOOTSTRAP_V01)
            {
                self.bootstrap = None;
            }
        }
        self
    }
}

/// Which SDK asks, from its `User-Agent` (`hogland-python/0.1.0`): what
/// its models can parse.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ClientVersion {
    /// Before 0.5.0.
    V01,
    /// 0.5.0 and later, and clients that are not the SDK.
    Current,
}

impl ClientVersion {
    pub fn of(user_agent: Option<&str>) -> ClientVersion {
        let v = user_agent
            .and_then(|ua| ua.strip_prefix("hogland-python/"))
            .map(|v| {
                v.split(|c: char| !c.is_ascii_digit())
                    .take(2)
                    .map(|n| n.parse::<u32>().unwrap_or(0))
                    .collect::<Vec<_>>()
            });
        match v.as_deref() {
            Some([0, minor]) if *minor < 5 => ClientVersion::V01,
            _ => ClientVersion::Current,
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct BoxView {
    pub id: String,
    pub status: &'static str,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub spec: BoxSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub expires_at: Option<DateTime<Utc>>,
    pub last_used_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub fail_reason: Option<String>,
    pub node: String,
    pub owner_id: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub public_ip: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ssh_command: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct BoxList {
    pub items: Vec<BoxView>,
    pub next_cursor: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ExecResponse {
    pub exit_code: i64,
    pub stdout: String,
    pub stderr: String,
    pub duration_ms: u64,
    pub timed_out: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct FileWritten {
    pub bytes_written: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Usage {
    pub billed_cpu_usec: u64,
    pub billed_memory_mib_seconds: u64,
    pub cpu_coverage_seconds: f64,
    pub cpu_usage_usec: u64,
    pub memory_coverage_seconds: f64,
    pub rss_mib_seconds: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct SnapshotRecord {
    pub id: String,
    pub box_id: String,
    pub created_at: DateTime<Utc>,
    pub s3_bucket: String,
    pub s3_prefix: String,
    pub size_bytes: u64,
    pub spec: BoxSpec,
    pub owner_id: String,
    pub restore_count: u64,
    pub total_ms: u64,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub usage: Option<Usage>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Me {
    pub id: String,
    pub email: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    pub is_admin: bool,
    pub box_count: u64,
    pub snapshot_count: u64,
    pub created_at: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize)]
pub struct NumericLimit {
    pub min: f64,
    pub max: f64,
}

impl NumericLimit {
    pub fn new(min: impl Into<f64>, max: impl Into<f64>) -> NumericLimit {
        NumericLimit {
            min: min.into(),
            max: max.into(),
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Limits {
    pub access_type: Vec<&'static str>,
    pub disk_class: Vec<&'static str>,
    pub cpus: NumericLimit,
    pub memory_mib: NumericLimit,
    pub disk_gib: NumericLimit,
    pub disk_iops: NumericLimit,
    pub disk_mbps: NumericLimit,
    pub net_mbps: NumericLimit,
    pub cpu_request: NumericLimit,
    pub memory_request_mib: NumericLimit,
}

#[derive(Debug, Clone, Serialize)]
pub struct Pen {
    pub id: String,
    pub name: String,
    pub owner_id: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub current_box_id: Option<String>,
    pub latest_snapshot_id: Option<String>,
    pub metadata: BTreeMap<String, String>,
    pub on_idle: &'static str,
    pub wake: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub source_alias: Option<String>,
    pub spec: BoxSpec,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub web_url: Option<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PenList {
    pub items: Vec<Pen>,
    pub next_cursor: Option<String>,
}

// ---- ids -------------------------------------------------------------------

/// A snapshot's id on the wire: `sn-` and the engine's.
pub fn snapshot_id(id: uuid::Uuid) -> String {
    format!("sn-{id}")
}

/// What a create's `snapshot_id` names, for the engine: an id (`sn-...`)
/// or `alias:<name>`.
pub fn snapshot_ref(s: &str) -> Option<String> {
    if let Some(name) = s.strip_prefix("alias:") {
        return (!name.is_empty()).then(|| name.to_string());
    }
    let id = s.strip_prefix("sn-").unwrap_or(s);
    id.parse::<uuid::Uuid>().ok().map(|u| u.to_string())
}

/// Splits a chunk of output into the `data:` lines of one SSE event,
/// exactly: `"a\n"` is `data: a` and `data: ` (the parser joins them with
/// `\n`). CR cannot be carried (the parser breaks lines at it): `\r\n` is
/// a line break, a lone `\r` one too.
pub fn sse_event(kind: &str, chunk: &str) -> String {
    let text = chunk.replace("\r\n", "\n").replace('\r', "\n");
    let mut out = String::with_capacity(text.len() + 16);
    out.push_str("event: ");
    out.push_str(kind);
    out.push('\n');
    for piece in text.split('\n') {
        out.push_str("data: ");
        out.push_str(piece);
        out.push('\n');
    }
    out.push('\n');
    out
}

/// Output bytes as text for an event: the longest valid UTF-8 prefix of
/// `carry` + `bytes`; an incomplete sequence at the end is kept for the
/// next chunk (never split across two events), invalid bytes are U+FFFD.
pub fn take_utf8(carry: &mut Vec<u8>, bytes: &[u8]) -> String {
    carry.extend_from_slice(bytes);
    let mut out = String::new();
    let mut rest: &[u8] = carry;
    loop {
        match std::str::from_utf8(rest) {
            Ok(s) => {
                out.push_str(s);
                rest = &[];
                break;
            }
            Err(e) => {
                let (ok, bad) = rest.split_at(e.valid_up_to());
                // `ok` is valid UTF-8 by `valid_up_to`.
                out.push_str(std::str::from_utf8(ok).unwrap_or_default());
                match e.error_len() {
                    Some(n) => {
                        out.push('\u{FFFD}');
                        rest = &bad[n..];
                    }
                    None => {
                        rest = bad;
                        break;
                    }
                }
            }
        }
    }
    let keep = rest.to_vec();
    *carry = keep;
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sse_chunks_are_exact() {
        assert_eq!(
            sse_event("stdout", "hello\n"),
            "event: stdout\ndata: hello\ndata: \n\n"
        );
        assert_eq!(
            sse_event("stdout", "  lead\n\nx"),
            "event: stdout\ndata:   lead\ndata: \ndata: x\n\n"
        );
        assert_eq!(
            sse_event("stderr", "a\r\nb\rc"),
            "event: stderr\ndata: a\ndata: b\ndata: c\n\n"
        );
    }

    #[test]
    fn utf8_is_never_split() {
        let mut carry = Vec::new();
        let e = "é".as_bytes();
        assert_eq!(take_utf8(&mut carry, &[b'a', e[0]]), "a");
        assert_eq!(take_utf8(&mut carry, &[e[1], b'b']), "éb");
        assert_eq!(take_utf8(&mut carry, &[0xff, b'c']), "\u{FFFD}c");
        assert!(carry.is_empty());
    }

    #[test]
    fn ranges_name_their_field() {
        let b = CreateBox {
            cpus: Some(0.1),
            memory_mib: Some(100),
            disk_gib: Some(1),
            ttl_seconds: Some(30),
            env: Some(BTreeMap::from([("1BAD".into(), "x".into())])),
            ..Default::default()
        };
        let locs: Vec<String> = b.check("body").into_iter().map(|e| e.location).collect();
        assert_eq!(
            locs,
            [
                "body.cpus",
                "body.memory_mib",
                "body.disk_gib",
                "body.ttl_seconds",
                "body.env.1BAD"
            ]
        );
        assert!(CreateBox {
            cpus: Some(180.0),
            ttl_seconds: Some(0),
            ..Default::default()
        }
        .check("body")
        .is_empty());
        let e = ExecBody::default().check();
        assert_eq!(e[0].location, "body.argv");
    }

    #[test]
    fn the_client_version_decides_what_it_is_sent() {
        assert_eq!(
            ClientVersion::of(Some("hogland-python/0.1.0")),
            ClientVersion::V01
        );
        assert_eq!(
            ClientVersion::of(Some("hogland-python/0.5.0")),
            ClientVersion::Current
        );
        assert_eq!(ClientVersion::of(Some("curl/8")), ClientVersion::Current);
        let s = BoxSpec {
            access_type: Some("none"),
            ..Default::default()
        };
        assert_eq!(s.clone().for_client(ClientVersion::V01).access_type, None);
        assert_eq!(
            s.for_client(ClientVersion::Current).access_type,
            Some("none")
        );
    }

    #[test]
    fn snapshot_refs() {
        let u = uuid::Uuid::new_v4();
        assert_eq!(snapshot_ref(&snapshot_id(u)), Some(u.to_string()));
        assert_eq!(snapshot_ref("alias:base"), Some("base".into()));
        assert_eq!(snapshot_ref("alias:"), None);
        assert_eq!(snapshot_ref("sn-nope"), None);
    }
}
