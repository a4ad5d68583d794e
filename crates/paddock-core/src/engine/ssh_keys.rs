//! SSH keys of a principal: what opens the SSH gateway (`paddock-ssh`)
//! to its sandboxes. A key is account-wide (every sandbox of its owner) or
//! registered for one sandbox; a login names the sandbox (its id, or its
//! key when that is unambiguous) as the SSH user.

use super::*;
use crate::model::SshKey;

/// The longest public key line taken (an RSA key of 16384 bits is under
/// 3 KiB in base64).
const MAX_KEY_LINE: usize = 16 << 10;
/// The longest key name.
const MAX_NAME: usize = 64;

/// A public key line parsed: (the line as OpenSSH writes it, its
/// `SHA256:` fingerprint, its comment).
fn parse_public_key(line: &str) -> Result<(String, String, String)> {
    let bad = |why: &str| Error::invalid("public_key", why.to_string());
    let line = line.trim();
    if line.is_empty() {
        return Err(bad("must not be empty"));
    }
    if line.len() > MAX_KEY_LINE {
        return Err(bad(&format!("must be at most {MAX_KEY_LINE} bytes")));
    }
    if line.contains(['\n', '\r', '\0']) {
        return Err(bad("must be one line (one key)"));
    }
    if line.starts_with("-----BEGIN") {
        return Err(bad(
            "is a private key: give the public key (the .pub file, `ssh-keygen -y -f KEY`)",
        ));
    }
    let key = ssh_key::PublicKey::from_openssh(line).map_err(|e| {
        bad(&format!(
            "is not an OpenSSH public key line (`ssh-ed25519 AAAA... comment`): {e}"
        ))
    })?;
    if matches!(key.algorithm(), ssh_key::Algorithm::Dsa) {
        return Err(bad("DSA keys are not accepted (OpenSSH dropped them)"));
    }
    let fingerprint = key.fingerprint(ssh_key::HashAlg::Sha256).to_string();
    let comment = key.comment().to_string();
    let text = key
        .to_openssh()
        .map_err(|e| bad(&format!("cannot be encoded: {e}")))?;
    Ok((text, fingerprint, comment))
}

/// Checks one OpenSSH public key line (`ssh-ed25519 AAAA... comment`) and
/// answers its `SHA256:` fingerprint; a malformed one is
/// `Error::Invalid { field: "public_key" }`. For dialects that take a key
/// before they create anything.
pub fn check_ssh_public_key(line: &str) -> Result<String> {
    parse_public_key(line).map(|(_, fp, _)| fp)
}

fn check_key_name(name: &str) -> Result<()> {
    if name.is_empty() || name.len() > MAX_NAME {
        return Err(Error::invalid(
            "name",
            format!("must be 1 to {MAX_NAME} bytes"),
        ));
    }
    if name.chars().any(|c| c.is_control() || c == '/') {
        return Err(Error::invalid(
            "name",
            "must not contain '/' or control characters",
        ));
    }
    Ok(())
}

impl Engine {
    /// Registers `public_key` for `p`: account-wide, or for `sandbox`
    /// alone (one of `p`'s). The name defaults to the key's comment, else
    /// its fingerprint.
    pub fn add_ssh_key(
        &self,
        p: &Principal,
        name: Option<String>,
        public_key: &str,
        sandbox: Option<Uuid>,
    ) -> Result<SshKey> {
        let detail = serde_json::json!({ "name": name });
        self.audited_sync(p, "ssh_key.add", sandbox, detail, || {
            let (text, fingerprint, comment) = parse_public_key(public_key)?;
            if let Some(n) = &name {
                check_key_name(n)?;
            }
            if let Some(id) = sandbox {
                match self.store.get_sandbox(id)? {
                    Some(sb) if sb.owner == p.id && sb.state != State::Destroyed => {}
                    _ => {
                        return Err(Error::invalid(
                            "sandbox",
                            format!("no sandbox {id} of yours"),
                        ))
                    }
                }
            }
            let held = self.store.list_ssh_keys(&p.id)?;
            if held
                .iter()
                .any(|k| k.fingerprint == fingerprint && k.sandbox == sandbox)
            {
                return Err(Error::Exists(format!(
                    "the key {fingerprint} is already registered{}",
                    match sandbox {
                        Some(id) => format!(" for sandbox {id}"),
                        None => String::new(),
                    }
                )));
            }
            let name = match name {
                Some(n) => n,
                None => {
                    // The fingerprint as a name fit for a URL path.
                    let fp_name: String = fingerprint
                        .chars()
                        .map(|c| match c {
                            '/' => '_',
                            '+' => '-',
                            c => c,
                        })
                        .collect();
                    let base = if comment.is_empty() || check_key_name(&comment).is_err() {
                        fp_name.clone()
                    } else {
                        comment
                    };
                    if held.iter().any(|k| k.name == base) {
                        // Two keys with one comment (`user@host`): told
                        // apart by their fingerprints.
                        let short: String = fp_name.chars().skip(7).take(8).collect();
                        let mut n = format!("{base}-{short}");
                        n.truncate(MAX_NAME);
                        n
                    } else {
                        base
                    }
                }
            };
            let key = SshKey {
                id: Uuid::new_v4(),
                owner: p.id.clone(),
                name,
                public_key: text,
                fingerprint,
                sandbox,
                created_at: Utc::now(),
            };
            self.store.insert_ssh_key(&key)?;
            Ok(key)
        })
    }

