//! The engine's rules, against the fake backend and agent
//! ([`crate::testing`]): no root, no sandboxes.

use super::*;
use crate::runtime::AgentEndpoint;
use crate::testing::FakeRuntime;
use serde_json::json;

struct Rig {
    _dir: tempfile::TempDir,
    db: std::path::PathBuf,
    rt: Arc<FakeRuntime>,
    engine: Arc<Engine>,
}

fn config() -> EngineConfig {
    EngineConfig {
        agent_timeout: Duration::from_secs(5),
        ..Default::default()
    }
}

impl Rig {
    fn new() -> Rig {
        Self::with(config())
    }

    fn with(cfg: EngineConfig) -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("paddock.db");
        let rt = Arc::new(FakeRuntime::default());
        let engine = Self::engine(&db, &rt, cfg);
        Rig {
            _dir: dir,
            db,
            rt,
            engine,
        }
    }

    fn engine(db: &std::path::Path, rt: &Arc<FakeRuntime>, cfg: EngineConfig) -> Arc<Engine> {
        let store = Arc::new(Store::open(db).unwrap());
        let agents = rt.connector();
        let rt: Arc<dyn Runtime> = rt.clone();
        let e = Engine::new(store, vec![rt], None, agents, cfg).unwrap();
        let root = db.with_file_name("layers");
        std::fs::create_dir_all(&root).unwrap();
        e.set_layers(Arc::new(crate::testing::FakeLayers { root }));
        e
    }

    fn layer_dirs(&self) -> Vec<String> {
        let mut v: Vec<String> = std::fs::read_dir(self.db.with_file_name("layers"))
            .unwrap()
            .flatten()
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        v.sort();
        v
    }

    /// A daemon restart: a new engine on the same database and backend.
    async fn restart(&mut self) {
        self.engine.shutdown().await;
        self.engine = Self::engine(&self.db, &self.rt, config());
        self.engine.recover().await.unwrap();
    }
}

fn me() -> Principal {
    Principal::new("alice")
}

fn keyed(key: &str) -> SandboxSpec {
    SandboxSpec {
        key: Some(key.into()),
        ..Default::default()
    }
}

fn shell(s: &str) -> ExecRequest {
    ExecRequest {
        shell: Some(s.into()),
        ..Default::default()
    }
}

fn events(e: &Engine, id: Uuid) -> Vec<Event> {
    e.flush_events();
    e.store
        .events_after(Some("alice"), Some(id), 0, 1000)
        .unwrap()
}

fn kinds(e: &Engine, id: Uuid) -> Vec<String> {
    events(e, id).into_iter().map(|ev| ev.kind).collect()
}

#[tokio::test]
async fn a_create_by_key_is_idempotent_per_owner() {
    let r = Rig::new();
    let (a, made) = r.engine.create(&me(), keyed("k")).await.unwrap();
    assert!(made);
    assert_eq!(a.state, State::Running);
    let (b, made) = r.engine.create(&me(), keyed("k")).await.unwrap();
    assert!(!made);
    assert_eq!(a.id, b.id);
    // Another owner's key is another sandbox.
    let bob = Principal::new("bob");
    let (c, made) = r.engine.create(&bob, keyed("k")).await.unwrap();
    assert!(made && c.id != a.id);
    assert_eq!(r.rt.count(), 2);
    // Nor does bob see alice's.
    assert!(matches!(
        r.engine.get(&bob, a.id),
        Err(Error::NotFound { .. })
    ));
}

#[tokio::test]
async fn concurrent_creates_by_one_key_make_one_sandbox() {
    let r = Rig::new();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let e = r.engine.clone();
        tasks.push(tokio::spawn(async move {
            e.create(&me(), keyed("same")).await.unwrap().0.id
        }));
    }
    let mut ids = Vec::new();
    for t in tasks {
        ids.push(t.await.unwrap());
    }
    ids.dedup();
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(r.rt.count(), 1);
}

