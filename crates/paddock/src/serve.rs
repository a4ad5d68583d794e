//! `paddock serve`: wires the store, the backends, the engine and the API.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use anyhow::Context;
use paddock_core::{Engine, EngineConfig, Runtime};
use paddock_runtime::{ContainerConfig, ContainerRuntime, NetConfig};

#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    /// Address of the native API. Not loopback: every request needs an API key.
    #[arg(long, default_value = "127.0.0.1:7070", env = "PADDOCK_LISTEN")]
    pub listen: SocketAddr,
    #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_DATA_DIR")]
    pub data_dir: PathBuf,
    /// crun, runc or a path (default: crun where it works, else runc).
    #[arg(long, env = "PADDOCK_OCI_RUNTIME")]
    pub oci_runtime: Option<String>,
    /// The paddock-agent binary (default: next to this binary).
    #[arg(long, env = "PADDOCK_AGENT")]
    pub agent: Option<PathBuf>,
    /// Host bridge for sandbox networking.
    #[arg(long, default_value = "paddock0")]
    pub bridge: String,
    /// The bridge's address; sandboxes get addresses in its /16.
    #[arg(long, default_value = "10.88.0.1")]
    pub gateway: std::net::Ipv4Addr,
    /// Seconds between reaper passes (TTL and idle timeouts).
    #[arg(long, default_value_t = 1.0)]
    pub reap_interval: f64,
    /// A registry reached over plain HTTP (`HOST:PORT`); repeatable.
    #[arg(long = "insecure-registry", value_name = "HOST:PORT")]
    pub insecure_registries: Vec<String>,
    /// A mirror for a registry, tried first: `docker.io=http://127.0.0.1:5000`; repeatable.
    #[arg(long = "registry-mirror", value_name = "REGISTRY=URL")]
    pub registry_mirrors: Vec<String>,
    /// Pull another reference for this one: `FROM=TO`; repeatable.
    #[arg(long = "image-alias", value_name = "FROM=TO")]
    pub image_aliases: Vec<String>,
    /// Network namespaces kept wired for the next creates.
    #[arg(long, default_value_t = 4)]
    pub net_pool: usize,
    /// Destroy every sandbox of this data dir, then exit (no server).
    #[arg(long)]
    pub cleanup: bool,
}

pub fn find_agent(explicit: Option<PathBuf>) -> anyhow::Result<PathBuf> {
    if let Some(p) = explicit {
        return Ok(p);
    }
    let exe = std::env::current_exe()?;
    let dir = exe.parent().context("binary has no directory")?;
    let candidates = [
        dir.join("paddock-agent"),
        dir.join("../x86_64-unknown-linux-gnu/release/paddock-agent"),
        dir.join("../../x86_64-unknown-linux-gnu/release/paddock-agent"),
        PathBuf::from("/usr/local/lib/paddock/paddock-agent"),
    ];
    candidates
        .iter()
        .find(|p| p.is_file())
        .cloned()
        .with_context(|| {
            format!("no paddock-agent binary found (looked at {candidates:?}); pass --agent")
        })
}

/// Raises the soft open-files limit to the hard one: the daemon holds a
/// connection per sandbox.
fn raise_nofile() {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit with a valid, owned struct.
    unsafe {
        if libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) == 0 && lim.rlim_cur < lim.rlim_max {
            lim.rlim_cur = lim.rlim_max;
            libc::setrlimit(libc::RLIMIT_NOFILE, &lim);
        }
    }
}

pub async fn run(args: ServeArgs) -> anyhow::Result<()> {
    raise_nofile();
    std::fs::create_dir_all(&args.data_dir)
        .with_context(|| format!("create {}", args.data_dir.display()))?;
    let agent = find_agent(args.agent.clone())?;
    let store = Arc::new(paddock_core::store::Store::open(
        &args.data_dir.join("paddock.db"),
    )?);
    let container = ContainerRuntime::new(ContainerConfig {
        data_dir: args.data_dir.clone(),
        oci_runtime: args.oci_runtime.clone(),
        agent_path: agent.clone(),
        net: NetConfig {
            bridge: args.bridge.clone(),
            gateway: args.gateway,
        },
        net_pool: if args.cleanup { 0 } else { args.net_pool },
    })
    .await?;
    tracing::info!(oci = container.oci_runtime(), agent = %agent.display(), "container backend ready");
    let runtimes: Vec<Arc<dyn Runtime>> = vec![Arc::new(container)];
    let pair = |s: &String, what: &str| -> anyhow::Result<(String, String)> {
        s.split_once('=')
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .with_context(|| format!("{what} {s:?}: use A=B"))
    };
    let images = paddock_image::ImageStore::new(
        &args.data_dir.join("images"),
        paddock_image::ImageSettings {
            insecure: args.insecure_registries.clone(),
            mirrors: args
                .registry_mirrors
                .iter()
                .map(|m| pair(m, "--registry-mirror"))
                .collect::<anyhow::Result<_>>()?,
            aliases: args
                .image_aliases
                .iter()
                .map(|m| pair(m, "--image-alias"))
                .collect::<anyhow::Result<_>>()?,
        },
    )?;
    let engine = Engine::new(
        store,
        runtimes,
        Some(Arc::new(images)),
        EngineConfig {
            reap_interval: std::time::Duration::from_secs_f64(args.reap_interval.max(0.05)),
            ..Default::default()
        },
    );
    if args.cleanup {
        let n = engine.destroy_all().await?;
        eprintln!("destroyed {n} sandboxes");
        return Ok(());
    }
    engine.recover().await?;
    engine.spawn_reaper();
    let open = args.listen.ip().is_loopback();
    if !open {
        tracing::info!("listening beyond loopback: every request needs an API key");
    }
    let app = paddock_api::router(paddock_api::AppState {
        engine: engine.clone(),
        open,
    });
    let listener = tokio::net::TcpListener::bind(args.listen)
        .await
        .with_context(|| format!("listen on {}", args.listen))?;
    tracing::info!("paddock serving the native API on http://{}", args.listen);
    axum::serve(listener, app)
        .with_graceful_shutdown(async {
            let mut term =
                tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
                    .expect("signal");
            tokio::select! {
                _ = tokio::signal::ctrl_c() => {},
                _ = term.recv() => {},
            }
        })
        .await?;
    engine.shutdown().await;
    Ok(())
}