    /// `p`'s SSH keys, oldest first (those of destroyed sandboxes went
    /// with them).
    pub fn ssh_keys(&self, p: &Principal) -> Result<Vec<SshKey>> {
        self.store.list_ssh_keys(&p.id)
    }

    /// Removes one of `p`'s keys, by id or name.
    pub fn delete_ssh_key(&self, p: &Principal, id_or_name: &str) -> Result<SshKey> {
        let detail = serde_json::json!({ "key": id_or_name });
        self.audited_sync(p, "ssh_key.delete", None, detail, || {
            self.store
                .delete_ssh_key(&p.id, id_or_name)?
                .ok_or_else(|| Error::not_found(format!("SSH key {id_or_name:?}")))
        })
    }

    /// The SSH gateway's login: `user` names a sandbox (its id, or its key
    /// when exactly one of the principals that registered `public_key` has
    /// a sandbox of that key), and `public_key` (whose possession the
    /// gateway has verified) must be registered by the sandbox's owner for
    /// that sandbox or account-wide. Answers the owner (carried by `ssh`)
    /// and the sandbox. Every answer is audited; a refusal says nothing of
    /// why (`Unauthenticated`), the log does.
    pub fn ssh_login(&self, user: &str, public_key: &str) -> Result<(Principal, Uuid)> {
        let fingerprint = match parse_public_key(public_key) {
            Ok((_, fp, _)) => fp,
            Err(e) => {
                tracing::info!(user, "ssh login refused: {e}");
                return Err(Error::Unauthenticated("public key refused".into()));
            }
        };
        let found = self.ssh_target(user, &fingerprint);
        let detail = serde_json::json!({ "user": user, "fingerprint": fingerprint });
        match found {
            Ok(Some(sb)) => {
                let p = Principal::new(sb.owner.clone()).via("ssh");
                self.audit(&p, "ssh.login", Some(sb.id), None, detail);
                Ok((p, sb.id))
            }
            Ok(None) | Err(_) => {
                if let Err(e) = &found {
                    tracing::warn!(user, %fingerprint, "ssh login: {e}");
                }
                tracing::info!(user, %fingerprint, "ssh login refused: no such sandbox, or the key does not open it");
                let e =
                    Error::Unauthenticated(format!("the key {fingerprint} does not open {user:?}"));
                // Who asked is known only by the key.
                let p = Principal::new(format!("ssh:{fingerprint}")).via("ssh");
                self.audit(&p, "ssh.login", None, Some(&e), detail);
                Err(e)
            }
        }
    }

    /// The sandbox `user` names that the key of `fingerprint` opens.
    fn ssh_target(&self, user: &str, fingerprint: &str) -> Result<Option<Sandbox>> {
        let keys = self.store.ssh_keys_by_fingerprint(fingerprint)?;
        if keys.is_empty() {
            return Ok(None);
        }
        let opens = |sb: &Sandbox| {
            sb.state != State::Destroyed
                && keys
                    .iter()
                    .any(|k| k.owner == sb.owner && k.sandbox.is_none_or(|s| s == sb.id))
        };
        if let Ok(id) = Uuid::parse_str(user) {
            return Ok(self.store.get_sandbox(id)?.filter(|sb| opens(sb)));
        }
        // A sandbox's key: looked up among the owners that registered this
        // key; more than one match is no match.
        let mut owners: Vec<&str> = keys.iter().map(|k| k.owner.as_str()).collect();
        owners.dedup();
        let mut found = Vec::new();
        for owner in owners {
            if let Some(sb) = self.store.find_by_key(owner, user)? {
                if opens(&sb) {
                    found.push(sb);
                }
            }
        }
        Ok(match found.len() {
            1 => found.pop(),
            _ => None,
        })
    }
}

impl Engine {
    /// Records where the SSH gateway listens (`paddock serve
    /// --ssh-listen`), for [`Engine::ssh_command`].
    pub fn set_ssh_address(&self, addr: SocketAddr) {
        let _ = self.ssh_addr.set(addr);
    }

    /// Where the SSH gateway listens, if it does.
    pub fn ssh_address(&self) -> Option<SocketAddr> {
        self.ssh_addr.get().copied()
    }

    /// The command that opens a shell in `sb` through the SSH gateway
    /// (`ssh -p 2222 <id>@127.0.0.1`), if the gateway runs. A gateway
    /// bound to every address is named by loopback.
    pub fn ssh_command(&self, sb: &Sandbox) -> Option<String> {
        let addr = self.ssh_address()?;
        let host = match addr.ip() {
            std::net::IpAddr::V4(ip) if ip.is_unspecified() => "127.0.0.1".to_string(),
            std::net::IpAddr::V6(ip) if ip.is_unspecified() => "::1".to_string(),
            ip => ip.to_string(),
        };
        Some(match addr.port() {
            22 => format!("ssh {}@{host}", sb.id),
            port => format!("ssh -p {port} {}@{host}", sb.id),
        })
    }
}
