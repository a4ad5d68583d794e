//! Tokens Paddock signs (`crate::tokens`): a session exchanged from an API
//! key, and scoped tokens a principal makes, lists and revokes; what a
//! scope lets through (`check_scope`, from every audited call).

use super::*;
use crate::tokens::{Claims, KeyRing, TokenScope, ISSUER, MAX_LIFETIME_SECS};

/// How long a session exchanged from an API key lives.
pub const SESSION_SECS: u64 = 3600;
/// A token made without a lifetime lives this long.
pub const DEFAULT_TOKEN_SECS: u64 = 86400;
/// The most standing tokens a principal holds.
pub const MAX_TOKENS: usize = 1000;

/// Actions a token scoped to sandboxes may not take even on its own
/// sandboxes: they make others.
const MAKES_SANDBOXES: &[&str] = &["sandbox.fork"];
/// Actions a token scoped to sandboxes may not take on its own sandboxes
/// either: they reach what its principal has beyond them (another
/// volume), or outlive the token (an SSH key).
const REACHES_BEYOND: &[&str] = &["volume.attach", "ssh_key.add"];

impl Engine {
    /// Keeps the signing keys in `ring` (the daemon's, in its data dir);
    /// without, an engine signs with keys of its own in memory.
    pub fn set_token_keys(&self, ring: KeyRing) {
        let _ = self.token_keys.set(ring);
    }

    fn ring(&self) -> &KeyRing {
        self.token_keys
            .get_or_init(|| KeyRing::open(None).expect("an in-memory key ring"))
    }

    #[allow(clippy::too_many_arguments)]
    fn sign(
        &self,
        p: &Principal,
        kind: &str,
        secs: u64,
        scope: TokenScope,
        key: Option<String>,
        parent: Option<(String, chrono::DateTime<Utc>)>,
    ) -> Result<IssuedToken> {
        let now = Utc::now();
        let mut exp = now + chrono::TimeDelta::seconds(secs as i64);
        // A token made with a token lives no longer than it.
        if let Some((_, until)) = &parent {
            exp = exp.min(*until);
        }
        let parent = parent.map(|(jti, _)| jti);
        let jti = format!("tok-{}", Uuid::new_v4().simple());
        let claims = Claims {
            iss: ISSUER.into(),
            sub: p.id.clone(),
            jti: jti.clone(),
            iat: now.timestamp(),
            exp: exp.timestamp(),
            kind: kind.into(),
            key,
            parent: parent.clone(),
            scope: scope.clone(),
            email: p.email.clone(),
            name: p.name.clone(),
            groups: p.groups.clone(),
        };
        let token = self.ring().sign(&claims)?;
        Ok(IssuedToken {
            token,
            info: TokenInfo {
                jti,
                owner: p.id.clone(),
                created_at: chrono::DateTime::from_timestamp(now.timestamp(), 0).unwrap_or(now),
                expires_at: chrono::DateTime::from_timestamp(exp.timestamp(), 0).unwrap_or(exp),
                scope,
                parent,
            },
        })
    }

    /// A session token for an API key (boxd's exchange): the key's
    /// principal for `SESSION_SECS`, dead once the key is revoked.
    pub fn exchange_key(&self, api_key: &str) -> Result<IssuedToken> {
        let (key, principal) = self
            .store
            .key_for_hash(&crate::auth::hash_token(api_key))?
            .ok_or_else(|| Error::Unauthenticated("unknown or revoked API key".into()))?;
        self.sign(
            &Principal::new(principal),
            "session",
            SESSION_SECS,
            TokenScope::default(),
            Some(key),
            None,
        )
    }

