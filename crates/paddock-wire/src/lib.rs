//! The native API's wire types: the JSON of every `/v1` body, and the
//! OpenAPI schemas `/openapi.json` is made of.
//!
//! They are the API's contract, kept apart from the engine's domain types
//! (which the store also keeps): the server (`paddock-api`) converts
//! between the two, the client (`paddock-client`) speaks these. A field
//! added here is a change of the API; a field added to the engine is not,
//! until it is mapped here. Requests refuse unknown fields (the native API
//! names the field it does not know); responses are read leniently, so an
//! older client can talk to a newer daemon.

mod exec;
mod files;
mod governance;
mod images;
mod ingress;
mod problem;
mod sandbox;
mod ssh;
mod tokens;

pub use exec::*;
pub use files::*;
pub use governance::*;
pub use images::*;
pub use ingress::*;
pub use problem::*;
pub use sandbox::*;
pub use ssh::*;
pub use tokens::*;

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

/// `GET /v1/version`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Version {
    pub version: String,
    /// `v1`.
    pub api: String,
}

/// `POST /v1/images/prune`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct Pruned {
    pub removed_layers: u64,
}
