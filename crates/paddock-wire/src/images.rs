//! Images in the daemon's cache.

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct ImageInfo {
    /// As the caller named it.
    pub reference: String,
    /// What was pulled (after aliases).
    pub resolved: String,
    pub digest: String,
    pub layers: usize,
    pub size: u64,
    pub exposed_ports: Vec<u16>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct ImageList {
    pub images: Vec<ImageInfo>,
}

#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PullBody {
    /// Such as `alpine:latest` or `127.0.0.1:5000/team/img@sha256:...`.
    pub reference: String,
}

/// How far a pull has come (a streamed pull's `progress` events).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PullProgress {
    pub reference: String,
    /// `resolving`, `downloading`, `extracting`, `cached` (a layer already
    /// in the cache), `extracted` or `done`.
    pub status: String,
    /// The layer (`sha256:...`) the status is about.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub layer: Option<String>,
    /// Bytes of layers downloaded or found cached so far, of `total`.
    pub current: u64,
    pub total: u64,
}
