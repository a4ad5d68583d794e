//! What events say: each kind a variant of [`EventData`] with a typed
//! payload, written to the store and to every API as JSON in one place
//! (`kind` from [`EventData::kind`], `data` its payload's fields), and read
//! back from the store by [`EventData::decode`]. Dialects match on the
//! variants instead of looking keys up in JSON, so a renamed field is a
//! compile error, not an event a dialect silently drops.

use serde::{Deserialize, Serialize};

use crate::model::Isolation;

/// A state change: what the sandbox is now.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StateChange {
    /// `creating`, `running`, `paused`, `stopped`, `error` or `destroyed`.
    pub state: String,
    /// Booted ahead of time for a warm pool (a hand-over's `started`).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Created {
    pub state: String,
    pub isolation: Isolation,
    /// Booted ahead of time for a warm pool.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub warm: bool,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Destroyed {
    pub state: String,
    /// `deleted`, `ttl`, `idle`, `warm pool`, `cleanup`, ...
    pub reason: String,
}

/// The sandbox failed to boot (`sandbox.error`) or its processes died
/// (`sandbox.died`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Failed {
    pub state: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct TtlSet {
    pub ttl_secs: u64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecRequested {
    pub cmd: Vec<String>,
    pub shell: Option<String>,
    /// The command as one line (the shell script, or argv joined).
    pub command: String,
    pub cwd: String,
    /// A streaming command: whether it has a terminal.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ExecResponded {
    /// The per-sandbox id of its `exec.request`.
    pub request_id: Option<i64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub exit_code: Option<i32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timed_out: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub duration_ms: Option<f64>,
    /// It could not run.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FsRequested {
    /// `allowed` or `denied` (by the mount's ACL).
    pub access: String,
    /// The mount that holds the path ("" for none, "/" without mounts).
    pub mount: String,
    pub path: String,
    /// `read` or `write`.
    pub operation: String,
}

#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct FsResponded {
    pub request_id: Option<i64>,
    pub duration_ms: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// Bytes read or written.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub size: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub removed: Option<bool>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub mkdir: Option<bool>,
    /// A rename's two ends: the source's response names where it went,
    /// the target's where it came from.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_to: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub renamed_from: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ConfigApply {
    pub success: bool,
    pub changes: crate::engine::ConfigChanges,
    #[serde(default)]
    pub error: Option<String>,
}

/// Output of the sandbox's main process.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Stdio {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdout: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stderr: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Usage {
    pub cpu_percent: f64,
    pub memory_bytes: u64,
}

/// A snapshot of the sandbox's filesystem was taken (`sandbox.snapshot`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Snapshotted {
    pub snapshot_id: uuid::Uuid,
    pub digest: String,
    pub size_bytes: u64,
    /// Taken for a fork (not kept as a snapshot of its own).
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub fork: bool,
}

/// An event's kind and payload.
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(untagged)]
pub enum EventData {
    Created(Created),
    Started(StateChange),
    Stopped(StateChange),
    Paused(StateChange),
    Resumed(StateChange),
    Destroyed(Destroyed),
    Error(Failed),
    Died(Failed),
    Ttl(TtlSet),
    ExecRequest(ExecRequested),
    ExecResponse(ExecResponded),
    FsRequest(FsRequested),
    FsResponse(FsResponded),
    ConfigApply(ConfigApply),
    Stdio(Stdio),
    ResourceUsage(Usage),
    Snapshot(Snapshotted),
    /// A kind this daemon does not know (written by a newer one): kept as
    /// it was.
    Other {
        #[serde(skip)]
        kind: String,
        #[serde(flatten)]
        data: serde_json::Map<String, serde_json::Value>,
    },
}

fn state(s: &str) -> StateChange {
    StateChange {
        state: s.into(),
        warm: false,
    }
}

impl EventData {
    /// A sandbox stored, `creating` (`warm`: booted for a warm pool).
    pub fn created(isolation: Isolation, warm: bool) -> EventData {
        EventData::Created(Created {
            state: "creating".into(),
            isolation,
            warm,
        })
    }
    pub fn started() -> EventData {
        EventData::Started(state("running"))
    }
    pub fn stopped() -> EventData {
        EventData::Stopped(state("stopped"))
    }
    pub fn paused() -> EventData {
        EventData::Paused(state("paused"))
    }
    pub fn resumed() -> EventData {
        EventData::Resumed(state("running"))
    }
    pub fn destroyed(reason: &str) -> EventData {
        EventData::Destroyed(Destroyed {
            state: "destroyed".into(),
            reason: reason.into(),
        })
    }
    pub fn error(message: &str) -> EventData {
        EventData::Error(Failed {
            state: "error".into(),
            message: message.into(),
        })
    }
    pub fn died(message: &str) -> EventData {
        EventData::Died(Failed {
            state: "error".into(),
            message: message.into(),
        })
    }

    /// The kind, as stored and as every API names it.
    pub fn kind(&self) -> &str {
        match self {
            EventData::Created(_) => "sandbox.created",
            EventData::Started(_) => "sandbox.started",
            EventData::Stopped(_) => "sandbox.stopped",
            EventData::Paused(_) => "sandbox.paused",
            EventData::Resumed(_) => "sandbox.resumed",
            EventData::Destroyed(_) => "sandbox.destroyed",
            EventData::Error(_) => "sandbox.error",
            EventData::Died(_) => "sandbox.died",
            EventData::Ttl(_) => "sandbox.ttl",
            EventData::ExecRequest(_) => "exec.request",
            EventData::ExecResponse(_) => "exec.response",
            EventData::FsRequest(_) => "fs.request",
            EventData::FsResponse(_) => "fs.response",
            EventData::ConfigApply(_) => "config.apply",
            EventData::Stdio(_) => "stdio",
            EventData::ResourceUsage(_) => "resource.usage",
            EventData::Snapshot(_) => "sandbox.snapshot",
            EventData::Other { kind, .. } => kind,
        }
    }

