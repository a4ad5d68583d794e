//! The engine: owns sandboxes, their lifecycle and their state.
//!
//! Every state change goes through [`Engine::transition`], which writes the
//! sandbox and appends its event in one transaction. Exec, files and ports
//! go to the sandbox's agent; start, stop and the rest go to its runtime.
//! Which operation a state allows is decided in one place,
//! [`crate::state`].
//!
//! One file per concern, each an `impl Engine` block:
//!
//! | file | what |
//! | --- | --- |
//! | `mod.rs` | `Engine`, its config, lookups (`get`, `list`, `find`) and the live agents |
//! | `create.rs` | create (idempotent by key), boot, attach |
//! | `lifecycle.rs` | one change at a time per sandbox; stop, start, pause, resume, destroy, touch, TTL |
//! | `exec.rs` | commands |
//! | `files.rs` | file operations, judged against mount ACLs |
//! | `observe.rs` | ports, platform, proxy targets, metrics, logs |
//! | `events.rs` | transitions with their events; reading events |
//! | `config.rs` | live configuration changes |
//! | `templates.rs` | templates |
//! | `governance.rs` | policies, the audit log, usage, the operator's templates |
//! | `images.rs` | the `Images` port, pull policy, claims |
//! | `pool.rs` | warm pools and their hand-over |
//! | `recovery.rs` | coming back after a restart; shutdown |
//! | `reaper.rs` | TTLs and idle timeouts |
//! | `snapshots.rs` | snapshots, forks, and collecting the layers nothing refers to |
//! | `volumes.rs` | volumes: create, mount at create or into a running sandbox, unmount, delete |
//! | `networks.rs` | private networks: default and named ones, membership, peers' names |
//! | `ssh_keys.rs` | principals' SSH keys, the SSH gateway's logins and its address |
//! | `tokens.rs` | tokens Paddock signs (sessions, scoped tokens), revocation, scopes |
//! | `ingress.rs` | proxies, bound domains, and what a `Host` routes to |
//! | `monitor.rs` | deaths, main-process output, usage events |

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use tokio::sync::{mpsc, RwLock};
use uuid::Uuid;

mod config;
mod create;
mod events;
mod exec;
mod files;
mod governance;
mod guards;
mod images;
mod ingress;
mod lifecycle;
mod monitor;
mod networks;
mod observe;
mod pool;
mod reaper;
mod recovery;
mod snapshots;
mod ssh_keys;
mod templates;
#[cfg(test)]
mod tests;
mod tokens;
mod volumes;
mod workspaces;

pub use config::{ConfigApplied, ConfigChanges, ConfigUpdate};
use events::{flush, DEFER_FLUSH};
pub use governance::{Usage, OPERATOR_TEMPLATES};
pub use images::{Images, PullPolicy};
pub use ingress::{host_name, IngressConfig, IngressRoute, MAX_DOMAINS, MAX_PROXIES};
pub use pool::{PoolConfig, PoolStatus, POOL_OWNER};
pub use ssh_keys::check_ssh_public_key;
pub use tokens::{DEFAULT_TOKEN_SECS, SESSION_SECS};

use crate::agent::{Agent, AgentConnector};
use crate::error::{Error, Result};
use crate::event::{self as ev, EventData};
use crate::events::{EventBus, Subscription};
use crate::model::*;
use crate::runtime::{BackendInfo, Instance, Liveness, Runtime};
use crate::state::Action;
use crate::store::Store;

#[derive(Debug, Clone)]
pub struct EngineConfig {
    /// The operator's ceilings on what creates and execs ask for.
    pub limits: Limits,
    /// Which host directories sandboxes may have bound in.
    pub host_mounts: crate::hostmount::HostMounts,
    /// How long a new sandbox's agent may take to answer.
    pub agent_timeout: Duration,
    /// How often the reaper looks for lapsed TTLs and idle timeouts.
    pub reap_interval: Duration,
    /// Warm pools: sandboxes booted ahead of time per image.
    pub warm_pools: Vec<PoolConfig>,
    /// Pools are not refilled while the host has less memory available.
    pub warm_pool_min_free_mb: u64,
    /// Where the main processes' output is kept on the host (`None`: not
    /// kept; `stdio` events still flow).
    pub log_dir: Option<std::path::PathBuf>,
    /// The most of one sandbox's output kept on disk.
    pub log_max_bytes: u64,
    /// Who may pull what, and with the daemon's registry credentials.
    pub pull_policy: PullPolicy,
    /// Which backend (by name) a create of each isolation gets; an
    /// isolation not named here gets the first backend of it registered.
    pub default_backends: HashMap<Isolation, String>,
    /// The operator's policies (the settings file's; more may be written
    /// through the API).
    pub policies: Vec<crate::policy::Policy>,
    /// The operator's templates, which every principal sees beside its
    /// own (owned by [`OPERATOR_TEMPLATES`]).
    pub templates: Vec<Template>,
    /// How long audit records are kept (`None`: for ever).
    pub audit_retention: Option<Duration>,
}

