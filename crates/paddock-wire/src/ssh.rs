//! SSH keys: what opens the SSH gateway (`paddock serve --ssh-listen`).

use serde::{Deserialize, Serialize};
use utoipa::ToSchema;
use uuid::Uuid;

/// One of the caller's SSH public keys.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct SshKey {
    pub id: Uuid,
    /// Unique among the caller's keys.
    pub name: String,
    /// One authorized_keys line, as OpenSSH writes it.
    pub public_key: String,
    /// `SHA256:...`, as `ssh-keygen -l` prints it.
    pub fingerprint: String,
    /// The one sandbox it opens; absent: every sandbox of the caller.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Uuid>,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// `POST /v1/ssh-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct SshKeyCreate {
    /// Default: the key's comment, else its fingerprint. 1-64 bytes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub name: Option<String>,
    /// One OpenSSH public key line (`ssh-ed25519 AAAA... comment`, a
    /// `.pub` file's content).
    pub public_key: String,
    /// A sandbox of the caller's, the only one the key opens; absent: the
    /// key opens all of them.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sandbox: Option<Uuid>,
}

/// `GET /v1/ssh-keys`.
#[derive(Debug, Clone, Serialize, Deserialize, ToSchema)]
pub struct SshKeyList {
    pub ssh_keys: Vec<SshKey>,
}
