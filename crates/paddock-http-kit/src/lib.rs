//! What Paddock's HTTP dialects share, so that none copies another's glue
//! and none depends on another API crate: the native API, hiver, flash and
//! the dialects to come use
//!
//! - [`Guard`] (`guard.rs`): the check against DNS rebinding and cross-site
//!   requests for listeners that serve without a key;
//! - [`status_of`] (`status.rs`): the HTTP status each engine error means,
//!   which each dialect wraps in its own error body;
//! - [`proxy`]: forwarding a request (WebSocket upgrades too) to a port
//!   inside a sandbox;
//! - [`upload`]: a request body as the engine's byte stream, and the drain
//!   of what a client still sends of an upload that was refused midway;
//! - [`sse`]: server-sent event responses with keep-alives.

mod guard;
pub mod proxy;
pub mod sse;
mod status;
pub mod upload;

pub use guard::*;
pub use status::status_of;
