//! The daemon's client of the agent protocol and its transports, outside
//! the engine (which sees only the `paddock_core::Agent` port):
//!
//! - [`channel`]: the gRPC transport, an HTTP/2 connection over a unix
//!   socket, Firecracker's hybrid vsock (`CONNECT <port>`), vsock or TCP,
//!   each connection checked by the agent's identity greeting;
//! - [`AgentClient`] (`client.rs`): the calls, and descriptor hand-over
//!   for bulk data where the backend allows it;
//! - [`Connector`]: the engine's `AgentConnector`.

pub mod channel;
mod client;

use std::sync::Arc;
use std::time::Duration;

pub use client::{file_info, AgentClient};
use paddock_core::error::{Error, Result};
use paddock_core::{Agent, AgentConnector, AgentEndpoint};

/// Connects the engine to agents with [`AgentClient`].
#[derive(Default)]
pub struct Connector;

#[async_trait::async_trait]
impl AgentConnector for Connector {
    async fn connect(
        &self,
        endpoint: &AgentEndpoint,
        handover: bool,
        timeout: Duration,
    ) -> Result<Arc<dyn Agent>> {
        Ok(Arc::new(
            AgentClient::connect(endpoint, handover, timeout).await?,
        ))
    }

    fn lazy(&self, endpoint: &AgentEndpoint, handover: bool) -> Result<Arc<dyn Agent>> {
        Ok(Arc::new(AgentClient::lazy(endpoint, handover)))
    }
}

/// Maps an agent's gRPC status onto an engine error. `field` names the
/// request field an invalid-argument status most likely refers to.
pub fn from_agent(st: tonic::Status, field: &str) -> Error {
    use tonic::Code;
    let msg = st.message().to_string();
    match st.code() {
        Code::NotFound => Error::NotFound { what: msg },
        Code::InvalidArgument => {
            // The agent prefixes its messages with the field when it knows it.
            match msg.split_once(": ") {
                Some((f, r)) if !f.contains(' ') && !f.contains('/') => Error::invalid(f, r),
                _ => Error::invalid(field, msg),
            }
        }
        Code::AlreadyExists | Code::FailedPrecondition => Error::Conflict(msg),
        Code::PermissionDenied => Error::Forbidden(msg),
        Code::ResourceExhausted => Error::Quota(msg),
        Code::Unavailable | Code::Cancelled | Code::Unknown => Error::Unavailable {
            what: "sandbox agent".into(),
            reason: msg,
        },
        Code::DeadlineExceeded => Error::Timeout(msg),
        _ => Error::Internal(format!("agent: {msg}")),
    }
}