    /// A token for `p`, living `ttl_secs` (0: a day; at most 30 days),
    /// which may do what `p` may narrowed by `scope`: listed by
    /// `tokens`, revoked by `revoke_token`.
    pub fn create_token(
        &self,
        p: &Principal,
        ttl_secs: u64,
        scope: TokenScope,
    ) -> Result<IssuedToken> {
        self.audited_sync(p, "token.create", None, serde_json::json!({}), || {
            let secs = match ttl_secs {
                0 => DEFAULT_TOKEN_SECS,
                s if s > MAX_LIFETIME_SECS => {
                    return Err(Error::invalid(
                        "expires_in",
                        format!("{s} s is past the longest a token lives ({MAX_LIFETIME_SECS} s)"),
                    ))
                }
                s => s,
            };
            if let Some(ids) = &scope.sandboxes {
                if ids.len() > 1000 {
                    return Err(Error::invalid("sandboxes", "more than 1000 sandboxes"));
                }
                for id in ids {
                    self.get(p, *id)?;
                }
            }
            let scope = match &p.scope {
                Some(mine) => mine.narrowed(&scope),
                None => scope,
            };
            if self.store.list_tokens(&p.id)?.len() >= MAX_TOKENS {
                return Err(Error::Quota(format!(
                    "{MAX_TOKENS} standing tokens: revoke some first"
                )));
            }
            let parent = match &p.token {
                Some(jti) => {
                    let t = self
                        .store
                        .standing_token(jti)?
                        .ok_or_else(|| Error::Unauthenticated("token: revoked".into()))?;
                    Some((t.jti, t.expires_at))
                }
                None => None,
            };
            let t = self.sign(p, "token", secs, scope, p.key.clone(), parent)?;
            self.store.put_token(&t.info)?;
            Ok(t)
        })
    }

    /// `p`'s standing tokens (never the tokens themselves).
    pub fn tokens(&self, p: &Principal) -> Result<Vec<TokenInfo>> {
        self.store.list_tokens(&p.id)
    }

    /// Revokes `p`'s token `jti`: refused from then on.
    pub fn revoke_token(&self, p: &Principal, jti: &str) -> Result<()> {
        self.audited_sync(
            p,
            "token.revoke",
            None,
            serde_json::json!({ "jti": jti }),
            || match self.store.revoke_token(&p.id, jti)? {
                true => Ok(()),
                false => Err(Error::not_found(format!("token {jti}"))),
            },
        )
    }

    /// A new signing key (the operator's): tokens signed with the old
    /// ones stay valid.
    pub fn rotate_token_key(&self, p: &Principal) -> Result<String> {
        self.audited_sync(p, "token.rotate_key", None, serde_json::json!({}), || {
            if !p.is_operator() {
                return Err(Error::Forbidden(
                    "only the operator rotates the token signing key".into(),
                ));
            }
            self.ring().rotate()
        })
    }

    /// Whether `token` is one Paddock signed (by its header).
    pub(super) fn is_own_token(&self, token: &str) -> bool {
        self.ring().knows(token)
    }

    /// The principal a token Paddock signed stands for: signature and
    /// expiry, then revocation and its API key.
    pub(super) fn verify_own_token(&self, token: &str) -> Result<Principal> {
        let c = self.ring().verify(token)?;
        if c.kind == "token" {
            // It, and every token it was made with, still stands.
            let mut next = Some(c.jti.clone());
            for _ in 0..64 {
                let Some(jti) = next else { break };
                match self.store.standing_token(&jti)? {
                    Some(t) => next = t.parent,
                    None => return Err(Error::Unauthenticated("token: revoked".into())),
                }
            }
        }
        if let Some(key) = &c.key {
            if !self.store.key_stands(key)? {
                return Err(Error::Unauthenticated(
                    "token: the API key it came from was revoked".into(),
                ));
            }
        }
        Ok(Principal {
            id: c.sub,
            email: c.email,
            name: c.name,
            groups: c.groups,
            scope: (!c.scope.is_full()).then_some(c.scope),
            key: c.key,
            token: (c.kind == "token").then_some(c.jti),
            ..Default::default()
        })
    }

    /// What `p`'s scope lets through: a read-only token changes nothing;
    /// one scoped to sandboxes acts on those alone (and makes none).
    pub(super) fn check_scope(
        &self,
        p: &Principal,
        action: &str,
        sandbox: Option<Uuid>,
    ) -> Result<()> {
        if p.token.is_some() && action == "ssh_key.add" {
            return Err(Error::Forbidden(
                "ssh_key.add: a key would outlive this token: register it with an API key".into(),
            ));
        }
        let Some(scope) = &p.scope else {
            return Ok(());
        };
        if scope.read_only {
            return Err(Error::Forbidden(format!(
                "{action}: this token is read-only"
            )));
        }
        if scope.sandboxes.is_some() {
            let allowed = sandbox.is_some_and(|id| scope.allows_sandbox(id))
                && !MAKES_SANDBOXES.contains(&action)
                && !REACHES_BEYOND.contains(&action);
            if !allowed {
                return Err(Error::Forbidden(format!(
                    "{action}: this token is limited to its sandboxes"
                )));
            }
        }
        Ok(())
    }
}