impl Default for EngineConfig {
    fn default() -> Self {
        EngineConfig {
            limits: Limits::default(),
            host_mounts: Default::default(),
            agent_timeout: Duration::from_secs(10),
            reap_interval: Duration::from_secs(1),
            warm_pools: Vec::new(),
            warm_pool_min_free_mb: 1024,
            log_dir: None,
            log_max_bytes: 16 << 20,
            pull_policy: PullPolicy::default(),
            default_backends: HashMap::new(),
            policies: Vec::new(),
            templates: Vec::new(),
            audit_retention: Some(Duration::from_secs(90 * 86400)),
        }
    }
}

/// A running sandbox's live parts.
struct Live {
    agent: Arc<dyn Agent>,
    /// The backend that runs it (`Runtime::name`): the one the monitor
    /// asks whether it is alive.
    backend: String,
    instance: Instance,
    last_active_ms: AtomicI64,
    persisted_active_ms: AtomicI64,
    /// Bytes its network moved when last looked at (`reaper.rs`).
    net_bytes: std::sync::atomic::AtomicU64,
    /// Whether its guards' decisions are being recorded (`guards.rs`).
    watching: std::sync::atomic::AtomicBool,
}

pub struct Engine {
    store: Arc<Store>,
    bus: EventBus,
    /// The backends, by name.
    runtimes: HashMap<String, Arc<dyn Runtime>>,
    /// Which backend a create asking for an isolation gets.
    defaults: HashMap<Isolation, String>,
    /// How agents are reached (the transports are not the engine's).
    agents: Arc<dyn AgentConnector>,
    live: RwLock<HashMap<Uuid, Arc<Live>>>,
    key_lock: tokio::sync::Mutex<()>,
    /// One lifecycle change at a time per sandbox (`lifecycle.rs`).
    lifecycles: lifecycle::Lifecycles,
    images: Option<Arc<dyn Images>>,
    pools: pool::Pools,
    /// The main processes' output, on the host.
    logs: Option<crate::logs::LogStore>,
    /// Wakes the monitor when a sandbox is attached.
    attached: tokio::sync::Notify,
    /// Where snapshot layers are kept (`snapshots.rs`).
    layers: std::sync::OnceLock<Arc<dyn crate::layers::Layers>>,
    /// Held shared by captures until what they made is recorded, alone
    /// by the collection of layers nothing refers to.
    layer_gc: tokio::sync::RwLock<()>,
    /// Where volumes live (`volumes.rs`).
    volumes: std::sync::OnceLock<Arc<dyn crate::volumes::VolumeStore>>,
    /// The policies written through the API (the store's, kept here so
    /// that a create reads no table for them; `governance.rs`).
    policies: std::sync::RwLock<Vec<crate::policy::Policy>>,
    /// Bearer tokens besides API keys (`set_token_verifier`).
    verifier: std::sync::OnceLock<Arc<dyn crate::auth::TokenVerifier>>,
    /// Where the SSH gateway listens, if it does (`ssh_keys.rs`).
    ssh_addr: std::sync::OnceLock<SocketAddr>,
    /// The keys Paddock signs its tokens with (`tokens.rs`).
    token_keys: std::sync::OnceLock<crate::tokens::KeyRing>,
    /// One network create or delete at a time (`networks.rs`): subnets
    /// and default networks are handed out under it.
    networks: tokio::sync::Mutex<()>,
    /// One update of a network's peers at a time (`networks.rs`), so that
    /// the last to write read the latest members.
    peers: tokio::sync::Mutex<()>,
    /// The ingress's zone and port, once it listens (`ingress.rs`).
    ingress: std::sync::OnceLock<ingress::IngressConfig>,
    cfg: EngineConfig,
}

/// Wakes the monitor once dropped (after the live map's lock is let go).
struct Wake<'a>(&'a tokio::sync::Notify);

impl Drop for Wake<'_> {
    fn drop(&mut self) {
        self.0.notify_one();
    }
}

fn now_ms() -> i64 {
    Utc::now().timestamp_millis()
}

