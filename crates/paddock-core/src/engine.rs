//! The engine: owns sandboxes, their lifecycle and their state.
//!
//! Every state change goes through [`Engine::transition`], which writes the
//! sandbox and appends its event in one transaction. Exec, files and ports
//! go to the sandbox's agent; start, stop and the rest go to its runtime.

use std::collections::{HashMap, HashSet};
use std::net::SocketAddr;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use chrono::Utc;
use futures::{Stream, StreamExt};
use serde_json::json;
use tokio::sync::{mpsc, RwLock};
use uuid::Uuid;

mod lifecycle;
mod pool;
pub use pool::{PoolConfig, PoolStatus, POOL_OWNER};

use crate::agent::AgentClient;
use crate::error::{Error, Result};
use crate::events::{EventBus, Subscription};
use crate::model::*;
use crate::runtime::{Instance, Liveness, Runtime};
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
}

/// Which registries and repositories each principal may pull from, and
/// who may pull with the daemon's registry credentials. The operator (and
/// the warm pools it configures) pull anything, with the credentials,
/// unless listed in `principals`.
#[derive(Debug, Clone, Default)]
pub struct PullPolicy {
    /// Principal → globs over `registry/repository`
    /// (`127.0.0.1:5000/team/**`, `docker.io/library/*`).
    pub principals: HashMap<String, Vec<String>>,
    /// The globs of principals not listed; `None`: any registry and
    /// repository (an anonymous pull of a public image).
    pub default: Option<Vec<String>>,
    /// Principals besides the operator that may pull with the daemon's
    /// registry credentials.
    pub credentials: Vec<String>,
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
        }
    }
}

/// The port to the image store: resolves a reference to unpacked layers
/// and an image config, pulling it when needed.
#[async_trait::async_trait]
pub trait Images: Send + Sync {
    /// From the cache, else pulled.
    /// With `credentials`, the daemon's registry credentials may be used;
    /// without, a cached image that was pulled with them is pulled again
    /// anonymously, so that the registry decides.
    async fn resolve(&self, reference: &str, credentials: bool) -> Result<ResolvedImage>;
    /// Pulled again (only missing layers are downloaded), with the
    /// daemon's registry credentials or not, reporting progress to
    /// `progress` as it goes.
    async fn pull(
        &self,
        reference: &str,
        credentials: bool,
        progress: Option<ProgressFn>,
    ) -> Result<ImageInfo>;
    /// Where `reference` is pulled from (aliases followed), as
    /// `registry/repository`: what a pull policy judges.
    fn locate(&self, reference: &str) -> Result<String>;
    fn list(&self) -> Vec<ImageInfo>;
    /// The cached image of `reference`, without pulling.
    fn inspect(&self, reference: &str) -> Result<ImageInfo>;
    /// Forgets `reference` (its layers stay until a prune).
    fn remove(&self, reference: &str) -> Result<()>;
    /// Removes cached layers that no image and no path of `in_use` needs;
    /// returns how many.
    async fn prune(&self, in_use: &[String]) -> Result<usize>;
}

/// A running sandbox's live parts.
struct Live {
    agent: AgentClient,
    instance: Instance,
    last_active_ms: AtomicI64,
    persisted_active_ms: AtomicI64,
}

pub struct Engine {
    store: Arc<Store>,
    bus: EventBus,
    runtimes: HashMap<Isolation, Arc<dyn Runtime>>,
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
    cfg: EngineConfig,
}

/// How long a deferred event waits for a transaction to ride in before it
/// gets one of its own: live subscribers see it this much later at most.
const DEFER_FLUSH: std::time::Duration = std::time::Duration::from_millis(20);

/// Writes one event in a transaction of its own and publishes it; its
/// per-sandbox id, or None (logged) when it could not be written.
fn record(
    store: &Store,
    bus: &EventBus,
    id: Uuid,
    owner: &str,
    kind: &str,
    data: serde_json::Value,
) -> Option<i64> {
    let r = store.tx_events(
        |tx| {
            let ev = Store::append_event(tx, id, owner, kind, data)?;
            Ok((ev.id, vec![ev]))
        },
        |evs| bus.publish_all(evs),
    );
    match r {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(sandbox = %id, "event {kind} not recorded: {e}");
            None
        }
    }
}

