//! Commands: buffered, streamed (SSE) and interactive (WebSocket).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, ToSchema)]
pub struct PtySize {
    pub rows: u16,
    pub cols: u16,
}

/// A command to run in a sandbox.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecRequest {
    /// argv; give this or `shell`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub cmd: Vec<String>,
    /// A shell string, run through `/bin/sh -c`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub shell: Option<String>,
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub env: BTreeMap<String, String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cwd: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub user: Option<String>,
    /// Written to the command's stdin, which is then closed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub stdin: Option<String>,
    /// Seconds; the command is killed when it runs longer.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout: Option<f64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pty: Option<PtySize>,
    /// Per stream, buffered mode; default 1 MiB.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
}

impl ExecRequest {
    /// `sh -c script`.
    pub fn shell(script: impl Into<String>) -> ExecRequest {
        ExecRequest {
            shell: Some(script.into()),
            ..Default::default()
        }
    }
    /// An argv.
    pub fn cmd<S: Into<String>>(argv: impl IntoIterator<Item = S>) -> ExecRequest {
        ExecRequest {
            cmd: argv.into_iter().map(Into::into).collect(),
            ..Default::default()
        }
    }
}

/// The outcome of a finished command.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ExecResult {
    pub exit_code: i32,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub signal: Option<i32>,
    pub timed_out: bool,
    pub stdout: String,
    pub stderr: String,
    pub stdout_truncated: bool,
    pub stderr_truncated: bool,
    pub duration_ms: f64,
}

/// Output of a streamed command (`stdout` and `stderr` events' data).
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct OutputChunk {
    pub data: String,
}

/// A streamed command's `started` event, and the WebSocket's
/// `{"type":"started"}` frame.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Started {
    pub pid: u32,
}

/// What an interactive (WebSocket) exec's client sends as text frames
/// (binary frames are stdin).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum WsControl {
    Resize { rows: u16, cols: u16 },
    Signal { signal: i32 },
    Eof,
    Stdin { data: String },
}

/// WebSocket binary frames from the server start with one of these.
pub const WS_STDOUT: u8 = 1;
pub const WS_STDERR: u8 = 2;
