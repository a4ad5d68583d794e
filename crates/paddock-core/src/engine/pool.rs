//! Warm pools: per image (`serve --warm-pool`) or per template (its
//! `warm_pool`), N sandboxes booted ahead of time, so that a create asking
//! for nothing else is answered by handing one over.
//!
//! A pooled sandbox belongs to [`POOL_OWNER`], which no principal can be,
//! so nobody sees or touches it before it is handed over; nothing runs in
//! it but its agent (and the image's main process). Hand-over rewrites its
//! owner, key, labels and timeouts in one transaction with its
//! `sandbox.created`/`sandbox.started` events (`"warm": true`); it then
//! leaves the pool for good, so a used sandbox is never handed out again.
//! A background task refills each pool while the host has memory to spare
//! (`EngineConfig::warm_pool_min_free_mb`), and after a restart adopts the
//! pooled sandboxes that survived.

use std::collections::{HashMap, VecDeque};
use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use serde::Serialize;
use uuid::Uuid;

use super::{now_ms, Engine};
use crate::error::{Error, Result};
use crate::event::{self as ev, EventData};
use crate::model::*;
use crate::store::Store;

/// The owner of pooled sandboxes (principals named `paddock:*` are
/// reserved).
pub const POOL_OWNER: &str = "paddock:warm-pool";

/// One pool: sandboxes of `image` (none: the default host image).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    pub image: Option<String>,
    pub size: usize,
}

/// A pool as `GET /v1/pools` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct PoolStatus {
    /// None: the default host image (or, for a template's pool, the
    /// template's).
    pub image: Option<String>,
    /// The template whose sandboxes this pool keeps (yours only).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub template: Option<String>,
    pub size: usize,
    pub ready: usize,
}

/// Which sandboxes a pool keeps.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub(super) enum PoolKey {
    /// A plain sandbox of this image (None: the default).
    Image(Option<String>),
    /// A sandbox of `owner`'s template `name`.
    Template { owner: String, name: String },
}

/// Labels that tie a pooled template sandbox to its template (they are
/// replaced by the creator's labels at hand-over).
const TEMPLATE_LABEL: &str = "paddock.pool.template";
const OWNER_LABEL: &str = "paddock.pool.owner";
/// Which version of the template (its creation time): a template deleted
/// and made anew under the same name must not get the old one's sandboxes.
const VERSION_LABEL: &str = "paddock.pool.version";

fn template_version(created_at: &chrono::DateTime<Utc>) -> String {
    created_at.timestamp_micros().to_string()
}

/// How long a pool whose last boot failed is left alone.
const FAILED_BACKOFF: Duration = Duration::from_secs(30);

#[derive(Default)]
pub(super) struct Pools {
    ready: std::sync::Mutex<HashMap<PoolKey, VecDeque<Uuid>>>,
    /// Pools whose last boot failed, and when.
    failed: std::sync::Mutex<HashMap<PoolKey, std::time::Instant>>,
    pub(super) refill: tokio::sync::Notify,
}

impl Pools {
    fn failed(&self, key: PoolKey) {
        self.failed
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(key, std::time::Instant::now());
    }

    fn backing_off(&self, key: &PoolKey) -> bool {
        let mut f = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        f.retain(|_, at| at.elapsed() < FAILED_BACKOFF);
        f.contains_key(key)
    }

    fn ready(&self) -> std::sync::MutexGuard<'_, HashMap<PoolKey, VecDeque<Uuid>>> {
        self.ready.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn count(&self, key: &PoolKey) -> usize {
        self.ready().get(key).map_or(0, |q| q.len())
    }

    fn push(&self, key: PoolKey, id: Uuid) {
        self.ready().entry(key).or_default().push_back(id);
    }

    /// Takes a sandbox that died out of the ready ones (it was counted
    /// ready, keeping its pool from refilling, until a create skipped it)
    /// and has the pool refilled.
    pub(super) fn forget(&self, id: Uuid) {
        let mut found = false;
        for q in self.ready().values_mut() {
            let before = q.len();
            q.retain(|&x| x != id);
            found |= q.len() != before;
        }
        if found {
            self.refill.notify_one();
        }
    }
}

fn pool_principal() -> Principal {
    Principal::new(POOL_OWNER).via("pool")
}