/// Writes the deferred events and publishes them.
fn flush(store: &Store, bus: &EventBus) {
    if let Err(e) = store.flush_deferred(|evs| bus.publish_all(evs)) {
        tracing::warn!("deferred events not recorded yet: {e}");
    }
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
        Ok(Arc::new(Engine {
            store,
            bus,
            runtimes: runtimes.into_iter().map(|r| (r.isolation(), r)).collect(),
            live: RwLock::new(HashMap::new()),
            key_lock: tokio::sync::Mutex::new(()),
            lifecycles: Default::default(),
            images,
            pools: Default::default(),
            logs,
            attached: tokio::sync::Notify::new(),
            cfg,
        }))
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    fn runtime(&self, iso: Isolation) -> Result<&Arc<dyn Runtime>> {
        self.runtimes.get(&iso).ok_or_else(|| {
            Error::Unsupported(format!(
                "isolation {:?} (no {} backend is available on this daemon; available: {})",
                iso.as_str(),
                iso.as_str(),
                self.runtimes
                    .keys()
                    .map(|i| i.as_str())
                    .collect::<Vec<_>>()
                    .join(", ")
            ))
        })
    }

    // ---- auth ---------------------------------------------------------

    /// The principal a bearer token stands for.
    pub fn authenticate(&self, token: &str) -> Result<Principal> {
        match self
            .store
            .principal_for_hash(&crate::auth::hash_token(token))?
        {
            Some(id) => Ok(Principal { id }),
            None => Err(Error::Unauthenticated("unknown or revoked API key".into())),
        }
    }

    // ---- state --------------------------------------------------------

    /// Changes a sandbox and records `kind` in one transaction.
    fn transition(
        &self,
        id: Uuid,
        kind: &str,
        data: serde_json::Value,
        f: impl FnOnce(&mut Sandbox),
    ) -> Result<Sandbox> {
        self.store.tx_events(
            |tx| {
                let mut sb = Store::sandbox_in(tx, id)?;
                f(&mut sb);
                sb.updated_at = Utc::now();
                Store::put_sandbox(tx, &sb)?;
                let ev = Store::append_event(tx, id, &sb.owner, kind, data)?;
                Ok((sb, vec![ev]))
            },
            |evs| self.bus.publish_all(evs),
        )
    }

    /// Records an activity event; returns its per-sandbox id.
    fn emit(&self, sb: &Sandbox, kind: &str, data: serde_json::Value) -> Option<i64> {
        record(&self.store, &self.bus, sb.id, &sb.owner, kind, data)
    }

    /// Records an activity event on the blocking pool while the caller goes
    /// on: for `exec.request`, whose transaction otherwise delayed the
    /// command (paired runs: the round trip 0.05-0.12 ms shorter, the
    /// daemon's CPU 0.02 ms more for the hand-over). The caller awaits the
    /// write (attempted, as `emit`'s: a failed one is logged) before it
    /// answers. The command may start before its record commits (usually
    /// ~0.1 ms; longer when the store is busy), so a daemon killed in
    /// between leaves a command that ran unrecorded, and a quick command
    /// can finish before its request is numbered.
    fn emit_alongside(
        &self,
        sb: &Sandbox,
        kind: &'static str,
        data: serde_json::Value,
    ) -> impl std::future::Future<Output = Option<i64>> {
        let (store, bus, id, owner) = (
            self.store.clone(),
            self.bus.clone(),
            sb.id,
            sb.owner.clone(),
        );
        // Started now; the future only collects its id.
        let write =
            tokio::task::spawn_blocking(move || record(&store, &bus, id, &owner, kind, data));
        async move {
            write.await.unwrap_or_else(|e| {
                tracing::warn!(sandbox = %id, "event {kind} not recorded: {e}");
                None
            })
        }
    }

    /// Records an event that closes what a synchronously recorded one
    /// opened (`exec.response`, `fs.response`) without a transaction of its
    /// own: it is written with the next event, or within [`DEFER_FLUSH`]
    /// (see [`Store::defer_event`]). An exec's round trip then costs one
    /// SQLite transaction instead of two (daemon CPU per exec: two cost
    /// 0.2 ms of its 0.62).
    fn emit_later(&self, sb: &Sandbox, kind: &str, data: serde_json::Value) {
        self.store.defer_event(sb.id, &sb.owner, kind, data);
    }

    /// Writes deferred events now, so that a read of the log sees them.
    fn flush_events(&self) {
        flush(&self.store, &self.bus);
    }

    /// Checks a file operation against the sandbox's mounts and their ACLs
    /// and records an `fs.request` event; `fs_done` records the
    /// `fs.response`. Without mounts every path is allowed.
    /// The mount that holds `norm` (a normalized path, symlinks followed)
    /// and, when its ACL refuses the operation, why (`path` as asked).
    fn judge_fs(sb: &Sandbox, norm: &str, path: &str, write: bool) -> (String, Option<String>) {
        let operation = if write { "write" } else { "read" };
        match sb.config.mount_of(norm) {
            None => (
                String::new(),
                Some(format!("{path} is outside every mount of this sandbox")),
            ),
            Some(m) => {
                let ok = match m.access(norm) {
                    Access::Rw => true,
                    Access::Ro => !write,
                    Access::Deny => false,
                };
                let why = (!ok).then(|| {
                    format!(
                        "the ACL of mount {} does not allow {operation} access to {path}",
                        m.path
                    )
                });
                (m.path.clone(), why)
            }
        }
    }

    async fn fs_begin(&self, sb: &Sandbox, live: &Live, path: &str, write: bool) -> Result<FsOp> {
        let operation = if write { "write" } else { "read" };
        // (the mount, or "" for none; why it is refused, if it is)
        let (mount, refused) = if sb.config.mounts.is_empty() {
            ("/".to_string(), None)
        } else {
            // Judge where the path really leads: a symlink in a mount must
            // not reach past its ACL.
            let norm = match live.agent.resolve(path).await {
                Ok(r) => normalize_path(&r),
                Err(e @ Error::Invalid { .. }) => return Err(e),
                // An agent without Resolve: the path as written.
                Err(_) => normalize_path(path),
            };
            Self::judge_fs(sb, &norm, path, write)
        };
        let request_id = self.emit(
            sb,
            "fs.request",
            json!({"access": if refused.is_none() { "allowed" } else { "denied" },
                   "mount": mount, "path": path, "operation": operation}),
        );
        if let Some(why) = refused {
            return Err(Error::Forbidden(why));
        }
        Ok(FsOp {
            request_id,
            started: std::time::Instant::now(),
        })
    }

    fn fs_done<T>(&self, sb: &Sandbox, op: FsOp, r: &Result<T>, extra: serde_json::Value) {
        let mut data = json!({"request_id": op.request_id,
                              "duration_ms": op.started.elapsed().as_millis() as u64});
        if let Err(e) = r {
            data["error"] = json!(e.to_string());
        }
        if let (Some(d), Some(x)) = (data.as_object_mut(), extra.as_object()) {
            d.extend(x.clone());
        }
        self.emit_later(sb, "fs.response", data);
    }

    /// The sandbox, if `p` may see it.
    pub fn get(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        match self.store.get_sandbox(id)? {
            Some(sb) if sb.owner == p.id => Ok(sb),
            _ => Err(Error::not_found(format!("sandbox {id}"))),
        }
    }

    pub fn list(&self, p: &Principal, q: &ListQuery) -> Result<Vec<Sandbox>> {
        self.store.list_sandboxes(Some(&p.id), q)
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
            let page = self.list(p, &q)?;
            let n = page.len();
            q.after = page.last().map(|s| s.id);
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

    /// Checks each mount's host directory against the operator's policy
    /// and keeps it resolved (403 naming the field when refused).
    fn check_origins(&self, mounts: &mut [Mount]) -> Result<()> {
        for (i, m) in mounts.iter_mut().enumerate() {
            if let Some(o) = &m.origin {
                m.origin = Some(
                    self.cfg
                        .host_mounts
                        .check(&format!("mounts[{i}].origin"), o)?,
                );
            }
        }
        Ok(())
    }

    // ---- lifecycle ----------------------------------------------------

    /// Creates a sandbox and returns once it takes commands. With a key that
    /// `p` already used, returns that sandbox unchanged and `false`.
    pub async fn create(
        self: &Arc<Self>,
        p: &Principal,
        spec: SandboxSpec,
    ) -> Result<(Sandbox, bool)> {
        self.create_inner(p, spec, true).await
    }

    /// `create`; with `warm`, a spec a warm pool can serve is handed a
    /// pooled sandbox instead of booting one.
    async fn create_inner(
        self: &Arc<Self>,
        p: &Principal,
        spec: SandboxSpec,
        warm: bool,
    ) -> Result<(Sandbox, bool)> {
        let template = match &spec.template {
            Some(name) => Some(self.store.get_template(&p.id, name)?.ok_or_else(|| {
                Error::invalid("template", format!("no template named {name:?}"))
            })?),
            None => None,
        };
        let pool = if warm {
            self.pool_key(p, &spec, template.as_ref())
        } else {
            None
        };
        let spec = match &template {
            Some(t) => spec.with_defaults(&t.defaults),
            None => spec,
        };
        let mut config = spec.resolve(&self.cfg.limits)?;
        self.check_origins(&mut config.mounts)?;
        let runtime = self.runtime(config.isolation)?.clone();
        // A named image is pulled on the caller's behalf (the pull policy,
        // a claim), also when a warm pool holds it booted.
        let mut image = None;
        if let Some(reference) = &config.image {
            // With a key, an existing sandbox is returned before any pull.
            if let Some(k) = &spec.key {
                if let Some(existing) = self.store.find_by_key(&p.id, k)? {
                    return Ok((existing, false));
                }
            }
            image = Some(self.image_for(p, reference).await?);
        }
        if let Some(pool) = pool {
            if let Some(out) = self.take_warm(p, pool, &spec, &config).await? {
                return Ok(out);
            }
        }
        if let Some(img) = image {
            config.apply_image(&spec, img);
        }
        let id = Uuid::new_v4();
        let now = Utc::now();
        let sb = Sandbox {
            id,
            owner: p.id.clone(),
            key: spec.key.clone(),
            labels: spec.labels.clone(),
            template: spec.template.clone(),
            expires_at: config.ttl_secs.map(|t| expiry(now, t)),
            config,
            state: State::Creating,
            message: None,
            created_at: now,
            updated_at: now,
            last_active_at: now,
            ip: None,
        };
        let life = {
            let _guard = match &spec.key {
                Some(_) => Some(self.key_lock.lock().await),
                None => None,
            };
            if let Some(k) = &spec.key {
                if let Some(existing) = self.store.find_by_key(&p.id, k)? {
                    return Ok((existing, false));
                }
            }
            // Taken before the sandbox is stored, held until its boot is
            // done (after the key lock, as a pool's hand-over takes them).
            let life = self.lifecycles.lock(id).await;
            self.store.tx_events(
                |tx| {
                    Store::put_sandbox(tx, &sb)?;
                    let ev = Store::append_event(
                        tx,
                        id,
                        &sb.owner,
                        "sandbox.created",
                        json!({"state": "creating", "isolation": sb.config.isolation}),
                    )?;
                    Ok(((), vec![ev]))
                },
                |evs| self.bus.publish_all(evs),
            )?;
            life
        };
        // Booted in a task of its own: a caller that goes away (a client
        // timing out) must not leave the sandbox half made, `creating`
        // for ever.
        let engine = self.clone();
        let config = sb.config.clone();
        tokio::spawn(async move {
            let _life = life;
            engine.finish_create(runtime, id, config).await
        })
        .await
        .map_err(|e| Error::internal(format!("create {id}: {e}")))?
        .map(|sb| (sb, true))
    }

    /// Boots a stored `creating` sandbox: `running`, or `error` and torn down.
    async fn finish_create(
        &self,
        runtime: Arc<dyn Runtime>,
        id: Uuid,
        config: SandboxConfig,
    ) -> Result<Sandbox> {
        match self.boot(&runtime, id, &config, false).await {
            Ok(ip) => self.transition(id, "sandbox.started", json!({"state": "running"}), |s| {
                s.state = State::Running;
                s.ip = ip;
            }),
            Err(e) => {
                let msg = e.to_string();
                let _ = runtime.destroy(id).await;
                let _ = self.transition(
                    id,
                    "sandbox.error",
                    json!({"state": "error", "message": msg}),
                    |s| {
                        s.state = State::Error;
                        s.message = Some(msg.clone());
                    },
                );
                Err(e)
            }
        }
    }

    /// Starts (or restarts) the runtime side and connects the agent.
    async fn boot(
        &self,
        runtime: &Arc<dyn Runtime>,
        id: Uuid,
        config: &SandboxConfig,
        restart: bool,
    ) -> Result<Option<String>> {
        if let Some(logs) = &self.logs {
            // The agent about to start counts its output from 0.
            logs.new_boot(id)?;
        }
        let instance = if restart {
            runtime.start(id, config).await?
        } else {
            runtime.create(id, config).await?
        };
        let t0 = std::time::Instant::now();
        let agent = AgentClient::connect(&instance.agent, self.cfg.agent_timeout).await?;
        tracing::debug!(sandbox = %id, connect = ?t0.elapsed(), "agent connected");
        self.attach(id, agent, instance.clone(), now_ms()).await;
        Ok(instance.ip.map(|ip| ip.to_string()))
    }

    /// Serves a sandbox's agent; its idle clock starts at `active_ms`.
    async fn attach(&self, id: Uuid, agent: AgentClient, instance: Instance, active_ms: i64) {
        let _wake = Wake(&self.attached);
        self.live.write().await.insert(
            id,
            Arc::new(Live {
                agent,
                instance,
                last_active_ms: AtomicI64::new(active_ms),
                persisted_active_ms: AtomicI64::new(active_ms),
            }),
        );
    }

    pub async fn destroy(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        let sb = self.get(p, id)?;
        self.destroy_inner(sb, "deleted").await
    }

    /// Destroys `sb` as it is when its lifecycle lock is free; if it has
    /// changed hands since the caller read it (a pooled sandbox handed
    /// out), leaves it alone and returns it as it is.
    async fn destroy_inner(&self, sb: Sandbox, reason: &str) -> Result<Sandbox> {
        let _life = self.lifecycles.lock(sb.id).await;
        let sb = match self.store.get_sandbox(sb.id)? {
            Some(now) if now.owner == sb.owner => now,
            Some(now) => return Ok(now),
            None => return Err(Error::not_found(format!("sandbox {}", sb.id))),
        };
        if !sb.state.check(Action::Destroy, sb.id)? {
            return Ok(sb);
        }
        self.live.write().await.remove(&sb.id);
        if let Ok(rt) = self.runtime(sb.config.isolation) {
            rt.destroy(sb.id).await?;
        }
        if let Some(logs) = &self.logs {
            logs.remove(sb.id);
        }
        self.transition(
            sb.id,
            "sandbox.destroyed",
            json!({"state": "destroyed", "reason": reason}),
            |s| {
                s.state = State::Destroyed;
                s.ip = None;
            },
        )
    }

    pub async fn stop(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        let _life = self.lifecycles.lock(id).await;
        let sb = self.get(p, id)?;
        if !sb.state.check(Action::Stop, id)? {
            return Ok(sb);
        }
        self.live.write().await.remove(&id);
        self.runtime(sb.config.isolation)?.stop(id).await?;
        self.transition(id, "sandbox.stopped", json!({"state": "stopped"}), |s| {
            s.state = State::Stopped;
        })
    }

    pub async fn start(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        let _life = self.lifecycles.lock(id).await;
        let sb = self.get(p, id)?;
        if !sb.state.check(Action::Start, id)? {
            return Ok(sb);
        }
        let rt = self.runtime(sb.config.isolation)?.clone();
        let ip = self.boot(&rt, id, &sb.config, true).await?;
        self.transition(id, "sandbox.started", json!({"state": "running"}), |s| {
            s.state = State::Running;
            s.ip = ip;
            s.last_active_at = Utc::now();
        })
    }

    pub async fn pause(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        let _life = self.lifecycles.lock(id).await;
        let sb = self.get(p, id)?;
        if !sb.state.check(Action::Pause, id)? {
            return Ok(sb);
        }
        self.runtime(sb.config.isolation)?.pause(id).await?;
        self.transition(id, "sandbox.paused", json!({"state": "paused"}), |s| {
            s.state = State::Paused;
        })
    }

    pub async fn resume(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        let _life = self.lifecycles.lock(id).await;
        let sb = self.get(p, id)?;
        if !sb.state.check(Action::Resume, id)? {
            return Ok(sb);
        }
        let rt = self.runtime(sb.config.isolation)?.clone();
        rt.resume(id).await?;
        if !self.live.read().await.contains_key(&id) {
            if let (_, Some(inst)) = rt.inspect(id).await? {
                let agent = AgentClient::connect(&inst.agent, self.cfg.agent_timeout).await?;
                self.attach(id, agent, inst, now_ms()).await;
            }
        }
        self.transition(id, "sandbox.resumed", json!({"state": "running"}), |s| {
            s.state = State::Running;
            s.last_active_at = Utc::now();
        })
    }

    /// Resets the idle clock (and nothing else).
    pub async fn touch(&self, p: &Principal, id: Uuid) -> Result<Sandbox> {
        let sb = self.get(p, id)?;
        sb.state.check(Action::Touch, id)?;
        let now = now_ms();
        if let Some(l) = self.live.read().await.get(&id) {
            l.last_active_ms.store(now, Ordering::Relaxed);
            l.persisted_active_ms.store(now, Ordering::Relaxed);
        }
        self.persist_active(id, now)?;
        self.get(p, id)
    }

    // ---- exec ---------------------------------------------------------

    /// Fills in what the sandbox's image says a command runs as.
    fn with_defaults(sb: &Sandbox, req: &ExecRequest) -> ExecRequest {
        let mut r = req.clone();
        if r.user.is_none() {
            r.user = sb.config.user.clone();
        }
        r
    }

    pub async fn exec(&self, p: &Principal, id: Uuid, req: &ExecRequest) -> Result<ExecResult> {
        req.validate(&self.cfg.limits)?;
        let (sb, live) = self.live_for(p, id).await?;
        let request = self.emit_alongside(&sb, "exec.request", exec_request_data(&sb, req));
        let r = live.agent.exec(&Self::with_defaults(&sb, req)).await;
        let request_id = request.await;
        self.emit_later(&sb, "exec.response", exec_response_data(request_id, &r));
        r
    }

    /// Starts a command and streams its events; `control` feeds it.
    pub async fn exec_stream(
        self: &Arc<Self>,
        p: &Principal,
        id: Uuid,
        req: &ExecRequest,
        control: mpsc::Receiver<ExecControl>,
    ) -> Result<impl Stream<Item = Result<ExecEvent>> + Send + 'static> {
        req.validate(&self.cfg.limits)?;
        let (sb, live) = self.live_for(p, id).await?;
        let mut data = exec_request_data(&sb, req);
        data["pty"] = json!(req.pty.is_some());
        let request_id = self.emit(&sb, "exec.request", data);
        let s = match live
            .agent
            .exec_stream(&Self::with_defaults(&sb, req), control)
            .await
        {
            Ok(s) => s,
            Err(e) => {
                let r: Result<ExecResult> = Err(e.clone());
                self.emit_later(&sb, "exec.response", exec_response_data(request_id, &r));
                return Err(e);
            }
        };
        let engine = self.clone();
        Ok(s.inspect(move |ev| {
            if let Ok(ExecEvent::Exit(r)) = ev {
                engine.emit_later(
                    &sb,
                    "exec.response",
                    exec_response_data(request_id, &Ok(r.clone())),
                );
            }
        }))
    }

    // ---- files --------------------------------------------------------

    fn check_path(path: &str) -> Result<()> {
        if path.is_empty() {
            return Err(Error::invalid("path", "must not be empty"));
        }
        if path.contains('\0') {
            return Err(Error::invalid("path", "must not contain NUL"));
        }
        if path.split('/').any(|c| c == "..") {
            return Err(Error::invalid("path", "must not contain '..'"));
        }
        Ok(())
    }

    /// A file's bytes, and how many there are when that is known before
    /// reading to the end (`None` for a file of `/proc`, say). Symlinks are
    /// followed inside the sandbox; anything but a regular file is refused.
    pub async fn read_file(
        &self,
        p: &Principal,
        id: Uuid,
        path: &str,
    ) -> Result<(
        Option<u64>,
        impl Stream<Item = Result<Bytes>> + Send + 'static,
    )> {
        Self::check_path(path)?;
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, false).await?;
        let r = async {
            let (opened, s) = live.agent.read_file(path).await?;
            // Judged again on the file the agent opened: a symlink swapped
            // after `fs_begin` resolved it must not reach past an ACL.
            if let (false, Some(resolved)) = (sb.config.mounts.is_empty(), &opened.resolved) {
                if let (_, Some(why)) = Self::judge_fs(&sb, &normalize_path(resolved), path, false)
                {
                    return Err(Error::Forbidden(why));
                }
            }
            Ok((opened.size, s))
        }
        .await;
        let size = r.as_ref().ok().and_then(|(n, _)| *n);
        self.fs_done(&sb, op, &r, json!({"size": size}));
        r
    }

    pub async fn write_file<S>(
        &self,
        p: &Principal,
        id: Uuid,
        path: &str,
        opts: &WriteOptions,
        data: S,
    ) -> Result<FileInfo>
    where
        S: Stream<Item = Result<Bytes>> + Send + 'static,
    {
        Self::check_path(path)?;
        if let Some(m) = opts.mode {
            if m > 0o7777 {
                return Err(Error::invalid("mode", "must be at most 0o7777"));
            }
        }
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, true).await?;
        let r = live.agent.write_file(path, opts, data).await;
        let size = r.as_ref().map(|i| i.size).unwrap_or(0);
        self.fs_done(&sb, op, &r, json!({"size": size}));
        r
    }

    pub async fn list_dir(&self, p: &Principal, id: Uuid, path: &str) -> Result<Vec<FileInfo>> {
        Self::check_path(path)?;
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, false).await?;
        let r = live.agent.list_dir(path).await;
        self.fs_done(&sb, op, &r, json!({}));
        r
    }

    pub async fn stat(&self, p: &Principal, id: Uuid, path: &str) -> Result<FileInfo> {
        Self::check_path(path)?;
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, false).await?;
        let r = live.agent.stat(path).await;
        self.fs_done(&sb, op, &r, json!({}));
        r
    }

    pub async fn remove(&self, p: &Principal, id: Uuid, path: &str, recursive: bool) -> Result<()> {
        Self::check_path(path)?;
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, true).await?;
        let r = live.agent.remove(path, recursive).await;
        self.fs_done(&sb, op, &r, json!({"removed": true}));
        r
    }

    pub async fn rename(&self, p: &Principal, id: Uuid, from: &str, to: &str) -> Result<()> {
        Self::check_path(from)
            .map_err(|_| Error::invalid("from", "must be a path without '..'"))?;
        Self::check_path(to).map_err(|_| Error::invalid("to", "must be a path without '..'"))?;
        let (sb, live) = self.live_for(p, id).await?;
        let op_from = self.fs_begin(&sb, &live, from, true).await?;
        let op = match self.fs_begin(&sb, &live, to, true).await {
            Ok(op) => op,
            Err(e) => {
                self.fs_done::<()>(&sb, op_from, &Err(e.clone()), json!({}));
                return Err(e);
            }
        };
        let r = live.agent.rename(from, to).await;
        self.fs_done(&sb, op_from, &r, json!({"renamed_to": to}));
        self.fs_done(&sb, op, &r, json!({"renamed_from": from}));
        r
    }

    pub async fn mkdir(
        &self,
        p: &Principal,
        id: Uuid,
        path: &str,
        parents: bool,
        mode: Option<u32>,
    ) -> Result<()> {
        Self::check_path(path)?;
        let (sb, live) = self.live_for(p, id).await?;
        let op = self.fs_begin(&sb, &live, path, true).await?;
        let r = live.agent.mkdir(path, parents, mode).await;
        self.fs_done(&sb, op, &r, json!({"mkdir": true}));
        r
    }

    // ---- ports, proxy, metrics, logs ------------------------------------

    pub async fn ports(&self, p: &Principal, id: Uuid) -> Result<Vec<Port>> {
        let (sb, live) = self.live_for(p, id).await?;
        let listening = live.agent.ports().await?;
        let mut out: Vec<Port> = Vec::new();
        for l in listening {
            let port = l.port as u16;
            if out.iter().any(|o| o.port == port) {
                continue;
            }
            out.push(Port {
                port,
                address: l.address,
                protocol: l.protocol,
                declared: sb.config.ports.contains(&port),
                listening: true,
            });
        }
        for &d in &sb.config.ports {
            if !out.iter().any(|o| o.port == d) {
                out.push(Port {
                    port: d,
                    address: String::new(),
                    protocol: "tcp".into(),
                    declared: true,
                    listening: false,
                });
            }
        }
        out.sort_by_key(|p| p.port);
        Ok(out)
    }

    /// uname(2) as the sandbox sees it, asked of its agent.
    pub async fn platform(&self, p: &Principal, id: Uuid) -> Result<Platform> {
        let (_, live) = self.live_for(p, id).await?;
        live.agent.platform().await
    }

    /// Where the proxy connects for `port` of the sandbox.
    pub async fn proxy_target(&self, p: &Principal, id: Uuid, port: u16) -> Result<SocketAddr> {
        if port == 0 {
            return Err(Error::invalid("port", "0 is not a port"));
        }
        let (_, live) = self.live_for(p, id).await?;
        match live.instance.ip {
            Some(ip) => Ok(SocketAddr::new(ip, port)),
            None => Err(Error::Unsupported(
                "a port proxy for this sandbox's backend".into(),
            )),
        }
    }

    pub async fn metrics(&self, p: &Principal, id: Uuid) -> Result<Metrics> {
        let sb = self.get(p, id)?;
        sb.state.check(Action::Metrics, id)?;
        let rt = self.runtime(sb.config.isolation)?;
        match rt.metrics(id).await {
            // Its cgroup is gone: it died and the monitor has not marked
            // it yet (it does within two passes), or a stop is under way.
            // Its state refuses the call.
            Err(Error::Unavailable { reason, .. }) => Err(Error::Conflict(format!(
                "sandbox {id} is not running ({reason}: its processes exited, or it is being stopped)"
            ))),
            r => r,
        }
    }

    pub async fn logs(&self, p: &Principal, id: Uuid, offset: u64) -> Result<Vec<u8>> {
        if offset > i64::MAX as u64 {
            return Err(Error::invalid("offset", "must be at most 2^63-1"));
        }
        let sb = self.get(p, id)?;
        sb.state.check(Action::Logs, id)?;
        Ok(match &self.logs {
            Some(logs) => logs.read(id, offset)?,
            None => Vec::new(),
        })
    }

    // ---- events -------------------------------------------------------

    /// Events of one sandbox (after its per-sandbox id `after`), or of all
    /// of `p`'s sandboxes (after the global sequence number `after`).
    pub fn events(
        &self,
        p: &Principal,
        sandbox: Option<Uuid>,
        after: i64,
    ) -> Result<impl Stream<Item = Event> + Send + 'static> {
        if let Some(id) = sandbox {
            self.get(p, id)?;
        }
        self.flush_events();
        Ok(self.bus.subscribe(
            self.store.clone(),
            Subscription {
                owner: Some(p.id.clone()),
                sandbox,
                after,
            },
        ))
    }

    /// The daemon-wide sequence number of the newest event: subscribe
    /// after it to see only what happens from now on.
    pub fn last_event_seq(&self) -> Result<i64> {
        self.flush_events();
        self.store.last_seq()
    }

    // ---- live configuration -------------------------------------------

    /// Applies what may change while a sandbox runs: mounts and their ACLs,
    /// egress rules, the snapshot policy and the idle timeout. All or
    /// nothing: on any error nothing changes. Records a `config.apply`
    /// event either way (with `warnings`, what the caller kept unchanged).
    pub async fn update_config(
        &self,
        p: &Principal,
        id: Uuid,
        u: ConfigUpdate,
    ) -> Result<ConfigApplied> {
        let sb = self.get(p, id)?;
        let cur = &sb.config;
        let mounts = u.mounts.clone().unwrap_or_else(|| cur.mounts.clone());
        let egress = u.egress.clone().unwrap_or_else(|| cur.egress.clone());
        let snapshot = u.snapshot.clone().unwrap_or_else(|| cur.snapshot.clone());
        let idle = u.idle_timeout_secs.unwrap_or(cur.idle_timeout_secs);
        let mut mounts = mounts;
        let (mounts_added, mounts_removed) = added_removed(&cur.mounts, &mounts);
        let (egress_added, egress_removed) = added_removed(
            cur.egress.as_deref().unwrap_or_default(),
            egress.as_deref().unwrap_or_default(),
        );
        let changes = ConfigChanges {
            mounts_added,
            mounts_removed,
            egress_added,
            egress_removed,
            warnings: u.warnings.clone(),
        };

        let check = async {
            validate_mounts(&mounts)?;
            if idle.is_some_and(|i| i > self.cfg.limits.max_idle_timeout_secs) {
                return Err(Error::invalid(
                    "idle_timeout_secs",
                    format!(
                        "must be at most {} seconds",
                        self.cfg.limits.max_idle_timeout_secs
                    ),
                ));
            }
            // A host directory already bound keeps its resolved path; a
            // new one is checked against the operator's roots first.
            for (i, m) in mounts.iter_mut().enumerate() {
                if let Some(o) = &m.origin {
                    if !cur
                        .mounts
                        .iter()
                        .any(|c| c.path == m.path && c.origin == m.origin)
                    {
                        m.origin = Some(
                            self.cfg
                                .host_mounts
                                .check(&format!("mounts[{i}].origin"), o)?,
                        );
                    }
                }
            }
            if let Some(e) = &egress {
                validate_egress(e)?;
            }
            sb.state.check(Action::UpdateConfig, id)?;
            for m in &changes.mounts_added {
                if m.origin.is_some()
                    && !cur
                        .mounts
                        .iter()
                        .any(|c| c.path == m.path && c.origin == m.origin)
                {
                    return Err(Error::invalid(
                        "mounts",
                        format!(
                            "a host directory cannot be bound at {} while the sandbox runs",
                            m.path
                        ),
                    ));
                }
            }
            // New private mounts need their directory.
            let new_dirs: Vec<&Mount> = changes
                .mounts_added
                .iter()
                .filter(|m| m.origin.is_none() && !cur.mounts.iter().any(|c| c.path == m.path))
                .collect();
            if !new_dirs.is_empty() {
                let (_, live) = self.live_for(p, id).await?;
                for m in new_dirs {
                    live.agent.mkdir(&m.path, true, None).await?;
                }
            }
            Ok(())
        }
        .await;
        let event = |ok: bool, err: Option<&Error>| json!({"success": ok, "changes": changes, "error": err.map(|e| e.to_string())});
        match check {
            Err(e) => {
                self.emit(&sb, "config.apply", event(false, Some(&e)));
                Ok(ConfigApplied {
                    applied: false,
                    sandbox: sb,
                    changes,
                    error: Some(e.to_string()),
                })
            }
            Ok(()) => {
                let data = event(true, None);
                let sb = self.transition(id, "config.apply", data, |s| {
                    s.config.mounts = mounts.clone();
                    s.config.egress = egress.clone();
                    s.config.snapshot = snapshot.clone();
                    s.config.idle_timeout_secs = idle;
                })?;
                Ok(ConfigApplied {
                    applied: true,
                    sandbox: sb,
                    changes,
                    error: None,
                })
            }
        }
    }

    /// Looks a sandbox up by its key, or by its id.
    pub fn find(&self, p: &Principal, key_or_id: &str) -> Result<Sandbox> {
        if let Some(sb) = self.store.find_by_key(&p.id, key_or_id)? {
            return Ok(sb);
        }
        match Uuid::parse_str(key_or_id) {
            Ok(id) => self.get(p, id),
            Err(_) => Err(Error::not_found(format!("sandbox {key_or_id}"))),
        }
    }

    // ---- templates ------------------------------------------------------

    /// Stores a template: its defaults are validated as a sandbox spec
    /// would be, and its image is pulled now, so that creates from it find
    /// the image cached.
    pub async fn create_template(
        &self,
        p: &Principal,
        name: &str,
        defaults: SandboxSpec,
        warm_pool: usize,
    ) -> Result<Template> {
        crate::model::validate_template_name(name)?;
        if warm_pool > crate::model::MAX_TEMPLATE_POOL {
            return Err(Error::invalid(
                "warm_pool",
                format!("at most {}", crate::model::MAX_TEMPLATE_POOL),
            ));
        }
        if defaults.key.is_some() {
            return Err(Error::invalid("key", "a template has no idempotency key"));
        }
        if defaults.template.is_some() {
            return Err(Error::invalid("template", "a template cannot name another"));
        }
        let mut config = defaults.resolve(&self.cfg.limits)?;
        self.check_origins(&mut config.mounts)?;
        self.runtime(config.isolation)?;
        if self.store.get_template(&p.id, name)?.is_some() {
            return Err(Error::Conflict(format!(
                "a template named {name:?} already exists"
            )));
        }
        if warm_pool > 0 {
            let pooled: usize = self
                .store
                .list_templates(&p.id)?
                .iter()
                .map(|t| t.warm_pool)
                .sum();
            if pooled + warm_pool > crate::model::MAX_POOLED_PER_OWNER {
                return Err(Error::invalid(
                    "warm_pool",
                    format!(
                        "your templates keep {pooled} sandboxes pooled; at most {} in all",
                        crate::model::MAX_POOLED_PER_OWNER
                    ),
                ));
            }
        }
        if let Some(reference) = &config.image {
            self.image_for(p, reference).await?;
        }
        let t = Template {
            name: name.to_string(),
            owner: p.id.clone(),
            defaults,
            warm_pool,
            created_at: Utc::now(),
        };
        self.store.insert_template(&t)?;
        if warm_pool > 0 {
            self.pools.refill.notify_one();
        }
        Ok(t)
    }

    pub fn list_templates(&self, p: &Principal) -> Result<Vec<Template>> {
        self.store.list_templates(&p.id)
    }

    pub fn get_template(&self, p: &Principal, name: &str) -> Result<Template> {
        self.store
            .get_template(&p.id, name)?
            .ok_or_else(|| Error::not_found(format!("template {name:?}")))
    }

    pub async fn delete_template(&self, p: &Principal, name: &str) -> Result<()> {
        if self.store.delete_template(&p.id, name)? {
            self.drain_template_pool(&p.id, name).await;
            Ok(())
        } else {
            Err(Error::not_found(format!("template {name:?}")))
        }
    }

    // ---- images ---------------------------------------------------------

    fn images(&self) -> Result<&Arc<dyn Images>> {
        self.images.as_ref().ok_or_else(|| {
            Error::Unsupported("named images (this daemon has no image store)".into())
        })
    }

    /// Whether `p` may pull `reference` under the pull policy (a refusal
    /// names the image), and whether with the daemon's registry credentials.
    fn pull_rights(&self, p: &Principal, reference: &str) -> Result<bool> {
        let privileged = p.is_operator() || p.id == pool::POOL_OWNER;
        let policy = &self.cfg.pull_policy;
        let globs = match policy.principals.get(&p.id) {
            Some(g) => Some(g),
            None if privileged => None,
            None => policy.default.as_ref(),
        };
        if let Some(globs) = globs {
            let from = self.images()?.locate(reference)?;
            if !globs.iter().any(|g| crate::model::glob_match(g, &from)) {
                return Err(Error::Forbidden(format!(
                    "image {reference}: the pull policy does not let {} pull from {from}",
                    p.id
                )));
            }
        }
        Ok(privileged || policy.credentials.contains(&p.id))
    }

    /// A registry's refusal of an anonymous pull, said as such.
    fn refused(credentials: bool, e: Error) -> Error {
        match e {
            Error::Forbidden(why) if !credentials => Error::Forbidden(format!(
                "{why} (pulled anonymously: the daemon's registry credentials are the operator's)"
            )),
            e => e,
        }
    }

    /// The image `p` creates a sandbox or a template from: pulled on its
    /// behalf (the policy judges it; the cache serves it only as `p` could
    /// have pulled it) and claimed by it.
    async fn image_for(&self, p: &Principal, reference: &str) -> Result<ResolvedImage> {
        let credentials = self.pull_rights(p, reference)?;
        let img = self
            .images()?
            .resolve(reference, credentials)
            .await
            .map_err(|e| Self::refused(credentials, e))?;
        self.store.claim_image(&p.id, reference)?;
        Ok(img)
    }

    pub async fn pull_image(
        &self,
        p: &Principal,
        reference: &str,
        progress: Option<ProgressFn>,
    ) -> Result<ImageInfo> {
        if reference.trim().is_empty() {
            return Err(Error::invalid("reference", "must not be empty"));
        }
        let credentials = self.pull_rights(p, reference)?;
        let info = self
            .images()?
            .pull(reference, credentials, progress)
            .await
            .map_err(|e| Self::refused(credentials, e))?;
        self.store.claim_image(&p.id, reference)?;
        Ok(info)
    }

    /// The images `p` pulled (every cached one for the operator).
    pub fn list_images(&self, p: &Principal) -> Result<Vec<ImageInfo>> {
        let all = self.images()?.list();
        if p.is_operator() {
            return Ok(all);
        }
        let mine: std::collections::HashSet<String> =
            self.store.images_of(&p.id)?.into_iter().collect();
        Ok(all
            .into_iter()
            .filter(|i| mine.contains(&i.reference))
            .collect())
    }

    pub fn inspect_image(&self, p: &Principal, reference: &str) -> Result<ImageInfo> {
        if !p.is_operator() && !self.store.holds_image(&p.id, reference)? {
            return Err(Error::not_found(format!("image {reference} in the cache")));
        }
        self.images()?.inspect(reference)
    }

    /// Drops `p`'s claim on an image; the cache entry goes with the last
    /// claim (a sandbox standing on its layers keeps them: a prune never
    /// removes those). The operator's removal drops every claim.
    pub fn remove_image(&self, p: &Principal, reference: &str) -> Result<()> {
        if p.is_operator() {
            self.store.release_image(None, reference)?;
            return self.images()?.remove(reference);
        }
        let (held, left) = self.store.release_image(Some(&p.id), reference)?;
        if !held {
            return Err(Error::not_found(format!("image {reference} in the cache")));
        }
        if left == 0 {
            match self.images()?.remove(reference) {
                Err(Error::NotFound { .. }) | Ok(()) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }

    /// Removes unused cached layers; never one a sandbox that still has a
    /// filesystem (running, paused or stopped) stands on. The operator's.
    pub async fn prune_images(&self, p: &Principal) -> Result<usize> {
        if !p.is_operator() {
            return Err(Error::Forbidden(
                "pruning the image cache is the operator's".into(),
            ));
        }
        let in_use: Vec<String> = self
            .store
            .live_sandboxes()?
            .into_iter()
            .filter_map(|sb| sb.config.resolved_image)
            .flat_map(|img| img.layers)
            .collect();
        self.images()?.prune(&in_use).await
    }

    // ---- background -----------------------------------------------------

    /// Serves one sandbox again after a restart, if its backend still has
    /// it in the state the store recorded. A running one gets an agent
    /// client that connects on first use; `verify_agents` asks each agent
    /// later, so that the daemon serves again without waiting on a round
    /// trip to every sandbox.
    async fn reattach(&self, sb: &Sandbox, rt: &dyn Runtime) -> Result<bool> {
        match (sb.state, rt.inspect(sb.id).await?) {
            (State::Running, (Liveness::Running, Some(inst))) => {
                let agent = AgentClient::lazy(&inst.agent)?;
                // The idle clock goes on from where the store left it.
                let at = sb.last_active_at.timestamp_millis();
                self.attach(sb.id, agent, inst, at).await;
                Ok(true)
            }
            (State::Paused, (Liveness::Paused, _)) => Ok(false),
            (State::Stopped, (Liveness::Stopped, _)) => Ok(false),
            (state, (seen, _)) => Err(Error::Unavailable {
                what: format!("sandbox {}", sb.id),
                reason: format!(
                    "it was {} but is {seen:?} after the daemon restarted",
                    state.as_str()
                ),
            }),
        }
    }

    /// Finds, after a restart, the sandboxes that are still there and
    /// serves them again; marks and cleans up those that died. Running
    /// ones are checked with their agents in the background
    /// (`verify_agents`), after this returns.
    pub async fn recover(self: &Arc<Self>) -> Result<()> {
        let mut keep = Vec::new();
        let mut attached = Vec::new();
        for sb in self.store.live_sandboxes()? {
            let Ok(rt) = self.runtime(sb.config.isolation).cloned() else {
                keep.push(sb.id);
                continue;
            };
            match self.reattach(&sb, rt.as_ref()).await {
                Ok(is_attached) => {
                    keep.push(sb.id);
                    if is_attached {
                        attached.push(sb.id);
                    }
                }
                Err(e) => {
                    let msg = e.to_string();
                    tracing::warn!(sandbox = %sb.id, "not recovered: {msg}");
                    let _life = self.lifecycles.lock(sb.id).await;
                    self.mark_died(rt.as_ref(), sb.id, msg).await?;
                }
            }
        }
        tracing::info!(
            "recovered {} sandboxes ({} running)",
            keep.len(),
            attached.len()
        );
        let this = self.clone();
        tokio::spawn(async move { this.verify_agents(attached).await });
        for rt in self.runtimes.values() {
            match rt.gc(&keep).await {
                Ok(0) => {}
                Ok(n) => tracing::info!(
                    "removed {n} leftover sandboxes of the {} backend",
                    rt.isolation().as_str()
                ),
                Err(e) => tracing::warn!("gc of {} failed: {e}", rt.isolation().as_str()),
            }
        }
        Ok(())
    }

    /// Asks the agents of sandboxes reattached after a restart who they
    /// are, many at once; one that does not answer in time, or speaks
    /// another protocol, is marked dead and cleaned up.
    async fn verify_agents(&self, ids: Vec<Uuid>) {
        let checked = futures::stream::iter(ids)
            .map(|id| async move {
                let live = self.live.read().await.get(&id).cloned();
                let r = match &live {
                    Some(l) => l.agent.check(self.cfg.agent_timeout).await,
                    None => Ok(()),
                };
                (id, live, r)
            })
            .buffer_unordered(64);
        futures::pin_mut!(checked);
        while let Some((id, live, r)) = checked.next().await {
            let Err(e) = r else { continue };
            // Only if nothing replaced it meanwhile (a stop, a destroy):
            // judged under its lifecycle lock, compared and removed under
            // the map's.
            let _life = self.lifecycles.lock(id).await;
            let Some(live) = live else { continue };
            let Some(rt) = self.unserve_running(id, Some(&live)).await else {
                continue;
            };
            let msg = format!("its agent did not answer after the daemon restarted: {e}");
            tracing::warn!(sandbox = %id, "{msg}");
            if let Err(e) = self.mark_died(rt.as_ref(), id, msg).await {
                tracing::warn!(sandbox = %id, "{e}");
            }
        }
    }

    /// Destroys every sandbox this daemon's store knows (`paddock serve
    /// --cleanup`), whatever the backends hold beyond that, and what they
    /// set up on the host for sandboxes (the bridge and its NAT rules).
    pub async fn destroy_all(&self) -> Result<usize> {
        let mut n = 0;
        for sb in self.store.live_sandboxes()? {
            self.destroy_inner(sb, "cleanup").await?;
            n += 1;
        }
        for rt in self.runtimes.values() {
            n += rt.gc(&[]).await?;
            rt.shutdown().await;
            rt.teardown().await;
        }
        Ok(n)
    }

    /// Lets the backends release what they keep ready (pools); running
    /// sandboxes are left alone.
    pub async fn shutdown(&self) {
        self.flush_events();
        for rt in self.runtimes.values() {
            rt.shutdown().await;
        }
        // What finished meanwhile.
        self.flush_events();
    }

    /// One pass of the reaper: destroys sandboxes whose TTL or idle timeout
    /// lapsed. Returns how many it destroyed.
    pub async fn reap_once(&self) -> usize {
        let now = Utc::now();
        let Ok(all) = self.store.live_sandboxes() else {
            return 0;
        };
        let mut n = 0;
        for sb in all {
            let expired = sb.expires_at.is_some_and(|t| t <= now);
            let idle = match sb.config.idle_timeout_secs {
                Some(secs) => {
                    let last = match self.live.read().await.get(&sb.id) {
                        Some(l) => l.last_active_ms.load(Ordering::Relaxed),
                        None => sb.last_active_at.timestamp_millis(),
                    };
                    now.timestamp_millis() - last >= (secs as i64).saturating_mul(1000)
                        && sb.state == State::Running
                }
                None => false,
            };
            if expired || idle {
                let reason = if expired { "ttl" } else { "idle" };
                let id = sb.id;
                match self.destroy_inner(sb, reason).await {
                    Ok(_) => n += 1,
                    Err(e) => tracing::warn!(sandbox = %id, "reaper: {e}"),
                }
            }
        }
        n
    }

    pub fn spawn_reaper(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(engine.cfg.reap_interval);
            loop {
                tick.tick().await;
                engine.reap_once().await;
            }
        })
    }

    /// Watches running sandboxes: the main process's output is followed
    /// (`follow_main_output`: stored on the host, and `stdio` events), and
    /// sandboxes that asked for it get a `resource.usage` event every
    /// `usage_events_secs`.
    pub fn spawn_monitor(self: &Arc<Self>) -> tokio::task::JoinHandle<()> {
        let engine = self.clone();
        tokio::spawn(async move {
            // Each running sandbox's follower, and when it was started (one
            // that ended, its agent gone for a moment, starts again after
            // a second).
            let mut followers: HashMap<Uuid, (tokio::task::JoinHandle<()>, std::time::Instant)> =
                HashMap::new();
            let mut usage_due: HashMap<Uuid, std::time::Instant> = HashMap::new();
            // What to watch in each sandbox, read once: (sandbox, has a main
            // process, usage interval). None: nothing to watch.
            let mut watch: HashMap<Uuid, Option<(Sandbox, bool, Option<u64>)>> = HashMap::new();
            let mut tick = tokio::time::interval(std::time::Duration::from_millis(250));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            let mut round: u64 = 0;
            let mut checked_round: u64 = 0;
            let mut dead_seen: HashMap<Uuid, u32> = HashMap::new();
            loop {
                // A sandbox that was just attached is looked at at once
                // (its main process's output followed from its start).
                tokio::select! {
                    _ = tick.tick() => round += 1,
                    _ = engine.attached.notified() => {}
                }
                let ids: HashSet<Uuid> = engine.live.read().await.keys().copied().collect();
                if round.is_multiple_of(4) && round != checked_round {
                    checked_round = round;
                    engine.check_alive(&ids, &mut dead_seen).await;
                }
                followers.retain(|id, (task, _)| {
                    let keep = ids.contains(id);
                    if !keep {
                        task.abort();
                    }
                    keep
                });
                usage_due.retain(|id, _| ids.contains(id));
                watch.retain(|id, _| ids.contains(id));
                for id in ids {
                    let entry = match watch.get(&id) {
                        Some(e) => e.clone(),
                        None => {
                            let Ok(Some(sb)) = engine.store.get_sandbox(id) else {
                                continue;
                            };
                            let main = !sb.config.main_process().is_empty();
                            let usage = sb.config.usage_events_secs.filter(|s| *s > 0);
                            // A pooled sandbox changes owner at hand-over:
                            // read it again until then.
                            let pooled = sb.owner == pool::POOL_OWNER;
                            let e = (main || usage.is_some()).then_some((sb, main, usage));
                            if !pooled {
                                watch.insert(id, e.clone());
                            }
                            e
                        }
                    };
                    let Some((sb, main, usage)) = entry else {
                        continue;
                    };
                    let Ok(rt) = engine.runtime(sb.config.isolation) else {
                        continue;
                    };
                    // (A pooled sandbox's output waits in its agent until
                    // its hand-over: its events are the new owner's.)
                    if main && sb.owner != pool::POOL_OWNER {
                        let due = followers.get(&id).is_none_or(|(task, at)| {
                            task.is_finished() && at.elapsed() >= std::time::Duration::from_secs(1)
                        });
                        if due {
                            let task = tokio::spawn(engine.clone().follow_main_output(sb.clone()));
                            followers.insert(id, (task, std::time::Instant::now()));
                        }
                    }
                    if let Some(secs) = usage {
                        let now = std::time::Instant::now();
                        let due = *usage_due.entry(id).or_insert(now);
                        if now >= due {
                            usage_due.insert(id, now + std::time::Duration::from_secs(secs));
                            if let Ok(m) = rt.metrics(id).await {
                                engine.emit(
                                    &sb,
                                    "resource.usage",
                                    json!({"cpu_percent": m.cpu_percent, "memory_bytes": m.memory_bytes}),
                                );
                            }
                        }
                    }
                }
            }
        })
    }

    /// Follows a running sandbox's main-process output from where the
    /// store left off: appends it to the host's log (`logs::LogStore`) and
    /// publishes it as `stdio` events. Ends when the agent goes.
    async fn follow_main_output(self: Arc<Self>, sb: Sandbox) {
        let Some(live) = self.live.read().await.get(&sb.id).cloned() else {
            return;
        };
        let mut from = self.logs.as_ref().map_or(0, |l| l.position(sb.id).agent);
        let mut output = match live.agent.main_output(from).await {
            Ok(s) => Box::pin(s),
            Err(e) => {
                tracing::debug!(sandbox = %sb.id, "main output: {e}");
                return;
            }
        };
        let mut text = crate::text::Utf8Chunks::default();
        while let Some(Ok((offset, data))) = output.next().await {
            from = match &self.logs {
                Some(logs) => match logs.append(sb.id, offset, &data) {
                    Ok(next) => next,
                    Err(e) => {
                        tracing::warn!(sandbox = %sb.id, "main output not stored: {e}");
                        offset + data.len() as u64
                    }
                },
                None => offset + data.len() as u64,
            };
            let t = text.push(&data);
            if !t.is_empty() {
                self.emit(&sb, "stdio", json!({"stdout": t}));
            }
        }
        tracing::debug!(sandbox = %sb.id, at = from, "main output ended");
    }

    /// Stops serving sandbox `id` if it is still `running` and served (by
    /// `expect`, when given: not by a client made since) and returns its
    /// backend; the caller holds its lifecycle lock and is about to mark
    /// it dead.
    async fn unserve_running(
        &self,
        id: Uuid,
        expect: Option<&Arc<Live>>,
    ) -> Option<Arc<dyn Runtime>> {
        let mut map = self.live.write().await;
        let served = match (expect, map.get(&id)) {
            (Some(a), Some(b)) => Arc::ptr_eq(a, b),
            (None, Some(_)) => true,
            (_, None) => false,
        };
        let rt = match self.store.get_sandbox(id) {
            Ok(Some(sb)) if served && sb.state == State::Running => {
                self.runtime(sb.config.isolation).ok().cloned()
            }
            _ => None,
        }?;
        map.remove(&id);
        Some(rt)
    }

    /// Cleans up a sandbox whose processes are gone and records it:
    /// `sandbox.died`, state `error` with `msg`. The caller holds its
    /// lifecycle lock and has judged it dead under that lock.
    async fn mark_died(&self, rt: &dyn Runtime, id: Uuid, msg: String) -> Result<Sandbox> {
        self.pools.forget(id);
        let _ = rt.destroy(id).await;
        self.transition(
            id,
            "sandbox.died",
            json!({"state": "error", "message": msg}),
            |s| {
                s.state = State::Error;
                s.message = Some(msg.clone());
                s.ip = None;
            },
        )
    }

    /// Marks sandboxes whose init process is gone (seen twice, a second
    /// apart, so that a stop or destroy under way is not taken for a death):
    /// `sandbox.died`, state `error`, their resources cleaned up.
    async fn check_alive(&self, ids: &HashSet<Uuid>, dead_seen: &mut HashMap<Uuid, u32>) {
        dead_seen.retain(|id, _| ids.contains(id));
        for (i, &id) in ids.iter().enumerate() {
            // A few file reads each, done on this worker thread: let requests
            // in between (1000 sandboxes make tens of ms a round).
            if i % 32 == 31 {
                tokio::task::yield_now().await;
            }
            // Asked of the backends first: cheap, unlike the store.
            let mut dead = None;
            for rt in self.runtimes.values() {
                match rt.alive(id).await {
                    Some(true) => break,
                    Some(false) => {
                        dead = Some(rt.clone());
                        break;
                    }
                    None => {}
                }
            }
            let Some(rt) = dead else {
                dead_seen.remove(&id);
                continue;
            };
            let Ok(Some(sb)) = self.store.get_sandbox(id) else {
                continue;
            };
            if sb.state != State::Running {
                dead_seen.remove(&id);
                continue;
            }
            let n = dead_seen.entry(id).or_insert(0);
            *n += 1;
            if *n < 2 {
                continue;
            }
            // Judged again under the lifecycle lock: a stop, destroy or
            // restart by its owner may have come in between. While one is
            // under way, next round (the monitor waits for nobody).
            let Some(_life) = self.lifecycles.try_lock(id) else {
                continue;
            };
            dead_seen.remove(&id);
            if rt.alive(id).await != Some(false) || self.unserve_running(id, None).await.is_none() {
                continue;
            }
            let msg = "its processes exited (the sandbox's init died)".to_string();
            tracing::warn!(sandbox = %id, "{msg}");
            let _ = self.mark_died(rt.as_ref(), id, msg).await;
        }
    }

    /// Extends a sandbox's TTL to `secs` from now (the hiver `ping`).
    pub async fn extend_ttl(&self, p: &Principal, id: Uuid, secs: u64) -> Result<Sandbox> {
        if secs > self.cfg.limits.max_ttl_secs {
            return Err(Error::invalid(
                "ttl_secs",
                format!("must be at most {} seconds", self.cfg.limits.max_ttl_secs),
            ));
        }
        let sb = self.get(p, id)?;
        sb.state.check(Action::ExtendTtl, id)?;
        self.transition(id, "sandbox.ttl", json!({"ttl_secs": secs}), |s| {
            s.expires_at = Some(expiry(Utc::now(), secs));
        })
    }
}