#[tokio::test]
async fn every_state_transition_and_its_refusals() {
    let r = Rig::new();
    let e = &r.engine;
    let (sb, _) = e.create(&me(), SandboxSpec::default()).await.unwrap();
    let id = sb.id;
    assert_eq!(
        e.exec(&me(), id, &shell("echo hi")).await.unwrap().stdout,
        "echo hi\n"
    );

    assert_eq!(e.pause(&me(), id).await.unwrap().state, State::Paused);
    assert_eq!(r.rt.liveness(id), Liveness::Paused);
    // Idempotent, and what a paused sandbox refuses.
    assert_eq!(e.pause(&me(), id).await.unwrap().state, State::Paused);
    assert!(matches!(
        e.exec(&me(), id, &shell("x")).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(e.start(&me(), id).await, Err(Error::Conflict(_))));
    e.metrics(&me(), id).await.unwrap();

    assert_eq!(e.resume(&me(), id).await.unwrap().state, State::Running);
    assert_eq!(e.resume(&me(), id).await.unwrap().state, State::Running);
    e.exec(&me(), id, &shell("again")).await.unwrap();

    assert_eq!(e.stop(&me(), id).await.unwrap().state, State::Stopped);
    assert_eq!(r.rt.liveness(id), Liveness::Stopped);
    assert_eq!(e.stop(&me(), id).await.unwrap().state, State::Stopped);
    assert!(matches!(
        e.exec(&me(), id, &shell("x")).await,
        Err(Error::Conflict(_))
    ));
    assert!(matches!(e.pause(&me(), id).await, Err(Error::Conflict(_))));
    assert!(matches!(
        e.metrics(&me(), id).await,
        Err(Error::Conflict(_))
    ));

    assert_eq!(e.start(&me(), id).await.unwrap().state, State::Running);
    e.exec(&me(), id, &shell("back")).await.unwrap();

    assert_eq!(e.destroy(&me(), id).await.unwrap().state, State::Destroyed);
    assert_eq!(r.rt.liveness(id), Liveness::Missing);
    assert_eq!(e.destroy(&me(), id).await.unwrap().state, State::Destroyed);
    for refused in [
        e.start(&me(), id).await,
        e.stop(&me(), id).await,
        e.touch(&me(), id).await,
        e.extend_ttl(&me(), id, 60).await,
    ] {
        assert!(matches!(refused, Err(Error::Conflict(_))), "{refused:?}");
    }
    assert_eq!(
        kinds(e, id),
        [
            "sandbox.created",
            "sandbox.started",
            "exec.request",
            "exec.response",
            "sandbox.paused",
            "sandbox.resumed",
            "exec.request",
            "exec.response",
            "sandbox.stopped",
            "sandbox.started",
            "exec.request",
            "exec.response",
            "sandbox.destroyed",
        ]
    );
}

#[tokio::test]
async fn a_failed_boot_is_an_error_state_and_torn_down() {
    let r = Rig::new();
    r.rt.fail_creates
        .store(true, std::sync::atomic::Ordering::Relaxed);
    let e = r.engine.create(&me(), keyed("bad")).await.unwrap_err();
    assert!(e.to_string().contains("told to fail"), "{e}");
    let sb = r.engine.find(&me(), "bad").unwrap();
    assert_eq!(sb.state, State::Error);
    assert!(sb.message.unwrap().contains("told to fail"));
    assert!(r
        .rt
        .calls
        .lock()
        .unwrap()
        .contains(&format!("destroy {}", sb.id)));
    // An error sandbox can still be destroyed, and nothing else.
    assert!(matches!(
        r.engine.touch(&me(), sb.id).await,
        Err(Error::Conflict(_))
    ));
    assert_eq!(
        r.engine.destroy(&me(), sb.id).await.unwrap().state,
        State::Destroyed
    );
}

#[tokio::test]
async fn files_go_through_the_agent_and_acls_hold() {
    let r = Rig::new();
    let spec: SandboxSpec = serde_json::from_value(json!({
        "mounts": [{"path": "/w", "acls": [
            {"path": "/w/**", "access": "rw"},
            {"path": "/w/secret/**", "access": "deny"},
            {"path": "/w/ro/**", "access": "ro"}
        ]}]
    }))
    .unwrap();
    let (sb, _) = r.engine.create(&me(), spec).await.unwrap();
    let body = |b: &'static [u8]| futures::stream::iter([Ok::<_, Error>(Bytes::from_static(b))]);
    let opts = WriteOptions::default();
    r.engine
        .write_file(&me(), sb.id, "/w/a.txt", &opts, body(b"hello"))
        .await
        .unwrap();
    assert_eq!(
        r.engine.stat(&me(), sb.id, "/w/a.txt").await.unwrap().size,
        5
    );
    for (path, write) in [
        ("/w/secret/k", false),
        ("/w/secret/k", true),
        ("/w/ro/x", true),
        ("/elsewhere", false),
    ] {
        let res = if write {
            r.engine
                .write_file(&me(), sb.id, path, &opts, body(b"x"))
                .await
                .map(|_| ())
        } else {
            r.engine.stat(&me(), sb.id, path).await.map(|_| ())
        };
        assert!(
            matches!(res, Err(Error::Forbidden(_))),
            "{path} write={write}: {res:?}"
        );
    }
}

#[tokio::test]
async fn recovery_after_a_restart_keeps_the_living_and_marks_the_dead() {
    let mut r = Rig::new();
    let (live, _) = r.engine.create(&me(), keyed("live")).await.unwrap();
    let (dies, _) = r.engine.create(&me(), keyed("dies")).await.unwrap();
    let (stopped, _) = r.engine.create(&me(), keyed("stopped")).await.unwrap();
    r.engine.stop(&me(), stopped.id).await.unwrap();
    // While the daemon is down, one sandbox dies.
    r.engine.shutdown().await;
    r.rt.kill(dies.id);
    r.restart().await;
    let e = &r.engine;
    assert_eq!(e.get(&me(), live.id).unwrap().state, State::Running);
    assert_eq!(
        e.exec(&me(), live.id, &shell("still"))
            .await
            .unwrap()
            .stdout,
        "still\n"
    );
    assert_eq!(e.get(&me(), stopped.id).unwrap().state, State::Stopped);
    let dead = e.get(&me(), dies.id).unwrap();
    assert!(
        matches!(dead.state, State::Error | State::Destroyed),
        "{:?}",
        dead.state
    );
    // The key still finds the same sandbox.
    let (again, made) = e.create(&me(), keyed("live")).await.unwrap();
    assert!(!made && again.id == live.id);
}

#[tokio::test]
async fn the_reaper_ends_lapsed_ttls_and_idle_sandboxes_only() {
    let r = Rig::new();
    let ttl: SandboxSpec = serde_json::from_value(json!({"ttl_secs": 1})).unwrap();
    let idle: SandboxSpec = serde_json::from_value(json!({"idle_timeout_secs": 1})).unwrap();
    let (t, _) = r.engine.create(&me(), ttl).await.unwrap();
    let (i, _) = r.engine.create(&me(), idle).await.unwrap();
    let (keep, _) = r
        .engine
        .create(&me(), SandboxSpec::default())
        .await
        .unwrap();
    assert_eq!(r.engine.reap_once().await, 0);
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(r.engine.reap_once().await, 2);
    for (id, reason) in [(t.id, "ttl"), (i.id, "idle")] {
        assert_eq!(r.engine.get(&me(), id).unwrap().state, State::Destroyed);
        let evs = events(&r.engine, id);
        let last = evs.last().unwrap();
        assert_eq!(last.kind, "sandbox.destroyed");
        assert!(
            matches!(&last.data, EventData::Destroyed(d) if d.reason == reason),
            "{:?}",
            last.data
        );
    }
    assert_eq!(r.engine.get(&me(), keep.id).unwrap().state, State::Running);
}

#[tokio::test]
async fn a_touched_sandbox_is_not_idle() {
    let r = Rig::new();
    let idle: SandboxSpec = serde_json::from_value(json!({"idle_timeout_secs": 1})).unwrap();
    let (i, _) = r.engine.create(&me(), idle).await.unwrap();
    tokio::time::sleep(Duration::from_millis(700)).await;
    r.engine.touch(&me(), i.id).await.unwrap();
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(r.engine.reap_once().await, 0);
    assert_eq!(r.engine.get(&me(), i.id).unwrap().state, State::Running);
}

#[tokio::test]
async fn a_warm_pool_hands_over_a_booted_sandbox_and_refills() {
    let r = Rig::with(EngineConfig {
        warm_pools: vec![PoolConfig {
            image: None,
            size: 2,
        }],
        warm_pool_min_free_mb: 0,
        ..config()
    });
    let _pools = r.engine.spawn_pools();
    let ready = |e: &Engine| {
        e.pools(&Principal::local())
            .iter()
            .map(|p| p.ready)
            .sum::<usize>()
    };
    for _ in 0..500 {
        if ready(&r.engine) == 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(ready(&r.engine), 2);
    let booted: Vec<String> = r.rt.calls.lock().unwrap().clone();
    let (sb, made) = r.engine.create(&me(), keyed("warm")).await.unwrap();
    assert!(made);
    // Handed over: booted before the create was asked, now alice's.
    assert!(
        booted.contains(&format!("create {}", sb.id)),
        "{booted:?} {}",
        sb.id
    );
    assert_eq!(sb.owner, "alice");
    assert_eq!(sb.key.as_deref(), Some("warm"));
    assert_eq!(sb.state, State::Running);
    r.engine.exec(&me(), sb.id, &shell("warm")).await.unwrap();
    // Alice sees it, the pool no longer counts it, and it refills.
    assert_eq!(r.engine.find(&me(), "warm").unwrap().id, sb.id);
    for _ in 0..500 {
        if ready(&r.engine) == 2 && r.rt.count() == 3 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!((ready(&r.engine), r.rt.count()), (2, 3));
}

fn engine_on(
    db: &std::path::Path,
    rts: &[Arc<FakeRuntime>],
    defaults: &[(Isolation, &str)],
) -> Result<Arc<Engine>> {
    let store = Arc::new(Store::open(db).unwrap());
    let agents = Arc::new(Connectors(rts.iter().map(|r| r.connector()).collect()));
    let rts: Vec<Arc<dyn Runtime>> = rts.iter().map(|r| r.clone() as Arc<dyn Runtime>).collect();
    let cfg = EngineConfig {
        default_backends: defaults.iter().map(|(i, n)| (*i, n.to_string())).collect(),
        ..config()
    };
    Engine::new(store, rts, None, agents, cfg)
}

/// The agents of several fake backends: the first that has one.
struct Connectors(Vec<Arc<crate::testing::FakeConnector>>);

#[async_trait::async_trait]
impl AgentConnector for Connectors {
    async fn connect(
        &self,
        e: &AgentEndpoint,
        handover: bool,
        timeout: Duration,
    ) -> Result<Arc<dyn Agent>> {
        let mut last = None;
        for c in &self.0 {
            match c.connect(e, handover, timeout).await {
                Ok(a) => return Ok(a),
                Err(err) => last = Some(err),
            }
        }
        Err(last.unwrap_or_else(|| Error::internal("no connector")))
    }

    fn lazy(&self, e: &AgentEndpoint, handover: bool) -> Result<Arc<dyn Agent>> {
        for c in &self.0 {
            if let Ok(a) = c.connect_now(e) {
                return Ok(a);
            }
        }
        self.0[0].lazy(e, handover)
    }
}

#[tokio::test]
async fn each_sandbox_keeps_the_backend_it_was_made_on() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("paddock.db");
    let caps = crate::runtime::Capabilities {
        pause: true,
        ..Default::default()
    };
    let (a, b) = (
        Arc::new(FakeRuntime::named("a", caps)),
        Arc::new(FakeRuntime::named("b", caps)),
    );
    let rts = [a.clone(), b.clone()];
    let e = engine_on(&db, &rts, &[(Isolation::Container, "b")]).unwrap();
    let listed: Vec<(String, bool)> = e
        .backends()
        .into_iter()
        .map(|b| (b.name, b.default))
        .collect();
    assert_eq!(listed, [("a".to_string(), false), ("b".to_string(), true)]);
    let (sb, _) = e.create(&me(), keyed("on-b")).await.unwrap();
    assert_eq!(sb.backend, "b");
    assert_eq!((a.count(), b.count()), (0, 1));
    e.shutdown().await;
    // The default changes; the sandbox stays where it runs.
    let e = engine_on(&db, &rts, &[(Isolation::Container, "a")]).unwrap();
    e.recover().await.unwrap();
    e.pause(&me(), sb.id).await.unwrap();
    e.stop(&me(), sb.id).await.unwrap();
    assert!(b
        .calls
        .lock()
        .unwrap()
        .contains(&format!("pause {}", sb.id)));
    assert!(b.calls.lock().unwrap().contains(&format!("stop {}", sb.id)));
    assert!(a.calls.lock().unwrap().is_empty());
    let (new, _) = e.create(&me(), keyed("on-a")).await.unwrap();
    assert_eq!(new.backend, "a");
    // A default that names no backend, or one of another isolation, is
    // refused at start.
    assert!(engine_on(&db, &rts, &[(Isolation::Container, "zzz")]).is_err());
    assert!(engine_on(&db, &rts, &[(Isolation::Gvisor, "a")]).is_err());
    e.shutdown().await;
    // A record naming a backend this daemon no longer has goes to its
    // isolation's default (to be reached and cleaned up at all).
    let e = engine_on(&db, std::slice::from_ref(&a), &[]).unwrap();
    e.stop(&me(), new.id).await.unwrap();
    e.start(&me(), sb.id).await.unwrap();
    assert!(a
        .calls
        .lock()
        .unwrap()
        .contains(&format!("start {}", sb.id)));
}

#[tokio::test]
async fn an_operation_a_backend_lacks_is_unsupported() {
    let r = {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("paddock.db");
        let rt = Arc::new(FakeRuntime::named("nopause", Default::default()));
        let engine = engine_on(&db, std::slice::from_ref(&rt), &[]).unwrap();
        Rig {
            _dir: dir,
            db,
            rt,
            engine,
        }
    };
    let (sb, _) = r
        .engine
        .create(&me(), SandboxSpec::default())
        .await
        .unwrap();
    let e = r.engine.pause(&me(), sb.id).await.unwrap_err();
    assert!(
        matches!(e, Error::Unsupported(ref m) if m.contains("nopause")),
        "{e}"
    );
    // Still running, still usable.
    assert_eq!(r.engine.get(&me(), sb.id).unwrap().state, State::Running);
    r.engine.exec(&me(), sb.id, &shell("ok")).await.unwrap();
    assert!(!r.engine.backends()[0].capabilities.pause);
}

#[tokio::test]
async fn the_monitor_marks_a_sandbox_whose_processes_died() {
    let r = Rig::new();
    let _monitor = r.engine.spawn_monitor();
    let (sb, _) = r
        .engine
        .create(&me(), SandboxSpec::default())
        .await
        .unwrap();
    let (calm, _) = r
        .engine
        .create(&me(), SandboxSpec::default())
        .await
        .unwrap();
    r.rt.kill(sb.id);
    let mut state = State::Running;
    for _ in 0..200 {
        state = r.engine.get(&me(), sb.id).unwrap().state;
        if state != State::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, State::Error);
    assert!(kinds(&r.engine, sb.id).contains(&"sandbox.died".to_string()));
    assert_eq!(r.engine.get(&me(), calm.id).unwrap().state, State::Running);
}

/// Each backend is asked only about the sandboxes it runs: another
/// backend of the same isolation (docker beside crun, say) may answer for
/// ids it does not run, and must not hide a death.
#[tokio::test]
async fn the_monitor_asks_each_backend_about_its_own_sandboxes() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("paddock.db");
    let (a, b) = (
        Arc::new(FakeRuntime::named("a", Default::default())),
        Arc::new(FakeRuntime::named("b", Default::default())),
    );
    let e = engine_on(&db, &[a.clone(), b.clone()], &[(Isolation::Container, "a")]).unwrap();
    let _monitor = e.spawn_monitor();
    let (sb, _) = e.create(&me(), SandboxSpec::default()).await.unwrap();
    a.kill(sb.id);
    let mut state = State::Running;
    for _ in 0..200 {
        state = e.get(&me(), sb.id).unwrap().state;
        if state != State::Running {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(state, State::Error);
    let asked = |rt: &FakeRuntime| {
        rt.calls
            .lock()
            .unwrap()
            .contains(&format!("alive {}", sb.id))
    };
    assert!(asked(&a));
    assert!(!asked(&b), "backend b was asked about a's sandbox");
}

/// Issue 19, item 2: a host directory is bound only from a root the
/// operator allows now; one allowed at create and no longer after a restart
/// with another config is refused when the sandbox starts again.
#[tokio::test]
async fn a_host_mount_is_checked_again_at_every_start() {
    let roots = tempfile::tempdir().unwrap();
    let shared = roots.path().join("shared");
    std::fs::create_dir_all(&shared).unwrap();
    let allowing = EngineConfig {
        host_mounts: crate::hostmount::HostMounts::new(&[roots.path().to_path_buf()], None)
            .unwrap(),
        ..config()
    };
    let mut r = Rig::with(allowing);
    let spec: SandboxSpec = serde_json::from_value(json!({
        "key": "hm",
        "mounts": [{"path": "/data", "origin": shared.to_str().unwrap(),
                    "acls": [{"path": "/data/**", "access": "rw"}]}]
    }))
    .unwrap();
    let (sb, _) = r.engine.create(&me(), spec).await.unwrap();
    r.engine.stop(&me(), sb.id).await.unwrap();
    // The daemon comes back without that root.
    r.restart().await;
    let e = r.engine.start(&me(), sb.id).await.unwrap_err();
    assert!(
        matches!(&e, Error::ForbiddenField { field, .. } if field == "mounts[0].origin"),
        "{e:?}"
    );
    assert_eq!(r.engine.get(&me(), sb.id).unwrap().state, State::Stopped);
    assert!(!r
        .rt
        .calls
        .lock()
        .unwrap()
        .contains(&format!("start {}", sb.id)));
}

/// A mount whose ACL is not read-write throughout is guarded when the
/// sandbox boots (before its main process is let go), its guard takes new
/// rules when the config changes, a mount that comes to need a guard gets
/// one, and one read-write throughout is left alone.
#[tokio::test]
async fn guards_follow_the_mounts_acls() {
    let r = Rig::new();
    let rule = |p: &str, a| AclRule {
        path: p.into(),
        access: a,
    };
    let guarded = Mount {
        path: "/w".into(),
        origin: None,
        acls: vec![
            rule("/w/**", Access::Rw),
            rule("/w/secret/**", Access::Deny),
        ],
    };
    let open = Mount {
        path: "/o".into(),
        origin: None,
        acls: vec![rule("/o/**", Access::Rw)],
    };
    let spec = SandboxSpec {
        mounts: vec![guarded.clone(), open.clone()],
        ..Default::default()
    };
    let (sb, _) = r.engine.create(&me(), spec).await.unwrap();
    let calls = r.rt.calls.lock().unwrap().clone();
    assert!(calls.contains(&format!("guard {} /w", sb.id)), "{calls:?}");
    assert!(!calls.iter().any(|c| c.ends_with(" /o")), "{calls:?}");
    let agent = r.rt.agent(sb.id).unwrap();
    assert_eq!(agent.guards.lock().unwrap()["/w"], guarded.acls);
    // New rules for /w; /o now has a read-only part.
    let w2 = Mount {
        acls: vec![rule("/w/**", Access::Ro)],
        ..guarded.clone()
    };
    let o2 = Mount {
        acls: vec![rule("/o/**", Access::Rw), rule("/o/ro/**", Access::Ro)],
        ..open.clone()
    };
    let applied = r
        .engine
        .update_config(
            &me(),
            sb.id,
            ConfigUpdate {
                mounts: Some(vec![w2.clone(), o2.clone()]),
                egress: None,
                snapshot: None,
                idle_timeout_secs: None,
                warnings: vec![],
            },
        )
        .await
        .unwrap();
    assert!(applied.applied, "{:?}", applied.error);
    let g = agent.guards.lock().unwrap().clone();
    assert_eq!(g["/w"], w2.acls);
    assert_eq!(g["/o"], o2.acls);
    // A paused sandbox's agent is frozen: its guards' rules wait for a
    // resume, and the update says so instead of hanging.
    r.engine.pause(&me(), sb.id).await.unwrap();
    let w3 = Mount {
        acls: vec![rule("/w/**", Access::Deny)],
        ..guarded.clone()
    };
    let update = |w: &Mount| ConfigUpdate {
        mounts: Some(vec![w.clone(), o2.clone()]),
        egress: None,
        snapshot: None,
        idle_timeout_secs: None,
        warnings: vec![],
    };
    let paused = r
        .engine
        .update_config(&me(), sb.id, update(&w3))
        .await
        .unwrap();
    assert!(!paused.applied);
    assert!(paused.error.unwrap_or_default().contains("paused"));
    assert_eq!(agent.guards.lock().unwrap()["/w"], w2.acls);
    r.engine.resume(&me(), sb.id).await.unwrap();
    let resumed = r
        .engine
        .update_config(&me(), sb.id, update(&w3))
        .await
        .unwrap();
    assert!(resumed.applied, "{:?}", resumed.error);
    assert_eq!(agent.guards.lock().unwrap()["/w"], w3.acls);
    // A backend that cannot guard refuses such a mount, naming it.
    let e = Engine::check_guardable(
        &FakeRuntime::named("plain", Default::default()),
        &[open, guarded],
    )
    .unwrap_err();
    assert!(
        matches!(e, Error::Invalid { ref field, .. } if field == "mounts[1].acls"),
        "{e}"
    );
}

#[tokio::test]
async fn snapshots_stack_outlive_their_sandbox_and_their_layers_go_with_the_last_user() {
    let rig = Rig::new();
    let e = &rig.engine;
    let (sb, _) = e.create(&me(), SandboxSpec::default()).await.unwrap();
    let snap = e
        .snapshot(
            &me(),
            sb.id,
            SnapshotRequest {
                name: Some("s1".into()),
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(snap.config.layers.len(), 1);
    assert!(rig
        .rt
        .calls
        .lock()
        .unwrap()
        .contains(&format!("capture {} true", sb.id)));
    assert_eq!(kinds(e, sb.id).last().unwrap(), "sandbox.snapshot");
    // Another principal sees none of it.
    let bob = Principal::new("bob");
    assert!(matches!(
        e.get_snapshot(&bob, "s1"),
        Err(Error::NotFound { .. })
    ));
    let from = SandboxSpec {
        from_snapshot: Some("s1".into()),
        ..Default::default()
    };
    assert!(matches!(
        e.create(&bob, from.clone()).await,
        Err(Error::NotFound { .. })
    ));
    // A sandbox from it stacks its layer; its snapshot has both.
    let (child, _) = e.create(&me(), from).await.unwrap();
    assert_eq!(child.config.layers, snap.config.layers);
    assert_eq!(child.config.from_snapshot, Some(snap.id));
    e.destroy(&me(), sb.id).await.unwrap();
    let s2 = e
        .snapshot(&me(), child.id, SnapshotRequest::default())
        .await
        .unwrap();
    assert_eq!(s2.config.layers.len(), 2);
    assert_eq!(s2.config.layers[0], snap.config.layers[0]);
    // Deleting the first keeps its layer: the second snapshot and the
    // child use it. Once nothing does, it goes.
    e.delete_snapshot(&me(), "s1").await.unwrap();
    e.collect_layers(false).await.unwrap();
    assert_eq!(rig.layer_dirs().len(), 2);
    e.destroy(&me(), child.id).await.unwrap();
    e.delete_snapshot(&me(), &s2.id.to_string()).await.unwrap();
    e.collect_layers(false).await.unwrap();
    assert!(rig.layer_dirs().is_empty(), "{:?}", rig.layer_dirs());
}

#[tokio::test]
async fn a_fork_is_all_or_nothing_even_across_a_restart() {
    let mut rig = Rig::new();
    let e = rig.engine.clone();
    let (sb, _) = e.create(&me(), SandboxSpec::default()).await.unwrap();
    let kids = e.fork(&me(), sb.id, 3, false).await.unwrap();
    assert_eq!(kids.len(), 3);
    assert!(kids
        .iter()
        .all(|k| k.state == State::Running && k.fork_of.is_none()));
    assert!(
        matches!(e.fork(&me(), sb.id, 0, false).await, Err(Error::Invalid { ref field, .. }) if field == "count")
    );
    assert!(matches!(
        e.fork(&me(), sb.id, 1, true).await,
        Err(Error::Unsupported(_))
    ));
    // One child cannot start: none is left behind.
    let before = e.list_all(&me(), &ListQuery::default()).unwrap().len();
    rig.rt.fail_creates.store(true, Ordering::Relaxed);
    assert!(e.fork(&me(), sb.id, 2, false).await.is_err());
    rig.rt.fail_creates.store(false, Ordering::Relaxed);
    assert_eq!(
        e.list_all(&me(), &ListQuery::default()).unwrap().len(),
        before
    );
    // A child the daemon died before finishing: gone after the restart.
    let mut config = e.get(&me(), sb.id).unwrap().config;
    config.layers = kids[0].config.layers.clone();
    let rt: Arc<dyn Runtime> = rig.rt.clone();
    let (orphan, _) = e
        .launch(
            &me(),
            &SandboxSpec::default(),
            config,
            rt,
            Some(sb.id),
            &None,
        )
        .await
        .unwrap();
    assert_eq!(orphan.fork_of, Some(sb.id));
    rig.restart().await;
    let e = rig.engine.clone();
    assert_eq!(e.get(&me(), orphan.id).unwrap().state, State::Destroyed);
    assert_eq!(e.get(&me(), kids[1].id).unwrap().state, State::Running);
}

/// A warm pool boots as its own principal: a template that names its
/// owner's snapshots, volumes or snapshot policy keeps none (else a pooled
/// sandbox would look them up as the pool's, shared by every owner).
#[tokio::test]
async fn a_template_naming_its_owners_snapshots_keeps_no_warm_pool() {
    let rig = Rig::new();
    let e = &rig.engine;
    for defaults in [
        SandboxSpec {
            from_snapshot: Some("mine".into()),
            ..Default::default()
        },
        SandboxSpec {
            snapshot: Some(SnapshotPolicy {
                restore_key: Some("k".into()),
                write_key: None,
                include: None,
            }),
            ..Default::default()
        },
    ] {
        let r = e.create_template(&me(), "t", defaults.clone(), 2).await;
        assert!(
            matches!(r, Err(Error::Invalid { ref field, .. }) if field == "warm_pool"),
            "{r:?}"
        );
        assert!(e.create_template(&me(), "t", defaults, 0).await.is_ok());
        e.delete_template(&me(), "t").await.unwrap();
    }
}

fn governed() -> EngineConfig {
    let spec = SandboxSpec {
        memory_mb: Some(256),
        ..Default::default()
    };
    EngineConfig {
        policies: vec![crate::policy::Policy {
            name: "small".into(),
            principals: vec!["alice".into()],
            groups: vec!["restricted".into()],
            templates: Some(vec!["coding".into()]),
            max_sandboxes: Some(1),
            max_ttl_secs: Some(3600),
            max_cpu: None,
            max_memory_mb: Some(512),
            max_disk_mb: None,
        }],
        templates: vec![Template {
            name: "coding".into(),
            owner: OPERATOR_TEMPLATES.into(),
            description: Some("for coding".into()),
            defaults: spec,
            warm_pool: 0,
            created_at: Utc::now(),
        }],
        ..config()
    }
}

fn from_template(t: &str) -> SandboxSpec {
    SandboxSpec {
        template: Some(t.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn policies_refuse_each_broken_rule_and_count_what_is_held() {
    let r = Rig::with(governed());
    // The operator's template is everyone's; a create from it gets the
    // policy's longest TTL when it asks for none.
    assert_eq!(r.engine.list_templates(&me()).unwrap()[0].name, "coding");
    let (a, _) = r
        .engine
        .create(&me(), from_template("coding"))
        .await
        .unwrap();
    assert_eq!(a.config.memory_mb, 256);
    assert_eq!(a.config.ttl_secs, Some(3600));
    // A second one breaks max_sandboxes; a spec breaking more names each.
    let e = r
        .engine
        .create(
            &me(),
            SandboxSpec {
                memory_mb: Some(1024),
                ttl_secs: Some(7200),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    let Error::PolicyViolation(v) = &e else {
        panic!("{e:?}")
    };
    let rules: Vec<&str> = v.iter().map(|v| v.rule.as_str()).collect();
    assert_eq!(
        rules,
        [
            "templates",
            "max_sandboxes",
            "max_ttl_secs",
            "max_memory_mb"
        ]
    );
    // Nothing was made.
    assert_eq!(
        r.engine.list(&me(), &ListQuery::default()).unwrap().len(),
        1
    );
    // Forks count too.
    let e = r.engine.fork(&me(), a.id, 1, false).await.unwrap_err();
    assert!(matches!(e, Error::PolicyViolation(_)), "{e:?}");
    r.engine.destroy(&me(), a.id).await.unwrap();
    r.engine
        .create(&me(), from_template("coding"))
        .await
        .unwrap();
    // Bob is not governed, unless he is in the group.
    let bob = Principal::new("bob");
    r.engine.create(&bob, SandboxSpec::default()).await.unwrap();
    let mut bob = bob;
    bob.groups = vec!["restricted".into()];
    let e = r
        .engine
        .create(&bob, SandboxSpec::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PolicyViolation(_)), "{e:?}");
    // Two creates at once cannot both pass max_sandboxes.
    let carol = Principal {
        groups: vec!["restricted".into()],
        ..Principal::new("carol")
    };
    let (x, y) = tokio::join!(
        r.engine.create(&carol, from_template("coding")),
        r.engine.create(&carol, from_template("coding"))
    );
    assert_eq!(x.is_ok() as u8 + y.is_ok() as u8, 1, "{x:?} {y:?}");
}

#[tokio::test]
async fn policies_are_the_operators_to_write() {
    let mut r = Rig::with(governed());
    let p = crate::policy::Policy {
        name: "bob".into(),
        principals: vec!["bob".into()],
        groups: vec![],
        templates: None,
        max_sandboxes: Some(0),
        max_ttl_secs: None,
        max_cpu: None,
        max_memory_mb: None,
        max_disk_mb: None,
    };
    let e = r.engine.put_policy(&me(), p.clone()).unwrap_err();
    assert!(matches!(e, Error::Forbidden(_)), "{e:?}");
    // The settings file's cannot be changed through the API.
    let e = r
        .engine
        .delete_policy(&Principal::local(), "small")
        .unwrap_err();
    assert!(matches!(e, Error::Conflict(_)), "{e:?}");
    let op = Principal::local();
    r.engine.put_policy(&op, p).unwrap();
    // Kept across a restart (read back from the store).
    r.restart().await;
    let bob = Principal::new("bob");
    assert_eq!(r.engine.policies(&bob).unwrap().len(), 1);
    // (The restarted engine has no settings-file policies.)
    assert_eq!(r.engine.policies(&op).unwrap().len(), 1);
    let e = r
        .engine
        .create(&bob, SandboxSpec::default())
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PolicyViolation(_)), "{e:?}");
    r.engine.delete_policy(&op, "bob").unwrap();
    let e = r.engine.delete_policy(&op, "bob").unwrap_err();
    assert!(matches!(e, Error::NotFound { .. }), "{e:?}");
    r.engine.create(&bob, SandboxSpec::default()).await.unwrap();
}

#[tokio::test]
async fn every_mutating_call_is_audited_with_its_outcome() {
    let r = Rig::with(governed());
    let p = me().via("test");
    let (a, _) = r.engine.create(&p, from_template("coding")).await.unwrap();
    r.engine.exec(&p, a.id, &shell("true")).await.unwrap();
    r.engine.stop(&p, a.id).await.unwrap();
    r.engine.stop(&p, a.id).await.unwrap();
    r.engine.exec(&p, a.id, &shell("true")).await.unwrap_err();
    r.engine
        .create(&p, SandboxSpec::default())
        .await
        .unwrap_err();
    r.engine.destroy(&p, a.id).await.unwrap();
    let log = r
        .engine
        .audit_log(&p, &crate::audit::AuditQuery::default())
        .unwrap();
    let got: Vec<(&str, &str)> = log
        .iter()
        .rev()
        .map(|a| (a.action.as_str(), a.outcome.as_str()))
        .collect();
    assert_eq!(
        got,
        [
            ("sandbox.create", "ok"),
            ("sandbox.exec", "ok"),
            ("sandbox.stop", "ok"),
            ("sandbox.stop", "ok"),
            ("sandbox.exec", "conflict"),
            ("sandbox.create", "policy_violation"),
            ("sandbox.destroy", "ok"),
        ]
    );
    assert!(log
        .iter()
        .all(|a| a.via == "test" && a.principal == "alice"));
    assert_eq!(log.last().unwrap().sandbox, Some(a.id));
    assert!(log[1].detail["violations"].is_array());
    // Another principal sees none of it; the operator sees all.
    let bob = Principal::new("bob");
    assert!(r
        .engine
        .audit_log(&bob, &crate::audit::AuditQuery::default())
        .unwrap()
        .is_empty());
    let q = crate::audit::AuditQuery {
        sandbox: Some(a.id),
        ..Default::default()
    };
    assert_eq!(
        r.engine.audit_log(&Principal::local(), &q).unwrap().len(),
        6
    );
    let u = r.engine.usage(&p).unwrap();
    assert_eq!(u.startup_samples, 1);
    assert_eq!(u.total, 0);
    // Records past the retention go; newer ones stay.
    assert_eq!(r.engine.prune_audit(), 0);
    let later = Utc::now() + chrono::TimeDelta::seconds(1);
    assert_eq!(r.engine.store.prune_audit(later).unwrap(), 7);
    assert!(r
        .engine
        .audit_log(&p, &crate::audit::AuditQuery::default())
        .unwrap()
        .is_empty());
}

#[tokio::test]
async fn policies_are_not_escaped_by_odd_ids_own_templates_or_pools() {
    let mut cfg = governed();
    cfg.policies[0].principals = vec!["alice".into(), "oidc:*".into()];
    let r = Rig::with(cfg);
    // `*` crosses `/` and `:` (an OIDC subject like a CI job's).
    let odd = Principal::new("oidc:repo:org/x:ref:main");
    let e = r
        .engine
        .create(
            &odd,
            SandboxSpec {
                memory_mb: Some(1024),
                ..Default::default()
            },
        )
        .await
        .unwrap_err();
    assert!(matches!(e, Error::PolicyViolation(_)), "{e:?}");
    // A template of her own under an allowed name is not the operator's.
    r.engine
        .create_template(
            &me(),
            "coding",
            SandboxSpec {
                memory_mb: Some(2048),
                ..Default::default()
            },
            0,
        )
        .await
        .unwrap();
    let e = r
        .engine
        .create(&me(), from_template("coding"))
        .await
        .unwrap_err();
    let Error::PolicyViolation(v) = &e else {
        panic!("{e:?}")
    };
    assert!(v.iter().any(|v| v.rule == "templates"), "{v:?}");
    // And no warm pool, whose sandboxes would be booted unjudged.
    let e = r
        .engine
        .create_template(&me(), "pooled", SandboxSpec::default(), 4)
        .await
        .unwrap_err();
    assert_eq!(e.field(), Some("warm_pool"), "{e:?}");
    // Bob, whom no policy holds, may keep one.
    r.engine
        .create_template(&Principal::new("bob"), "pooled", SandboxSpec::default(), 1)
        .await
        .unwrap();
}

#[tokio::test]
async fn an_idle_sandbox_that_hibernates_stops_with_its_files_and_wakes() {
    let r = Rig::new();
    let spec: SandboxSpec = serde_json::from_value(
        json!({"idle_timeout_secs": 1, "on_idle": "hibernate", "wake_on_request": true}),
    )
    .unwrap();
    let (sb, _) = r.engine.create(&me(), spec).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    assert_eq!(r.engine.reap_once().await, 1);
    // Stopped (scaled to zero), not destroyed; the next pass leaves it.
    for _ in 0..100 {
        if r.engine.get(&me(), sb.id).unwrap().state == State::Stopped {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.engine.get(&me(), sb.id).unwrap().state, State::Stopped);
    assert_eq!(r.engine.reap_once().await, 0);
    // A proxied request wakes it.
    r.engine.proxy_target(&me(), sb.id, 8000).await.ok();
    assert_eq!(r.engine.get(&me(), sb.id).unwrap().state, State::Running);
}

#[tokio::test]
async fn a_workspace_hibernates_into_a_snapshot_and_wakes_from_it() {
    let r = Rig::new();
    let e = &r.engine;
    let w = e
        .create_workspace(
            &me(),
            WorkspaceRequest {
                name: "dev".into(),
                on_idle: IdleAction::Hibernate,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    assert!(w.current.is_none());
    // A name is the owner's once; another owner's is another workspace.
    assert!(matches!(
        e.create_workspace(
            &me(),
            WorkspaceRequest {
                name: "dev".into(),
                ..Default::default()
            }
        )
        .await,
        Err(Error::Exists(_))
    ));
    assert!(matches!(
        e.create_workspace(
            &me(),
            WorkspaceRequest {
                name: "Dev!".into(),
                ..Default::default()
            }
        )
        .await,
        Err(Error::Invalid { .. })
    ));
    assert!(e.get_workspace(&Principal::new("bob"), "dev").is_err());

    let w = e.wake_workspace(&me(), "dev").await.unwrap();
    let first = w.current.unwrap();
    assert_eq!(e.get(&me(), first).unwrap().state, State::Running);
    // Waking an awake workspace keeps its sandbox.
    assert_eq!(
        e.wake_workspace(&me(), "dev").await.unwrap().current,
        Some(first)
    );

    // A fenced change with the wrong sandbox is a conflict.
    let fenced = WorkspaceUpdate {
        metadata: Some([("k".to_string(), "v".to_string())].into()),
        expected_current: Some(None),
        ..Default::default()
    };
    assert!(matches!(
        e.update_workspace(&me(), "dev", fenced.clone()).await,
        Err(Error::Conflict(_))
    ));

    let w = e.hibernate_workspace(&me(), "dev").await.unwrap();
    assert!(w.current.is_none());
    let snap = w.latest_snapshot.unwrap();
    assert_eq!(e.get(&me(), first).unwrap().state, State::Destroyed);
    // Idempotent.
    assert_eq!(
        e.hibernate_workspace(&me(), "dev")
            .await
            .unwrap()
            .latest_snapshot,
        Some(snap)
    );
    e.update_workspace(&me(), "dev", fenced).await.unwrap();

    let w = e.wake_workspace(&me(), "dev").await.unwrap();
    let second = w.current.unwrap();
    assert_ne!(second, first);
    assert_eq!(
        e.get(&me(), second).unwrap().config.from_snapshot,
        Some(snap)
    );

    // Idle, its sandbox hibernates the workspace (a new snapshot, the one
    // before superseded).
    e.update_workspace(&me(), "dev", WorkspaceUpdate::default())
        .await
        .unwrap();
    let idle = e.get(&me(), second).unwrap();
    e.hibernate_idle(idle, false).await.unwrap();
    let w = e.get_workspace(&me(), "dev").unwrap();
    assert!(w.current.is_none());
    assert_ne!(w.latest_snapshot, Some(snap));
    assert!(e.get_snapshot(&me(), &snap.to_string()).is_err());

    e.delete_workspace(&me(), "dev", Some(None)).await.unwrap();
    assert!(e.get_workspace(&me(), "dev").is_err());
    // Its last snapshot is the owner's still.
    assert!(e
        .get_snapshot(&me(), &w.latest_snapshot.unwrap().to_string())
        .is_ok());
}

/// A workspace whose lock is held (a wake running a long bootstrap, say)
/// holds up no other sandbox's reaping: its hibernation is left for a
/// later pass.
#[tokio::test]
async fn a_busy_workspace_never_stalls_the_reaper() {
    let r = Rig::new();
    let e = &r.engine;
    let spec: SandboxSpec = serde_json::from_value(json!({"idle_timeout_secs": 1})).unwrap();
    let w = e
        .create_workspace(
            &me(),
            WorkspaceRequest {
                name: "busy".into(),
                spec,
                on_idle: IdleAction::Hibernate,
                ..Default::default()
            },
        )
        .await
        .unwrap();
    let boxed = e
        .wake_workspace(&me(), "busy")
        .await
        .unwrap()
        .current
        .unwrap();
    let bob = Principal::new("bob");
    let ttl: SandboxSpec = serde_json::from_value(json!({"ttl_secs": 1})).unwrap();
    let (theirs, _) = e.create(&bob, ttl).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let held = e.lifecycles.lock(w.id).await;
    tokio::time::timeout(Duration::from_secs(2), e.reap_once())
        .await
        .expect("the reaper waited on a workspace's lock");
    assert_eq!(e.get(&bob, theirs.id).unwrap().state, State::Destroyed);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert_eq!(e.get(&me(), boxed).unwrap().state, State::Running);
    drop(held);
    // Free again: the next pass hibernates it.
    e.reap_once().await;
    for _ in 0..100 {
        if e.get_workspace(&me(), "busy").unwrap().current.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let w = e.get_workspace(&me(), "busy").unwrap();
    assert!(w.current.is_none() && w.latest_snapshot.is_some(), "{w:?}");
}

/// A workspace's sandbox whose TTL lapses (a policy's, say) is
/// hibernated, not destroyed with its files; and a snapshot another
/// workspace starts from is never taken away as superseded.
#[tokio::test]
async fn a_workspace_sandbox_past_its_ttl_hibernates_and_shared_snapshots_stay() {
    let r = Rig::new();
    let e = &r.engine;
    let spec: SandboxSpec = serde_json::from_value(json!({"ttl_secs": 1})).unwrap();
    e.create_workspace(
        &me(),
        WorkspaceRequest {
            name: "a".into(),
            spec,
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let first = e.wake_workspace(&me(), "a").await.unwrap().current.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    e.reap_once().await;
    let mut w = e.get_workspace(&me(), "a").unwrap();
    for _ in 0..100 {
        if w.current.is_none() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
        w = e.get_workspace(&me(), "a").unwrap();
    }
    assert!(w.current.is_none(), "{w:?}");
    let snap = w.latest_snapshot.expect("hibernated into a snapshot");
    assert_eq!(e.get(&me(), first).unwrap().state, State::Destroyed);

    // Workspace b starts from a's snapshot; a's next hibernation keeps it.
    e.create_workspace(
        &me(),
        WorkspaceRequest {
            name: "b".into(),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.update_workspace(
        &me(),
        "b",
        WorkspaceUpdate {
            latest_snapshot: Some(Some(snap)),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    e.wake_workspace(&me(), "a").await.unwrap();
    e.hibernate_workspace(&me(), "a").await.unwrap();
    assert!(e.get_snapshot(&me(), &snap.to_string()).is_ok());
    e.wake_workspace(&me(), "b").await.unwrap();
    // A spec no sandbox could be made of is refused at once, naming it.
    let bad: SandboxSpec = serde_json::from_value(json!({"memory_request_mb": 1 << 30})).unwrap();
    match e
        .create_workspace(
            &me(),
            WorkspaceRequest {
                name: "c".into(),
                spec: bad,
                ..Default::default()
            },
        )
        .await
    {
        Err(Error::Invalid { field, .. }) => assert_eq!(field, "spec.memory_request_mb"),
        other => panic!("{other:?}"),
    }
}

// ---- SSH keys -------------------------------------------------------------

const KEY_A: &str =
    "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIAQZpSZxLUrh352XvpRMfWR3aigcnRW3zqD1Pzv0KRH9 alice@laptop";
const KEY_A_FP: &str = "SHA256:5iNlev9LqQ/6/xM2KAjQTPVtnFSdVXjWjRviWzS1MFs";
const KEY_B: &str = "ecdsa-sha2-nistp256 AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBMQfpZ7OqIjq8VsAZrZv87S7SQpke7kbEtI+cWNASCtsuYYSsxyMNvgl5yRIBd7lH7KTKbwuP0rWi3JlO/2B6+k=";

#[tokio::test]
async fn ssh_keys_are_checked_named_listed_and_deleted() {
    let r = Rig::new();
    assert_eq!(check_ssh_public_key(KEY_A).unwrap(), KEY_A_FP);
    for bad in [
        "",
        "ssh-ed25519",
        "ssh-ed25519 not-base64!",
        "-----BEGIN OPENSSH PRIVATE KEY-----",
        &format!("{KEY_A}\n{KEY_B}"),
    ] {
        let e = r.engine.add_ssh_key(&me(), None, bad, None).unwrap_err();
        assert_eq!(e.field(), Some("public_key"), "{bad:?}: {e}");
    }
    let k = r
        .engine
        .add_ssh_key(&me(), None, &format!("  {KEY_A}\n"), None)
        .unwrap();
    assert_eq!(k.name, "alice@laptop");
    assert_eq!(k.fingerprint, KEY_A_FP);
    assert_eq!(k.public_key, KEY_A);
    // The same key again, account-wide: a conflict.
    let e = r.engine.add_ssh_key(&me(), None, KEY_A, None).unwrap_err();
    assert!(matches!(e, Error::Exists(_)), "{e}");
    // No comment: named by its fingerprint.
    let b = r.engine.add_ssh_key(&me(), None, KEY_B, None).unwrap();
    assert!(
        b.name.starts_with("SHA256:") && !b.name.contains('/'),
        "{}",
        b.name
    );
    // Another principal's sandbox is not one a key can be scoped to.
    let (sb, _) = r
        .engine
        .create(&Principal::new("bob"), keyed("b"))
        .await
        .unwrap();
    let e = r
        .engine
        .add_ssh_key(&me(), Some("x".into()), KEY_B, Some(sb.id))
        .unwrap_err();
    assert_eq!(e.field(), Some("sandbox"), "{e}");
    let e = r
        .engine
        .add_ssh_key(&me(), Some("\u{7}".into()), KEY_B, None)
        .unwrap_err();
    assert_eq!(e.field(), Some("name"), "{e}");
    assert_eq!(r.engine.ssh_keys(&me()).unwrap().len(), 2);
    assert!(r
        .engine
        .ssh_keys(&Principal::new("bob"))
        .unwrap()
        .is_empty());
    r.engine.delete_ssh_key(&me(), "alice@laptop").unwrap();
    r.engine.delete_ssh_key(&me(), &b.id.to_string()).unwrap();
    assert!(r.engine.delete_ssh_key(&me(), "alice@laptop").is_err());
    assert!(r.engine.ssh_keys(&me()).unwrap().is_empty());
}

#[tokio::test]
async fn ssh_login_takes_account_keys_and_scoped_keys_for_their_box_only() {
    let r = Rig::new();
    let bob = Principal::new("bob");
    let (a1, _) = r.engine.create(&me(), keyed("a1")).await.unwrap();
    let (a2, _) = r.engine.create(&me(), keyed("a2")).await.unwrap();
    let (b1, _) = r.engine.create(&bob, keyed("b1")).await.unwrap();
    // Nothing registered: nothing opens.
    assert!(r.engine.ssh_login(&a1.id.to_string(), KEY_A).is_err());
    // KEY_A account-wide for alice: both her boxes, by id or key.
    r.engine.add_ssh_key(&me(), None, KEY_A, None).unwrap();
    let (p, id) = r.engine.ssh_login(&a1.id.to_string(), KEY_A).unwrap();
    assert_eq!((p.id.as_str(), p.via, id), ("alice", "ssh", a1.id));
    assert_eq!(r.engine.ssh_login("a2", KEY_A).unwrap().1, a2.id);
    // ... never bob's.
    assert!(r.engine.ssh_login(&b1.id.to_string(), KEY_A).is_err());
    assert!(r.engine.ssh_login("b1", KEY_A).is_err());
    // KEY_B scoped to a1: a1 only.
    r.engine
        .add_ssh_key(&me(), None, KEY_B, Some(a1.id))
        .unwrap();
    assert_eq!(
        r.engine.ssh_login(&a1.id.to_string(), KEY_B).unwrap().1,
        a1.id
    );
    assert!(r.engine.ssh_login(&a2.id.to_string(), KEY_B).is_err());
    assert!(r.engine.ssh_login("a2", KEY_B).is_err());
    // Bob registering alice's key opens bob's boxes, not more of alice's.
    r.engine.add_ssh_key(&bob, None, KEY_B, None).unwrap();
    assert_eq!(
        r.engine.ssh_login(&b1.id.to_string(), KEY_B).unwrap().0.id,
        "bob"
    );
    assert!(r.engine.ssh_login(&a2.id.to_string(), KEY_B).is_err());
    // A destroyed box opens no more, and its scoped key goes with it.
    r.engine.destroy(&me(), a1.id).await.unwrap();
    assert!(r.engine.ssh_login(&a1.id.to_string(), KEY_A).is_err());
    assert!(r.engine.ssh_login(&a1.id.to_string(), KEY_B).is_err());
    assert_eq!(r.engine.ssh_keys(&me()).unwrap().len(), 1);
    // Garbage is refused, not a panic.
    assert!(r.engine.ssh_login("", "").is_err());
    assert!(r.engine.ssh_login("x", "ssh-ed25519 AAAA").is_err());
}

/// An API key of alice's: its id, the key, and the principal it stands for.
async fn keyed_alice(e: &Arc<Engine>) -> (String, String, Principal) {
    let (kid, key) = crate::auth::new_token();
    e.store()
        .insert_key(&kid, "k", "alice", &crate::auth::hash_token(&key))
        .unwrap();
    let alice = e.authenticate(&key).await.unwrap();
    (kid, key, alice)
}

#[tokio::test]
async fn tokens_are_exchanged_scoped_revoked_and_die_with_their_key() {
    let r = Rig::new();
    let e = &r.engine;
    let (kid, key, alice) = keyed_alice(e).await;
    let (a, _) = e.create(&alice, SandboxSpec::default()).await.unwrap();
    let (b, _) = e.create(&alice, SandboxSpec::default()).await.unwrap();

    // A session from the key: alice, with everything alice may.
    let s = e.exchange_key(&key).unwrap();
    let p = e.authenticate(&s.token).await.unwrap();
    assert_eq!((p.id.as_str(), p.scope.as_ref()), ("alice", None));
    assert!(e.exchange_key("pdk_nope").is_err());

    // A read-only token sees and reads, changes nothing.
    let ro = e
        .create_token(
            &p,
            0,
            crate::tokens::TokenScope {
                read_only: true,
                sandboxes: None,
            },
        )
        .unwrap();
    let day = (ro.info.expires_at - ro.info.created_at).num_seconds();
    assert_eq!(day, 86400);
    let rp = e.authenticate(&ro.token).await.unwrap();
    assert_eq!(e.list(&rp, &ListQuery::default()).unwrap().len(), 2);
    assert!(e.get(&rp, a.id).is_ok());
    for refused in [
        e.stop(&rp, a.id).await.map(|_| ()),
        e.create(&rp, SandboxSpec::default()).await.map(|_| ()),
        e.exec(&rp, a.id, &shell("true")).await.map(|_| ()),
        e.create_token(&rp, 60, Default::default()).map(|_| ()),
    ] {
        assert!(matches!(refused, Err(Error::Forbidden(_))), "{refused:?}");
    }

    // One scoped to sandbox a: b is not there at all, a is alice's.
    let only_a = e
        .create_token(
            &p,
            60,
            crate::tokens::TokenScope {
                read_only: false,
                sandboxes: Some(vec![a.id]),
            },
        )
        .unwrap();
    let ap = e.authenticate(&only_a.token).await.unwrap();
    let seen: Vec<Uuid> = e
        .list(&ap, &ListQuery::default())
        .unwrap()
        .iter()
        .map(|s| s.id)
        .collect();
    assert_eq!(seen, vec![a.id]);
    assert!(matches!(e.get(&ap, b.id), Err(Error::NotFound { .. })));
    assert!(matches!(
        e.stop(&ap, b.id).await,
        Err(Error::Forbidden(_) | Error::NotFound { .. })
    ));
    assert!(e.exec(&ap, a.id, &shell("true")).await.is_ok());
    assert!(matches!(
        e.create(&ap, SandboxSpec::default()).await,
        Err(Error::Forbidden(_))
    ));
    // Someone else's sandbox cannot be put in a scope.
    let bob = Principal::new("bob");
    assert!(e
        .create_token(
            &bob,
            60,
            crate::tokens::TokenScope {
                read_only: false,
                sandboxes: Some(vec![a.id]),
            }
        )
        .is_err());
    // Too long a life: 400 naming the field.
    let long = e
        .create_token(&p, 400 * 86400, Default::default())
        .unwrap_err();
    assert_eq!(long.field(), Some("expires_in"));

    // Listed without the token; revoked: refused at once.
    let listed = e.tokens(&p).unwrap();
    assert_eq!(listed.len(), 2);
    assert!(listed.iter().any(|t| t.jti == only_a.info.jti));
    e.revoke_token(&p, &only_a.info.jti).unwrap();
    assert!(matches!(
        e.authenticate(&only_a.token).await,
        Err(Error::Unauthenticated(_))
    ));
    assert!(e.revoke_token(&bob, &ro.info.jti).is_err());
    assert_eq!(e.tokens(&p).unwrap().len(), 1);

    // A rotation keeps what was signed before it.
    e.rotate_token_key(&Principal::local()).unwrap();
    assert!(e.authenticate(&ro.token).await.is_ok());
    assert!(e.rotate_token_key(&p).is_err());

    // The key revoked: its session and its tokens go with it.
    e.store().revoke_key(&kid).unwrap();
    assert!(e.authenticate(&s.token).await.is_err());
    assert!(e.authenticate(&ro.token).await.is_err());
}

fn on(net: &str, key: &str) -> SandboxSpec {
    SandboxSpec {
        key: Some(key.into()),
        network: Some(net.into()),
        ..Default::default()
    }
}

#[tokio::test]
async fn networks_are_their_owners_and_named_once() {
    let r = Rig::new();
    let bob = Principal::new("bob");
    let n = r.engine.create_network(&me(), Some("lab")).await.unwrap();
    assert!(n.id.starts_with("net-") && n.id.len() == 16, "{}", n.id);
    assert_eq!(n.status, "ready");
    assert!(!n.is_default);
    assert!(n.subnet.ends_with("/24"), "{}", n.subnet);
    assert!(matches!(
        r.engine.create_network(&me(), Some("lab")).await,
        Err(Error::Exists(_))
    ));
    // Bob may have one of the same name; he sees neither of alice's.
    let b = r.engine.create_network(&bob, Some("lab")).await.unwrap();
    assert_ne!(b.subnet, n.subnet);
    for who in [n.id.as_str(), "lab"] {
        assert_eq!(r.engine.get_network(&me(), who).unwrap().id, n.id);
    }
    assert!(matches!(
        r.engine.get_network(&bob, &n.id),
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        r.engine.delete_network(&bob, &n.id).await,
        Err(Error::NotFound { .. })
    ));
    // Nor may he put a sandbox on it.
    assert!(matches!(
        r.engine.create(&bob, on(&n.id, "x")).await,
        Err(Error::NotFound { .. })
    ));
    assert_eq!(r.engine.networks(&bob).unwrap().len(), 1);
    // Names are checked, naming the field.
    for bad in [
        "",
        "default",
        "-x",
        "a b",
        "net-0123456789ab",
        &"x".repeat(65),
    ] {
        match r.engine.create_network(&me(), Some(bad)).await {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "name", "{bad:?}"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // Unnamed ones are fine, any number of them (up to the cap).
    r.engine.create_network(&me(), None).await.unwrap();
    r.engine.create_network(&me(), None).await.unwrap();
    assert_eq!(r.engine.networks(&me()).unwrap().len(), 3);
}

#[tokio::test]
async fn the_default_network_is_made_once_on_first_use() {
    let r = Rig::new();
    assert!(matches!(
        r.engine.get_network(&me(), "default"),
        Err(Error::NotFound { .. })
    ));
    let m = me();
    let (a, b) = tokio::join!(r.engine.default_network(&m), r.engine.default_network(&m));
    let (a, b) = (a.unwrap(), b.unwrap());
    assert_eq!(a.id, b.id);
    assert!(a.is_default && a.name.is_none());
    assert_eq!(r.engine.get_network(&me(), "default").unwrap().id, a.id);
    // A create naming "default" joins it; bob's default is his own.
    let (sb, _) = r.engine.create(&me(), on("default", "s")).await.unwrap();
    assert_eq!(sb.config.network.as_deref(), Some(a.id.as_str()));
    let (bs, _) = r
        .engine
        .create(&Principal::new("bob"), on("default", "s"))
        .await
        .unwrap();
    assert_ne!(bs.config.network, sb.config.network);
    assert_eq!(r.engine.networks(&me()).unwrap().len(), 1);
    // Without a network, a sandbox stays isolated.
    let (iso, _) = r.engine.create(&me(), keyed("iso")).await.unwrap();
    assert_eq!(iso.config.network, None);
}

#[tokio::test]
async fn a_network_is_deleted_only_once_empty_and_members_know_each_other() {
    let r = Rig::new();
    let n = r.engine.create_network(&me(), Some("lab")).await.unwrap();
    let (a, _) = r.engine.create(&me(), on("lab", "web")).await.unwrap();
    let (b, _) = r.engine.create(&me(), on(&n.id, "db")).await.unwrap();
    let (c, _) = r.engine.create(&me(), keyed("alone")).await.unwrap();
    assert!(a.ip.is_some() && b.ip.is_some());
    // Each knows the other by id and key, and only the other.
    let pa = r.rt.peers_of(a.id);
    assert_eq!(
        pa,
        vec![(b.ip.clone().unwrap(), vec![b.id.to_string(), "db".into()])]
    );
    assert_eq!(
        r.rt.peers_of(b.id),
        vec![(a.ip.clone().unwrap(), vec![a.id.to_string(), "web".into()])]
    );
    assert!(r.rt.peers_of(c.id).is_empty());
    // Refused while a sandbox is on it, stopped ones too.
    r.engine.stop(&me(), a.id).await.unwrap();
    r.engine.destroy(&me(), b.id).await.unwrap();
    assert!(r.rt.peers_of(a.id).is_empty(), "b left");
    match r.engine.delete_network(&me(), "lab").await {
        Err(Error::Conflict(m)) => assert!(m.contains(&a.id.to_string()), "{m}"),
        other => panic!("{other:?}"),
    }
    r.engine.destroy(&me(), a.id).await.unwrap();
    r.engine.delete_network(&me(), "lab").await.unwrap();
    assert!(r.rt.network_ids().is_empty());
    assert!(matches!(
        r.engine.get_network(&me(), "lab"),
        Err(Error::NotFound { .. })
    ));
    // A network that is gone cannot be joined.
    assert!(matches!(
        r.engine.create(&me(), on("lab", "late")).await,
        Err(Error::NotFound { .. })
    ));
    // The name is free again.
    r.engine.create_network(&me(), Some("lab")).await.unwrap();
}

#[tokio::test]
async fn networks_have_a_cap_per_principal_and_come_back_after_a_restart() {
    let mut r = Rig::new();
    for i in 0..crate::model::MAX_NETWORKS_PER_OWNER {
        r.engine
            .create_network(&me(), Some(&format!("n{i}")))
            .await
            .unwrap();
    }
    assert!(matches!(
        r.engine.create_network(&me(), None).await,
        Err(Error::Quota(_))
    ));
    assert!(matches!(
        r.engine.default_network(&me()).await,
        Err(Error::Quota(_))
    ));
    // Another principal is not held back by alice's.
    r.engine
        .default_network(&Principal::new("bob"))
        .await
        .unwrap();
    let before = r.engine.networks(&me()).unwrap();
    r.rt.calls.lock().unwrap().clear();
    r.restart().await;
    assert_eq!(r.engine.networks(&me()).unwrap(), before);
    let calls = r.rt.calls.lock().unwrap().clone();
    for n in &before {
        assert!(
            calls.contains(&format!("ensure_network {}", n.id)),
            "{} not set up again: {calls:?}",
            n.id
        );
    }
}

#[tokio::test]
async fn a_fork_joins_its_parents_network() {
    let r = Rig::new();
    r.engine.create_network(&me(), Some("lab")).await.unwrap();
    let (a, _) = r.engine.create(&me(), on("lab", "web")).await.unwrap();
    let kids = r.engine.fork(&me(), a.id, 1, false).await.unwrap();
    assert_eq!(kids[0].config.network, a.config.network);
    assert_eq!(r.rt.peers_of(a.id).len(), 1);
}

fn ingress_rig() -> Rig {
    let r = Rig::new();
    r.engine.set_ingress(IngressConfig {
        zone: "Paddock.Localhost.".into(),
        port: 8443,
        scheme: "https",
        ca_pem: None,
    });
    r
}

#[tokio::test]
async fn proxies_are_explicit_named_and_go_with_the_sandbox() {
    let r = ingress_rig();
    let e = &r.engine;
    let sb = e.create(&me(), keyed("web")).await.unwrap().0;
    assert!(e.proxies(&me(), sb.id).unwrap().is_empty());
    e.create_proxy(&me(), sb.id, "api", 8080).await.unwrap();
    e.create_proxy(&me(), sb.id, "", 0).await.unwrap();
    let names: Vec<String> = e
        .proxies(&me(), sb.id)
        .unwrap()
        .into_iter()
        .map(|p| p.name)
        .collect();
    assert_eq!(names, ["", "api"], "the default first");
    assert!(matches!(
        e.create_proxy(&me(), sb.id, "api", 1).await,
        Err(Error::Exists(_))
    ));
    assert!(matches!(
        e.create_proxy(&me(), sb.id, "default", 1).await,
        Err(Error::Exists(_))
    ));
    for bad in ["API", "a_b", "-a", &"a".repeat(64), "a.b"] {
        match e.create_proxy(&me(), sb.id, bad, 1).await {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "name"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // Someone else's sandbox is not there.
    let bob = Principal::new("bob");
    assert!(matches!(
        e.create_proxy(&bob, sb.id, "x", 1).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.proxies(&bob, sb.id),
        Err(Error::NotFound { .. })
    ));
    // set_proxy_port: the default made when missing, another must exist.
    e.delete_proxy(&me(), sb.id, "default").await.unwrap();
    let p = e.set_proxy_port(&me(), sb.id, "", 3000).await.unwrap();
    assert_eq!((p.name.as_str(), p.port), ("", 3000));
    assert_eq!(
        e.set_proxy_port(&me(), sb.id, "api", 9).await.unwrap().port,
        9
    );
    assert!(matches!(
        e.set_proxy_port(&me(), sb.id, "nope", 9).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.delete_proxy(&me(), sb.id, "nope").await,
        Err(Error::NotFound { .. })
    ));
    // URLs name the box by its key's label.
    assert_eq!(
        e.ingress_url(&sb, "api").as_deref(),
        Some("https://api.web.paddock.localhost:8443")
    );
    assert_eq!(
        e.proxy_host(&sb, "").as_deref(),
        Some("web.paddock.localhost")
    );
    let route = e
        .ingress_route("API.web.paddock.localhost:8443")
        .unwrap()
        .unwrap();
    assert_eq!(
        (route.sandbox, route.port, route.needs_owner),
        (sb.id, 9, false)
    );
    let route = e
        .ingress_route(&format!("{}.paddock.localhost", sb.id))
        .unwrap()
        .unwrap();
    assert_eq!(route.port, 3000);
    e.destroy(&me(), sb.id).await.unwrap();
    assert!(matches!(
        e.ingress_route("web.paddock.localhost"),
        Err(Error::NotFound { .. })
    ));
    assert!(e.store().proxies(sb.id).unwrap().is_empty());
    assert_eq!(e.store().host_name("web").unwrap(), None);
}

#[tokio::test]
async fn host_names_never_reach_another_principals_sandbox() {
    let r = ingress_rig();
    let e = &r.engine;
    let bob = Principal::new("bob");
    let a = e.create(&me(), keyed("shop")).await.unwrap().0;
    e.create_proxy(&me(), a.id, "", 80).await.unwrap();
    // Bob's box with the same key does not get alice's name; it is
    // reached by its id.
    let b = e.create(&bob, keyed("shop")).await.unwrap().0;
    e.create_proxy(&bob, b.id, "", 81).await.unwrap();
    let route = e.ingress_route("shop.paddock.localhost").unwrap().unwrap();
    assert_eq!(route.sandbox, a.id);
    assert_eq!(
        e.proxy_host(&b, "").unwrap(),
        format!("{}.paddock.localhost", b.id)
    );
    // A key that is alice's id, or the `<port>-<id>` of her box, claims
    // nothing.
    for key in [a.id.to_string(), format!("80-{}", a.id)] {
        let sb = e.create(&bob, keyed(&key)).await.unwrap().0;
        e.create_proxy(&bob, sb.id, "", 81).await.unwrap();
        let host = format!("{key}.paddock.localhost");
        let route = e.ingress_route(&host).unwrap().unwrap();
        assert_eq!(route.sandbox, a.id, "{host}");
    }
    assert!(
        e.ingress_route(&format!("80-{}.paddock.localhost", a.id))
            .unwrap()
            .unwrap()
            .needs_owner
    );
    // Alice's domain: bound once, for good; bob can neither bind nor
    // unbind it.
    e.bind_domain(&me(), "Shop.Example.COM.", a.id)
        .await
        .unwrap();
    assert!(matches!(
        e.bind_domain(&bob, "shop.example.com", b.id).await,
        Err(Error::Exists(_))
    ));
    assert!(matches!(
        e.unbind_domain(&bob, "shop.example.com").await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.bind_domain(&bob, "x.example.com", a.id).await,
        Err(Error::NotFound { .. })
    ));
    let route = e.ingress_route("shop.example.com").unwrap().unwrap();
    assert_eq!((route.sandbox, route.port), (a.id, 80));
    assert_eq!(e.domains(&me()).unwrap().len(), 1);
    assert!(e.domains(&bob).unwrap().is_empty());
    for bad in [
        "localhost",
        "a..b",
        "10.0.0.1",
        "x.paddock.localhost",
        "a_b.com",
        "*.x.com",
    ] {
        match e.bind_domain(&me(), bad, a.id).await {
            Err(Error::Invalid { field, .. }) => assert_eq!(field, "domain"),
            other => panic!("{bad:?}: {other:?}"),
        }
    }
    // Foreign hosts are not the ingress's; unknown names in it are 404.
    for h in [
        "evil.com",
        "127.0.0.1:8443",
        "[::1]:8443",
        "paddock.localhost.evil.com",
    ] {
        assert_eq!(e.ingress_route(h).unwrap(), None, "{h}");
    }
    for h in [
        "nope.paddock.localhost",
        "a.b.c.paddock.localhost",
        "paddock.localhost",
    ] {
        assert!(
            matches!(e.ingress_route(h), Err(Error::NotFound { .. })),
            "{h}"
        );
    }
    // The port form needs the owner's bearer.
    let key = |who: &str| {
        let (id, token) = crate::auth::new_token();
        e.store()
            .insert_key(&id, who, who, &crate::auth::hash_token(&token))
            .unwrap();
        token
    };
    let (alice_key, bob_key) = (key("alice"), key("bob"));
    let route = e
        .ingress_route(&format!("80-{}.paddock.localhost", a.id))
        .unwrap()
        .unwrap();
    assert!(matches!(
        e.ingress_authorize(&route, None).await,
        Err(Error::Unauthenticated(_))
    ));
    assert!(matches!(
        e.ingress_authorize(&route, Some(&bob_key)).await,
        Err(Error::NotFound { .. })
    ));
    assert!(matches!(
        e.ingress_authorize(&route, Some("pdk_forged")).await,
        Err(Error::Unauthenticated(_))
    ));
    e.ingress_authorize(&route, Some(&alice_key)).await.unwrap();
    // A sandbox that is not there: the same answers, never a 404 that a
    // caller without a bearer could tell from a 401.
    let nobody = e
        .ingress_route(&format!("80-{}.paddock.localhost", Uuid::new_v4()))
        .unwrap()
        .unwrap();
    assert!(matches!(
        e.ingress_authorize(&nobody, None).await,
        Err(Error::Unauthenticated(_))
    ));
    assert!(matches!(
        e.ingress_authorize(&nobody, Some(&alice_key)).await,
        Err(Error::NotFound { .. })
    ));
    // Gone with the sandbox.
    e.destroy(&me(), a.id).await.unwrap();
    assert_eq!(e.ingress_route("shop.example.com").unwrap(), None);
    assert!(e.domains(&me()).unwrap().is_empty());
}

#[tokio::test]
async fn a_narrowed_token_reaches_no_port_beyond_its_scope() {
    let r = ingress_rig();
    let e = &r.engine;
    let (_, key, alice) = keyed_alice(e).await;
    let a = e.create(&alice, keyed("a")).await.unwrap().0;
    let b = e.create(&alice, keyed("b")).await.unwrap().0;
    let scoped = |read_only, sandboxes| crate::tokens::TokenScope {
        read_only,
        sandboxes,
    };
    let only_a = e
        .create_token(&alice, 60, scoped(false, Some(vec![a.id])))
        .unwrap()
        .token;
    let ro = e
        .create_token(&alice, 60, scoped(true, None))
        .unwrap()
        .token;
    // `<port>-<id>` of b with a token for a alone, or a read-only one:
    // refused; the key itself, or a's own port with a's token: let
    // through.
    let route_b = e
        .ingress_route(&format!("80-{}.paddock.localhost", b.id))
        .unwrap()
        .unwrap();
    let route_a = e
        .ingress_route(&format!("80-{}.paddock.localhost", a.id))
        .unwrap()
        .unwrap();
    assert!(e.ingress_authorize(&route_b, Some(&only_a)).await.is_err());
    assert!(e.ingress_authorize(&route_b, Some(&ro)).await.is_err());
    assert!(e.ingress_authorize(&route_a, Some(&only_a)).await.is_ok());
    assert!(e.ingress_authorize(&route_b, Some(&key)).await.is_ok());
    // The path proxy's target the same.
    let pa = e.authenticate(&only_a).await.unwrap();
    let pr = e.authenticate(&ro).await.unwrap();
    assert!(e.proxy_target(&pa, b.id, 80).await.is_err());
    assert!(matches!(
        e.proxy_target(&pr, a.id, 80).await,
        Err(Error::Forbidden(_))
    ));
}

#[tokio::test]
async fn a_narrowed_token_reaches_nothing_of_its_principals_beyond_it() {
    let r = Rig::new();
    let e = &r.engine;
    let (_, _, alice) = keyed_alice(e).await;
    let a = e.create(&alice, keyed("a")).await.unwrap().0;
    let b = e.create(&alice, keyed("b")).await.unwrap().0;
    let only_a = e
        .create_token(
            &alice,
            3600,
            crate::tokens::TokenScope {
                read_only: false,
                sandboxes: Some(vec![a.id]),
            },
        )
        .unwrap();
    let ap = e.authenticate(&only_a.token).await.unwrap();
    // Events: a's alone, not b's.
    e.touch(&alice, b.id).await.unwrap();
    e.exec(&alice, b.id, &shell("echo secret-of-b"))
        .await
        .unwrap();
    e.exec(&alice, a.id, &shell("echo mine")).await.unwrap();
    let mut evs = Box::pin(e.events(&ap, None, 0).unwrap());
    let mut seen = Vec::new();
    while let Ok(Some(ev)) = tokio::time::timeout(Duration::from_millis(300), evs.next()).await {
        seen.push(ev.sandbox_id);
    }
    assert!(
        !seen.is_empty() && seen.iter().all(|id| *id == a.id),
        "{seen:?}"
    );
    // Another of alice's volumes cannot be attached to its sandbox.
    let attach = e
        .attach_volume(
            &ap,
            a.id,
            VolumeRequest {
                name: "prod-data".into(),
                path: "/mnt/data".into(),
                read_only: true,
            },
        )
        .await;
    assert!(matches!(attach, Err(Error::Forbidden(_))), "{attach:?}");
    // Nor may a token register an SSH key (it would outlive it), even a
    // full one.
    const KEY: &str =
        "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGk0jZ8S5kt1FvQaAFJpzi0xw4LEkyc7vJ5nX9fCVx4p t@x";
    assert!(matches!(
        e.add_ssh_key(&ap, None, KEY, Some(a.id)),
        Err(Error::Forbidden(_))
    ));
    let full = e.create_token(&alice, 3600, Default::default()).unwrap();
    let fp = e.authenticate(&full.token).await.unwrap();
    assert!(matches!(
        e.add_ssh_key(&fp, None, KEY, None),
        Err(Error::Forbidden(_))
    ));
    // A token made with a token lives no longer than it, and dies with it.
    let child = e.create_token(&fp, 30 * 86400, Default::default()).unwrap();
    assert!(child.info.expires_at <= full.info.expires_at);
    assert_eq!(child.info.parent.as_deref(), Some(full.info.jti.as_str()));
    assert!(e.authenticate(&child.token).await.is_ok());
    e.revoke_token(&alice, &full.info.jti).unwrap();
    assert!(matches!(
        e.authenticate(&child.token).await,
        Err(Error::Unauthenticated(_))
    ));
}