impl Engine {
    pub fn new(
        store: Arc<Store>,
        runtimes: Vec<Arc<dyn Runtime>>,
        images: Option<Arc<dyn Images>>,
        agents: Arc<dyn AgentConnector>,
        cfg: EngineConfig,
    ) -> Result<Arc<Engine>> {
        let logs = match &cfg.log_dir {
            Some(dir) => Some(crate::logs::LogStore::new(dir.clone(), cfg.log_max_bytes)?),
            None => None,
        };
        let bus = EventBus::default();
        // A flush of deferred events, DEFER_FLUSH after one is due, on the
        // runtime of whoever deferred them (none: the next write or read of
        // the log writes them).
        let (weak, to) = (Arc::downgrade(&store), bus.clone());
        store.set_flusher(move || {
            let Ok(rt) = tokio::runtime::Handle::try_current() else {
                return;
            };
            let (store, bus) = (weak.clone(), to.clone());
            rt.spawn(async move {
                tokio::time::sleep(DEFER_FLUSH).await;
                if let Some(store) = store.upgrade() {
                    flush(&store, &bus);
                }
            });
        });
        let mut defaults: HashMap<Isolation, String> = HashMap::new();
        for r in &runtimes {
            defaults
                .entry(r.isolation())
                .or_insert_with(|| r.name().to_string());
        }
        for (iso, name) in &cfg.default_backends {
            match runtimes.iter().find(|r| r.name() == name) {
                Some(r) if r.isolation() == *iso => {
                    defaults.insert(*iso, name.clone());
                }
                Some(r) => {
                    return Err(Error::invalid(
                        "default_backends",
                        format!(
                            "backend {name} runs {} sandboxes, not {}",
                            r.isolation().as_str(),
                            iso.as_str()
                        ),
                    ))
                }
                None => {
                    return Err(Error::invalid(
                        "default_backends",
                        format!("no backend named {name} on this daemon"),
                    ))
                }
            }
        }
        let api_policies = store.policies()?;
        Ok(Arc::new(Engine {
            store,
            bus,
            runtimes: runtimes
                .into_iter()
                .map(|r| (r.name().to_string(), r))
                .collect(),
            defaults,
            agents,
            live: RwLock::new(HashMap::new()),
            key_lock: tokio::sync::Mutex::new(()),
            lifecycles: Default::default(),
            images,
            pools: Default::default(),
            logs,
            attached: tokio::sync::Notify::new(),
            layers: Default::default(),
            layer_gc: Default::default(),
            volumes: Default::default(),
            verifier: Default::default(),
            ssh_addr: Default::default(),
            token_keys: Default::default(),
            networks: Default::default(),
            peers: Default::default(),
            ingress: Default::default(),
            policies: std::sync::RwLock::new(api_policies),
            cfg,
        }))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    /// The backend a new sandbox of isolation `iso` gets.
    fn runtime(&self, iso: Isolation) -> Result<&Arc<dyn Runtime>> {
        self.defaults
            .get(&iso)
            .and_then(|name| self.runtimes.get(name))
            .ok_or_else(|| {
                let mut have: Vec<&str> = self.defaults.keys().map(|i| i.as_str()).collect();
                have.sort();
                Error::Unsupported(format!(
                    "isolation {:?} (no {} backend is available on this daemon; available: {})",
                    iso.as_str(),
                    iso.as_str(),
                    have.join(", ")
                ))
            })
    }

    /// The backend that runs `sb`: the one its record names (a record from
    /// before backends had names: its isolation's default).
    fn runtime_of(&self, sb: &Sandbox) -> Result<&Arc<dyn Runtime>> {
        if sb.backend.is_empty() {
            return self.runtime(sb.config.isolation);
        }
        match self.runtimes.get(&sb.backend) {
            Some(rt) => Ok(rt),
            None => {
                // The daemon came back with another backend for that
                // isolation (crun where it had runc, say): its default is
                // the best chance to reach and clean up the sandbox, as it
                // was before backends had names.
                tracing::warn!(
                    sandbox = %sb.id,
                    "its backend {} is not on this daemon: using the {} default",
                    sb.backend,
                    sb.config.isolation.as_str()
                );
                self.runtime(sb.config.isolation)
            }
        }
    }

    /// The backends this daemon has, with what each can do.
    pub fn backends(&self) -> Vec<BackendInfo> {
        let mut out: Vec<BackendInfo> = self
            .runtimes
            .values()
            .map(|r| BackendInfo {
                name: r.name().to_string(),
                isolation: r.isolation(),
                default: self.defaults.get(&r.isolation()).map(String::as_str) == Some(r.name()),
                capabilities: r.capabilities(),
            })
            .collect();
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out
    }

    /// Trusts the tokens `v` verifies (OIDC JWTs) besides API keys.
    pub fn set_token_verifier(&self, v: Arc<dyn crate::auth::TokenVerifier>) {
        let _ = self.verifier.set(v);
    }

    /// The principal a bearer token stands for: an API key's, or a token
    /// the verifier trusts.
    pub async fn authenticate(&self, token: &str) -> Result<Principal> {
        if !token.starts_with(crate::auth::TOKEN_PREFIX) && self.is_own_token(token) {
            return self.verify_own_token(token);
        }
        if !token.starts_with(crate::auth::TOKEN_PREFIX) {
            if let Some(v) = self.verifier.get().filter(|v| v.accepts(token)) {
                return v.verify(token).await;
            }
        }
        self.authenticate_key(token)
    }

    /// The principal an API key stands for.
    pub fn authenticate_key(&self, token: &str) -> Result<Principal> {
        match self.store.key_for_hash(&crate::auth::hash_token(token))? {
            Some((key, id)) => Ok(Principal {
                key: Some(key),
                ..Principal::new(id)
            }),
            None => Err(Error::Unauthenticated("unknown or revoked API key".into())),
        }
    }

    /// The sandbox, if `p` may see it.
    pub fn get(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        match self.store.get_sandbox(id)? {
            Some(sb)
                if sb.owner == p.id && p.scope.as_ref().is_none_or(|s| s.allows_sandbox(id)) =>
            {
                Ok(sb)
            }
            _ => Err(Error::not_found(format!("sandbox {id}"))),
        }
    }

    pub fn list(&self, p: &Principal, q: &ListQuery) -> Result<Vec<Sandbox>> {
        let mut all = self.store.list_sandboxes(Some(&p.id), q)?;
        if let Some(s) = &p.scope {
            all.retain(|sb| s.allows_sandbox(sb.id));
        }
        Ok(all)
    }

    /// Every sandbox of `p` that `q` selects, read page by page (`q`'s
    /// limit and cursor are ignored).
    pub fn list_all(&self, p: &Principal, q: &ListQuery) -> Result<Vec<Sandbox>> {
        const PAGE: usize = 1000;
        let mut q = ListQuery {
            limit: PAGE,
            after: None,
            ..q.clone()
        };
        let mut out = Vec::new();
        loop {
            let mut page = self.store.list_sandboxes(Some(&p.id), &q)?;
            let n = page.len();
            q.after = page.last().map(|s| s.id);
            if let Some(s) = &p.scope {
                page.retain(|sb| s.allows_sandbox(sb.id));
            }
            out.extend(page);
            if n < PAGE {
                return Ok(out);
            }
        }
    }

    async fn live_for(&self, p: &Principal, id: Uuid) -> Result<(Sandbox, Arc<Live>)> {
        let sb = self.get(p, id)?;
        sb.state.check(Action::UseAgent, id)?;
        let live = self.live.read().await.get(&id).cloned();
        match live {
            Some(l) => {
                self.mark_active(&sb, &l);
                Ok((sb, l))
            }
            // A stop or destroy under way dropped it: the state is what
            // refuses the call, not the agent.
            None if self.lifecycles.try_lock(id).is_none() => Err(Error::Conflict(format!(
                "sandbox {id} is being stopped or destroyed"
            ))),
            None => Err(Error::Unavailable {
                what: format!("sandbox {id}"),
                reason: "its agent is not connected".into(),
            }),
        }
    }

    fn mark_active(&self, sb: &Sandbox, live: &Live) {
        let now = now_ms();
        live.last_active_ms.store(now, Ordering::Relaxed);
        // Persist now and then, so that a restart keeps the idle clock.
        if now - live.persisted_active_ms.load(Ordering::Relaxed) > 10_000 {
            live.persisted_active_ms.store(now, Ordering::Relaxed);
            let _ = self.persist_active(sb.id, now);
        }
    }

    fn persist_active(&self, id: Uuid, at_ms: i64) -> Result<()> {
        self.store.tx(|tx| {
            let mut sb = Store::sandbox_in(tx, id)?;
            sb.last_active_at = chrono::DateTime::from_timestamp_millis(at_ms).unwrap_or_default();
            Store::put_sandbox(tx, &sb)
        })
    }

    /// Looks a sandbox up by its key, or by its id.
    pub fn find(&self, p: &Principal, key_or_id: &str) -> Result<Sandbox> {
        if let Some(sb) = self.store.find_by_key(&p.id, key_or_id)? {
            return self.get(p, sb.id);
        }
        match Uuid::parse_str(key_or_id) {
            Ok(id) => self.get(p, id),
            Err(_) => Err(Error::not_found(format!("sandbox {key_or_id}"))),
        }
    }
}

/// When a TTL of `secs` from `now` lapses (clamped to what a timestamp
/// holds; resolve caps TTLs far below that).
fn expiry(now: chrono::DateTime<Utc>, secs: u64) -> chrono::DateTime<Utc> {
    chrono::TimeDelta::try_seconds(secs.min(i64::MAX as u64 / 1000) as i64)
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}