/// When a TTL of `secs` from `now` lapses (clamped to what a timestamp
/// holds; resolve caps TTLs far below that).
fn expiry(now: chrono::DateTime<Utc>, secs: u64) -> chrono::DateTime<Utc> {
    chrono::TimeDelta::try_seconds(secs.min(i64::MAX as u64 / 1000) as i64)
        .and_then(|d| now.checked_add_signed(d))
        .unwrap_or(chrono::DateTime::<Utc>::MAX_UTC)
}

/// What `new` has that `old` lacks, and what `old` has that `new` lacks.
fn added_removed<T: PartialEq + Clone>(old: &[T], new: &[T]) -> (Vec<T>, Vec<T>) {
    let missing = |from: &[T], other: &[T]| -> Vec<T> {
        from.iter()
            .filter(|x| !other.contains(x))
            .cloned()
            .collect()
    };
    (missing(new, old), missing(old, new))
}

/// A file operation in flight: its `fs.request` event and start.
struct FsOp {
    request_id: Option<i64>,
    started: std::time::Instant,
}

/// `path` with empty and `.` components dropped (no `..`: refused before).
fn normalize_path(path: &str) -> String {
    let parts: Vec<&str> = path
        .split('/')
        .filter(|c| !c.is_empty() && *c != ".")
        .collect();
    format!("/{}", parts.join("/"))
}