/// The spec less what can be given at hand-over (key, labels, TTL, idle
/// timeout) and `keep`: a spec that is default but for those can be served
/// from a pool. Anything else (limits, env, command, mounts, ...) boots a
/// sandbox of its own.
fn plain_but(spec: &SandboxSpec, keep: impl FnOnce(&mut SandboxSpec)) -> bool {
    let mut rest = SandboxSpec {
        key: None,
        labels: Default::default(),
        ttl_secs: None,
        idle_timeout_secs: None,
        ..spec.clone()
    };
    keep(&mut rest);
    serde_json::to_value(&rest).ok() == serde_json::to_value(SandboxSpec::default()).ok()
}

/// The image pool a spec can be served from: one that sets nothing but its
/// image and what can be given at hand-over.
fn pool_image(spec: &SandboxSpec) -> Option<Option<String>> {
    plain_but(spec, |r| r.image = None).then(|| {
        spec.image
            .as_deref()
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(String::from)
    })
}

/// The template a spec names, if it sets nothing else but what can be
/// given at hand-over.
fn pool_template(spec: &SandboxSpec) -> Option<String> {
    let name = spec.template.clone()?;
    plain_but(spec, |r| r.template = None).then_some(name)
}

impl Engine {
    /// The pool a create by `p` with this spec (as given, before the
    /// defaults of `template`, the one it names) can be served from, if
    /// one exists.
    pub(super) fn pool_key(
        &self,
        p: &Principal,
        spec: &SandboxSpec,
        template: Option<&Template>,
    ) -> Option<PoolKey> {
        match template {
            Some(t) if t.warm_pool > 0 => pool_template(spec).map(|name| PoolKey::Template {
                owner: p.id.clone(),
                name,
            }),
            Some(_) => None,
            None if self.cfg.warm_pools.is_empty() => None,
            None => {
                let image = pool_image(spec)?;
                self.image_pool_size(&image)
                    .filter(|n| *n > 0)
                    .map(|_| PoolKey::Image(image))
            }
        }
    }

    /// The size of the daemon's pool of `image`, if it keeps one.
    fn image_pool_size(&self, image: &Option<String>) -> Option<usize> {
        self.cfg
            .warm_pools
            .iter()
            .find(|p| &p.image == image)
            .map(|p| p.size)
    }

    /// Every pool that should exist: the daemon's image pools, and the
    /// templates that ask for one; with its size and image.
    fn wanted_pools(&self) -> Vec<(PoolKey, usize, Option<String>)> {
        let mut v: Vec<_> = self
            .cfg
            .warm_pools
            .iter()
            .map(|p| (PoolKey::Image(p.image.clone()), p.size, p.image.clone()))
            .collect();
        match self.store.templates_with_pools() {
            Ok(ts) => v.extend(ts.into_iter().map(|t| {
                let key = PoolKey::Template {
                    owner: t.owner,
                    name: t.name,
                };
                (key, t.warm_pool, t.defaults.image)
            })),
            Err(e) => tracing::warn!("warm pool: reading templates: {e}"),
        }
        v
    }

    /// The pools `p` may see: the daemon's image pools and `p`'s
    /// templates' pools.
    pub fn pools(&self, p: &Principal) -> Vec<PoolStatus> {
        self.wanted_pools()
            .into_iter()
            .filter_map(|(key, size, image)| {
                let ready = self.pools.count(&key);
                let template = match key {
                    PoolKey::Image(_) => None,
                    PoolKey::Template { owner, name } if owner == p.id => Some(name),
                    PoolKey::Template { .. } => return None,
                };
                Some(PoolStatus {
                    image,
                    template,
                    size,
                    ready,
                })
            })
            .collect()
    }

    /// Destroys the pooled sandboxes of a template that is gone.
    pub(super) async fn drain_template_pool(&self, owner: &str, name: &str) {
        let key = PoolKey::Template {
            owner: owner.to_string(),
            name: name.to_string(),
        };
        let ids: Vec<Uuid> = self
            .pools
            .ready()
            .remove(&key)
            .map(Vec::from)
            .unwrap_or_default();
        for id in ids {
            if let Ok(Some(sb)) = self.store.get_sandbox(id) {
                if sb.owner == POOL_OWNER {
                    if let Err(e) = self.destroy_inner(sb, "warm pool").await {
                        tracing::warn!("warm pool: {e}");
                    }
                }
            }
        }
    }

