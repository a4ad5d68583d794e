//! How engine things read on boxd's wire: names, statuses, sizes.

use paddock_core::model::{RestartPolicy, Sandbox, SandboxSpec, State as St};
use tonic::Status;

/// What a box gets without saying (boxd's documented defaults), within the
/// operator's ceilings.
pub const DEFAULT_VCPU: f64 = 2.0;
pub const DEFAULT_MEMORY_MB: i64 = 8192;
/// What `GetConfig` calls the image a box without one gets: the host's
/// own userland (Paddock's default image).
pub const DEFAULT_IMAGE: &str = "paddock:host";
/// The largest log message sent (the seed's client takes 4 MiB).
pub const LOG_CHUNK: usize = 1 << 20;
/// The label a fork carries: its source's id.
pub const FORKED_FROM: &str = "boxd.forked_from";

/// A box's name: its key, else its id.
pub fn name_of(sb: &Sandbox) -> String {
    sb.key.clone().unwrap_or_else(|| sb.id.to_string())
}

pub fn image_of(sb: &Sandbox) -> String {
    sb.config
        .image
        .clone()
        .unwrap_or_else(|| DEFAULT_IMAGE.to_string())
}

/// The statuses the SDK reads (`running` ready; `stopped`, `failed`,
/// `destroyed` terminal; others polled).
pub fn status_of(s: St) -> &'static str {
    match s {
        St::Creating => "pending",
        St::Running => "running",
        St::Paused => "suspended",
        St::Stopped => "stopped",
        St::Error => "failed",
        St::Destroyed => "destroyed",
    }
}

pub fn restart_of(sb: &Sandbox) -> &'static str {
    match sb.config.restart {
        RestartPolicy::Always => "always",
        RestartPolicy::Never => "never",
    }
}

pub fn suspend_of(sb: &Sandbox) -> u32 {
    match sb.config.on_idle {
        paddock_core::model::IdleAction::Suspend => sb
            .config
            .idle_timeout_secs
            .unwrap_or(0)
            .min(u32::MAX as u64) as u32,
        _ => 0,
    }
}

/// The labels a user set (not the dialect's own).
pub fn user_labels(sb: &Sandbox) -> std::collections::HashMap<String, String> {
    sb.labels
        .iter()
        .filter(|(k, _)| !k.starts_with("boxd.") && !k.starts_with("paddock."))
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect()
}

/// The network a box is on (its id), if any.
pub fn network_of(sb: &Sandbox) -> Option<String> {
    sb.config.network.clone()
}

/// Puts a new box on `network` (a name or id; `default`: its owner's).
pub fn set_network(spec: &mut SandboxSpec, network: Option<String>) {
    spec.network = network;
}

/// A box's name as given, or a new one: a DNS label (it is a host name
/// under the ingress's zone), at most 63 bytes.
pub fn box_name(name: &str) -> Result<String, Status> {
    if name.is_empty() {
        let id = uuid::Uuid::new_v4().simple().to_string();
        return Ok(format!("box-{}", &id[..10]));
    }
    let ok = name.len() <= 63
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && !name.starts_with('-')
        && !name.ends_with('-');
    if !ok {
        return Err(Status::invalid_argument(format!(
            "name: {name:?} is not a box name (1-63 of a-z, 0-9 and '-', not starting or ending with '-': it is a host name)"
        )));
    }
    Ok(name.to_string())
}

/// Bytes as whole MiB (rounded up), for a field of a config.
pub fn mib(field: &str, bytes: u64) -> Result<i64, Status> {
    let mb = bytes.div_ceil(1 << 20);
    i64::try_from(mb)
        .map_err(|_| Status::invalid_argument(format!("{field}: {bytes} bytes is too large")))
}