fn exec_request_data(sb: &Sandbox, req: &ExecRequest) -> serde_json::Value {
    let command = match &req.shell {
        Some(s) => s.clone(),
        None => req.cmd.join(" "),
    };
    json!({"cmd": req.cmd, "shell": req.shell, "command": command,
           "cwd": req.cwd.clone().unwrap_or_else(|| sb.config.cwd.clone())})
}

fn exec_response_data(request_id: Option<i64>, r: &Result<ExecResult>) -> serde_json::Value {
    match r {
        Ok(r) => json!({"request_id": request_id, "exit_code": r.exit_code,
                        "timed_out": r.timed_out, "duration_ms": r.duration_ms}),
        Err(e) => json!({"request_id": request_id, "error": e.to_string()}),
    }
}

/// What [`Engine::update_config`] may change; `None` keeps the current.
#[derive(Debug, Clone, Default)]
pub struct ConfigUpdate {
    pub mounts: Option<Vec<Mount>>,
    pub egress: Option<Option<Vec<EgressRule>>>,
    pub snapshot: Option<Option<SnapshotPolicy>>,
    pub idle_timeout_secs: Option<Option<u64>>,
    /// Notes for the `config.apply` event (fields the caller kept).
    pub warnings: Vec<String>,
}

/// What an update changed, as its `config.apply` event records it.
#[derive(Debug, Clone, Default, serde::Serialize, serde::Deserialize)]
#[serde(default)]
pub struct ConfigChanges {
    pub mounts_added: Vec<Mount>,
    pub mounts_removed: Vec<Mount>,
    pub egress_added: Vec<EgressRule>,
    pub egress_removed: Vec<EgressRule>,
    pub warnings: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct ConfigApplied {
    pub applied: bool,
    /// As it is now (unchanged when not applied).
    pub sandbox: Sandbox,
    pub changes: ConfigChanges,
    pub error: Option<String>,
}
