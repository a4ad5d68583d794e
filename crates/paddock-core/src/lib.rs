//! The Paddock engine.
//!
//! It owns sandboxes, their lifecycle and their state, and speaks only
//! domain types ([`model`]) and one error enum ([`Error`]). API dialects call
//! it; isolation backends implement its [`Runtime`] port.

pub mod agent;
pub mod audit;
pub mod auth;
pub mod engine;
pub mod error;
pub mod event;
pub mod events;
pub use paddock_acl::glob;
pub mod host;
pub mod hostmount;
pub mod layers;
pub mod logs;
pub mod model;
pub mod policy;
pub mod runtime;
pub mod state;
pub mod store;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod text;
pub mod tokens;
pub mod volumes;

pub use agent::{Agent, AgentConnector, Opened};
pub use engine::{Engine, EngineConfig};
pub use error::{Error, Result};
pub use layers::{Layers, StoredLayer};
pub use runtime::{
    AgentEndpoint, AgentIdentity, BackendInfo, Capabilities, Instance, Liveness, Peer, Runtime,
};
pub use volumes::VolumeStore;