    /// Hands a pooled sandbox to `p`, if `spec` can be served from a pool
    /// that has one ready. With a key `p` already used, that sandbox
    /// (`false`), as `create` would.
    /// `spec` is the create's spec with its template's defaults applied.
    pub(super) async fn take_warm(
        &self,
        p: &Principal,
        key: PoolKey,
        spec: &SandboxSpec,
        config: &SandboxConfig,
        max: &Option<(u32, String)>,
    ) -> Result<Option<(Sandbox, bool)>> {
        let _guard = match &spec.key {
            Some(_) => Some(self.key_lock.lock().await),
            None => None,
        };
        if let Some(k) = &spec.key {
            if let Some(existing) = self.store.find_by_key(&p.id, k)? {
                return Ok(Some((existing, false)));
            }
        }
        loop {
            let next = self.pools.ready().get_mut(&key).and_then(|q| q.pop_front());
            let Some(id) = next else {
                self.pools.refill.notify_one();
                return Ok(None);
            };
            self.pools.refill.notify_one();
            // A pool's destroy of this sandbox waits for the hand-over (and
            // then leaves a sandbox that changed hands alone). Held by
            // someone else, it is being destroyed or found dead: the next.
            let Some(_life) = self.lifecycles.try_lock(id) else {
                continue;
            };
            if !self.live.read().await.contains_key(&id) {
                continue;
            }
            let now = Utc::now();
            let handed = self.store.tx_events(
                |tx| {
                    let mut sb = Store::sandbox_in(tx, id)?;
                    if sb.owner != POOL_OWNER || sb.state != State::Running {
                        return Err(Error::Conflict(format!("pooled sandbox {id} is gone")));
                    }
                    Self::held_check(tx, &p.id, max)?;
                    sb.owner = p.id.clone();
                    sb.key = spec.key.clone();
                    sb.labels = spec.labels.clone();
                    sb.template = spec.template.clone();
                    sb.config.ttl_secs = config.ttl_secs;
                    sb.config.idle_timeout_secs = config.idle_timeout_secs;
                    sb.expires_at = config.ttl_secs.map(|t| super::expiry(now, t));
                    sb.created_at = now;
                    sb.updated_at = now;
                    sb.last_active_at = now;
                    Store::put_sandbox(tx, &sb)?;
                    let created = Store::append_event(
                        tx,
                        id,
                        &sb.owner,
                        EventData::created(sb.config.isolation, true),
                    )?;
                    let started = Store::append_event(
                        tx,
                        id,
                        &sb.owner,
                        EventData::Started(ev::StateChange {
                            state: "running".into(),
                            warm: true,
                        }),
                    )?;
                    Ok((sb, vec![created, started]))
                },
                |evs| self.bus.publish_all(evs),
            );
            match handed {
                Ok(sb) => {
                    if let Some(l) = self.live.read().await.get(&id) {
                        l.last_active_ms
                            .store(now_ms(), std::sync::atomic::Ordering::Relaxed);
                    }
                    tracing::debug!(sandbox = %id, "handed out from the warm pool");
                    return Ok(Some((sb, true)));
                }
                Err(Error::Conflict(_) | Error::Exists(_)) => continue,
                Err(e) => {
                    // Still the pool's: keep it, first in line.
                    self.pools.ready().entry(key).or_default().push_front(id);
                    return Err(e);
                }
            }
        }
    }