    /// The payload as stored (a JSON object).
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or_default()
    }

    /// An event as stored: its kind and payload. A payload that does not
    /// parse as its kind's (written by another version) is kept as `Other`.
    pub fn decode(kind: &str, data: serde_json::Value) -> EventData {
        fn parse<T: serde::de::DeserializeOwned>(
            data: &serde_json::Value,
            f: impl FnOnce(T) -> EventData,
        ) -> Option<EventData> {
            serde_json::from_value(data.clone()).ok().map(f)
        }
        let typed = match kind {
            "sandbox.created" => parse(&data, EventData::Created),
            "sandbox.started" => parse(&data, EventData::Started),
            "sandbox.stopped" => parse(&data, EventData::Stopped),
            "sandbox.paused" => parse(&data, EventData::Paused),
            "sandbox.resumed" => parse(&data, EventData::Resumed),
            "sandbox.destroyed" => parse(&data, EventData::Destroyed),
            "sandbox.error" => parse(&data, EventData::Error),
            "sandbox.died" => parse(&data, EventData::Died),
            "sandbox.ttl" => parse(&data, EventData::Ttl),
            "exec.request" => parse(&data, EventData::ExecRequest),
            "exec.response" => parse(&data, EventData::ExecResponse),
            "fs.request" => parse(&data, EventData::FsRequest),
            "fs.response" => parse(&data, EventData::FsResponse),
            "config.apply" => parse(&data, EventData::ConfigApply),
            "stdio" => parse(&data, EventData::Stdio),
            "resource.usage" => parse(&data, EventData::ResourceUsage),
            "sandbox.snapshot" => parse(&data, EventData::Snapshot),
            _ => None,
        };
        typed.unwrap_or_else(|| EventData::Other {
            kind: kind.to_string(),
            data: match data {
                serde_json::Value::Object(m) => m,
                _ => Default::default(),
            },
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// Every kind goes out and comes back as itself, and its JSON is what
    /// the dialects and clients have always read.
    #[test]
    fn each_kind_round_trips_through_its_json() {
        let all = vec![
            EventData::Created(Created {
                state: "creating".into(),
                isolation: Isolation::Container,
                warm: true,
            }),
            EventData::started(),
            EventData::stopped(),
            EventData::paused(),
            EventData::resumed(),
            EventData::destroyed("ttl"),
            EventData::error("boom"),
            EventData::died("gone"),
            EventData::Ttl(TtlSet { ttl_secs: 5 }),
            EventData::Snapshot(Snapshotted {
                snapshot_id: uuid::Uuid::nil(),
                digest: "sha256:00".into(),
                size_bytes: 3,
                fork: true,
            }),
            EventData::ExecRequest(ExecRequested {
                cmd: vec![],
                shell: Some("ls".into()),
                command: "ls".into(),
                cwd: "/w".into(),
                pty: Some(true),
            }),
            EventData::ExecResponse(ExecResponded {
                request_id: Some(3),
                exit_code: Some(0),
                timed_out: Some(false),
                duration_ms: Some(1.5),
                error: None,
            }),
            EventData::FsRequest(FsRequested {
                access: "denied".into(),
                mount: "/w".into(),
                path: "/w/x".into(),
                operation: "read".into(),
            }),
            EventData::FsResponse(FsResponded {
                request_id: Some(4),
                duration_ms: 2,
                error: Some("no".into()),
                renamed_to: Some("/w/b".into()),
                ..Default::default()
            }),
            EventData::ConfigApply(ConfigApply {
                success: true,
                changes: Default::default(),
                error: None,
            }),
            EventData::Stdio(Stdio {
                stdout: Some("hi".into()),
                stderr: None,
            }),
            EventData::ResourceUsage(Usage {
                cpu_percent: 1.0,
                memory_bytes: 2,
            }),
        ];
        for ev in all {
            let back = EventData::decode(ev.kind(), ev.to_json());
            assert_eq!(back, ev, "{}", ev.kind());
        }
        assert_eq!(
            EventData::destroyed("idle").to_json(),
            json!({"state": "destroyed", "reason": "idle"})
        );
        assert_eq!(
            EventData::FsRequest(FsRequested {
                access: "allowed".into(),
                mount: "/w".into(),
                path: "/w/a".into(),
                operation: "write".into()
            })
            .to_json(),
            json!({"access": "allowed", "mount": "/w", "path": "/w/a", "operation": "write"})
        );
    }

    #[test]
    fn an_unknown_kind_or_payload_is_kept_as_it_was() {
        let ev = EventData::decode("sandbox.teleported", json!({"to": "mars"}));
        assert_eq!(ev.kind(), "sandbox.teleported");
        assert_eq!(ev.to_json(), json!({"to": "mars"}));
        // A known kind whose payload another version changed.
        let ev = EventData::decode("sandbox.ttl", json!({"ttl": "soon"}));
        assert!(matches!(ev, EventData::Other { .. }));
        assert_eq!(ev.kind(), "sandbox.ttl");
    }
}