    /// Adopts the pooled sandboxes that survived a restart (destroying
    /// those no pool wants any more), then keeps every pool full.
    pub fn spawn_pools(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            engine.adopt_pooled().await;
            loop {
                let notified = engine.pools.refill.notified();
                match engine.refill_once().await {
                    Ok(true) => continue,
                    Ok(false) => {}
                    Err(e) => tracing::warn!("warm pool: {e}"),
                }
                tokio::select! {
                    _ = notified => {}
                    _ = tokio::time::sleep(Duration::from_secs(5)) => {}
                }
            }
        })
    }

    async fn adopt_pooled(&self) {
        let pooled = self
            .list_all(&pool_principal(), &ListQuery::default())
            .unwrap_or_default();
        for sb in pooled {
            let key = match (sb.labels.get(TEMPLATE_LABEL), sb.labels.get(OWNER_LABEL)) {
                (Some(name), Some(owner)) => PoolKey::Template {
                    owner: owner.clone(),
                    name: name.clone(),
                },
                _ => PoolKey::Image(sb.config.image.clone()),
            };
            let live = self.live.read().await.contains_key(&sb.id);
            if sb.state == State::Running && live && self.pool_wants(&key, &sb) {
                self.pools.push(key, sb.id);
            } else if let Err(e) = self.destroy_inner(sb, "warm pool").await {
                tracing::warn!("warm pool: {e}");
            }
        }
    }

    /// Boots one sandbox for the emptiest pool short of its size; false
    /// when every pool is full (or the host is short of memory).
    async fn refill_once(self: &Arc<Self>) -> Result<bool> {
        let short = self
            .wanted_pools()
            .into_iter()
            .map(|(key, size, _)| {
                let have = self.pools.count(&key);
                (key, size, have)
            })
            .filter(|(key, size, have)| have < size && !self.pools.backing_off(key))
            .min_by_key(|(_, _, have)| *have)
            .map(|(key, _, _)| key);
        let Some(key) = short else {
            return Ok(false);
        };
        let available_mb =
            crate::host::meminfo_kib(&["MemAvailable"]).map_or(u64::MAX, |m| m[0] / 1024);
        if available_mb < self.cfg.warm_pool_min_free_mb {
            tracing::debug!("warm pool: the host is short of memory; not refilling");
            return Ok(false);
        }
        let spec = match &key {
            PoolKey::Image(image) => SandboxSpec {
                image: image.clone(),
                ..Default::default()
            },
            PoolKey::Template { owner, name } => {
                let Some(t) = self.store.get_template(owner, name)? else {
                    return Ok(true);
                };
                let mut spec = t.defaults;
                // Timeouts start at hand-over: a pooled sandbox must not
                // expire while it waits.
                spec.ttl_secs = None;
                spec.idle_timeout_secs = None;
                spec.labels.insert(TEMPLATE_LABEL.into(), name.clone());
                spec.labels.insert(OWNER_LABEL.into(), owner.clone());
                spec.labels
                    .insert(VERSION_LABEL.into(), template_version(&t.created_at));
                spec
            }
        };
        let booted = self.create_inner(&pool_principal(), spec, false).await;
        let sb = match booted {
            Ok((sb, _)) => sb,
            Err(e) => {
                // Not again for a while: a pool whose sandboxes cannot boot
                // must not keep the others from filling.
                self.pools.failed(key);
                return Err(e);
            }
        };
        // The template may have gone, or been made anew, while it booted.
        if self.pool_wants(&key, &sb) {
            self.pools.push(key, sb.id);
        } else {
            self.destroy_inner(sb, "warm pool").await?;
        }
        Ok(true)
    }

    /// Whether the pool `key` still wants this pooled sandbox: it exists,
    /// has room, and (for a template) the sandbox was made from the
    /// template as it is now.
    fn pool_wants(&self, key: &PoolKey, sb: &Sandbox) -> bool {
        let room = |size: usize| self.pools.count(key) < size;
        match key {
            PoolKey::Image(image) => self.image_pool_size(image).is_some_and(room),
            PoolKey::Template { owner, name } => {
                match self.store.get_template(owner, name).ok().flatten() {
                    Some(t) => {
                        room(t.warm_pool)
                            && sb.labels.get(VERSION_LABEL)
                                == Some(&template_version(&t.created_at))
                    }
                    None => false,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::{pool_image, pool_template};
    use crate::model::SandboxSpec;

    #[test]
    fn only_plain_specs_come_from_a_pool() {
        let plain = SandboxSpec {
            key: Some("k".into()),
            labels: [("a".to_string(), "b".to_string())].into(),
            ttl_secs: Some(60),
            idle_timeout_secs: Some(30),
            ..Default::default()
        };
        assert_eq!(pool_image(&plain), Some(None));
        let img = SandboxSpec {
            image: Some(" alpine:3 ".into()),
            ..Default::default()
        };
        assert_eq!(pool_image(&img), Some(Some("alpine:3".into())));
        for other in [
            SandboxSpec {
                memory_mb: Some(128),
                ..Default::default()
            },
            SandboxSpec {
                command: Some(vec!["sleep".into()]),
                ..Default::default()
            },
            SandboxSpec {
                env: [("A".to_string(), "1".to_string())].into(),
                ..Default::default()
            },
            SandboxSpec {
                template: Some("t".into()),
                ..Default::default()
            },
        ] {
            assert_eq!(pool_image(&other), None, "{other:?}");
        }
        let t = SandboxSpec {
            template: Some("t".into()),
            key: Some("k".into()),
            ttl_secs: Some(60),
            ..Default::default()
        };
        assert_eq!(pool_template(&t), Some("t".into()));
        let t_env = SandboxSpec {
            env: [("A".to_string(), "1".to_string())].into(),
            ..t.clone()
        };
        assert_eq!(pool_template(&t_env), None);
        assert_eq!(pool_template(&plain), None);
    }
}
