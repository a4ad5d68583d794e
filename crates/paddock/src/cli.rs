//! The client commands: they speak the native API, as any client would.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::PathBuf;

use anyhow::{bail, Context, Result};
use clap::Subcommand;
use futures::{SinkExt, StreamExt};
use serde_json::{json, Value};
use tokio::io::AsyncReadExt;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

#[derive(Subcommand, Debug)]
pub enum ClientCmd {
    /// Create a sandbox (and print its id).
    Create {
        #[arg(long)]
        key: Option<String>,
        /// Take defaults from this template (flags override them).
        #[arg(long)]
        template: Option<String>,
        #[command(flatten)]
        spec: SpecArgs,
        /// The main process.
        #[arg(last = true)]
        command: Vec<String>,
    },
    /// List sandboxes.
    Ls {
        #[arg(long)]
        state: Option<String>,
        #[arg(long = "label", value_name = "K=V")]
        labels: Vec<String>,
    },
    /// Show one sandbox.
    Inspect {
        id: String,
    },
    /// Run a command; prints its output and exits with its exit code.
    Exec {
        id: String,
        #[arg(long = "env", short = 'e', value_name = "K=V")]
        env: Vec<String>,
        #[arg(long, short = 'w')]
        cwd: Option<String>,
        #[arg(long, short = 'u')]
        user: Option<String>,
        /// Seconds.
        #[arg(long)]
        timeout: Option<f64>,
        /// Allocate a terminal.
        #[arg(long, short = 't')]
        tty: bool,
        #[arg(last = true, required = true)]
        command: Vec<String>,
    },
    /// An interactive shell in the sandbox.
    Shell {
        id: String,
        #[arg(long, default_value = "/bin/bash")]
        shell: String,
    },
    /// Copy files: `paddock cp ./local ID:/path` or `paddock cp ID:/path ./local`.
    Cp {
        src: String,
        dst: String,
    },
    /// Destroy sandboxes.
    Rm {
        #[arg(required = true)]
        ids: Vec<String>,
    },
    /// Stop a sandbox (its filesystem is kept).
    Stop {
        id: String,
    },
    /// Start a stopped sandbox.
    Start {
        id: String,
    },
    Pause {
        id: String,
    },
    Resume {
        id: String,
    },
    /// The main process's output.
    Logs {
        id: String,
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Lifecycle and activity events (one sandbox, or all).
    Events {
        id: Option<String>,
        /// Resume after this event id.
        #[arg(long)]
        after: Option<i64>,
        /// Stop after this many events.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Resource usage from cgroups.
    Metrics {
        id: String,
    },
    /// Ports listening in the sandbox.
    Ports {
        id: String,
    },
    /// Images in the daemon's cache.
    #[command(subcommand)]
    Images(ImagesCmd),
    /// The backends the daemon runs sandboxes on, and what each can do.
    Backends,
    /// Templates: a named image plus sandbox defaults.
    #[command(subcommand)]
    Templates(TemplatesCmd),
}

/// What a sandbox (or a template's defaults) is made of.
#[derive(clap::Args, Debug)]
pub struct SpecArgs {
    #[arg(long)]
    image: Option<String>,
    #[arg(long)]
    cpu: Option<f64>,
    /// MiB
    #[arg(long, allow_negative_numbers = true)]
    memory: Option<i64>,
    /// MiB
    #[arg(long, allow_negative_numbers = true)]
    disk: Option<i64>,
    #[arg(long = "label", value_name = "K=V")]
    labels: Vec<String>,
    #[arg(long = "env", short = 'e', value_name = "K=V")]
    env: Vec<String>,
    #[arg(long)]
    cwd: Option<String>,
    /// Seconds until it is destroyed.
    #[arg(long)]
    ttl: Option<u64>,
    /// Seconds of inactivity until it is destroyed.
    #[arg(long)]
    idle_timeout: Option<u64>,
    #[arg(long = "port")]
    ports: Vec<u16>,
    #[arg(long)]
    isolation: Option<String>,
}

impl SpecArgs {
    /// The spec as JSON, with only what was given.
    fn to_json(&self, command: &[String]) -> Result<Value> {
        let mut spec = json!({});
        let mut set = |k: &str, v: Value| {
            if !v.is_null() {
                spec[k] = v;
            }
        };
        set("image", json!(self.image));
        set("cpu", json!(self.cpu));
        set("memory_mb", json!(self.memory));
        set("disk_mb", json!(self.disk));
        set("cwd", json!(self.cwd));
        set("ttl_secs", json!(self.ttl));
        set("idle_timeout_secs", json!(self.idle_timeout));
        set("isolation", json!(self.isolation));
        if !self.labels.is_empty() {
            set("labels", json!(kv(&self.labels, "label")?));
        }
        if !self.env.is_empty() {
            set("env", json!(kv(&self.env, "env")?));
        }
        if !self.ports.is_empty() {
            set("ports", json!(self.ports));
        }
        if !command.is_empty() {
            set("command", json!(command));
        }
        Ok(spec)
    }
}

#[derive(Subcommand, Debug)]
pub enum TemplatesCmd {
    /// Store a template (its image is pulled now).
    Create {
        name: String,
        #[command(flatten)]
        spec: Box<SpecArgs>,
        /// The main process of sandboxes made from it.
        #[arg(last = true)]
        command: Vec<String>,
    },
    Ls,
    Inspect {
        name: String,
    },
    /// Delete a template (sandboxes made from it stay).
    Rm {
        name: String,
    },
}

#[derive(Subcommand, Debug)]
pub enum ImagesCmd {
    Ls,
    /// Pull an image into the daemon's cache.
    Pull {
        reference: String,
    },
    Inspect {
        reference: String,
    },
    /// Forget an image (its layers stay until a prune).
    Rm {
        reference: String,
    },
    /// Remove cached layers that no image and no sandbox needs.
    Prune,
}

#[derive(Subcommand, Debug)]
pub enum KeysCmd {
    /// Create a key; the token is shown once.
    Create {
        #[arg(long, default_value = "default")]
        name: String,
        /// Who the key acts as (sandboxes belong to their principal).
        #[arg(long)]
        principal: Option<String>,
        #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
    },
    Ls {
        #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Revoke a key by id or name.
    Revoke {
        key: String,
        #[arg(long, default_value = "/var/lib/paddock", env = "PADDOCK_DATA_DIR")]
        data_dir: PathBuf,
    },
}

pub fn keys(cmd: KeysCmd, json_out: bool) -> Result<()> {
    let open = |d: &PathBuf| -> Result<paddock_core::store::Store> {
        std::fs::create_dir_all(d)?;
        Ok(paddock_core::store::Store::open(&d.join("paddock.db"))?)
    };
    match cmd {
        KeysCmd::Create {
            name,
            principal,
            data_dir,
        } => {
            let store = open(&data_dir)?;
            let (id, token) = paddock_core::auth::new_token();
            let principal = principal.unwrap_or_else(|| name.clone());
            if principal.starts_with("paddock:") {
                anyhow::bail!("principal {principal:?}: names starting with paddock: are reserved");
            }
            store.insert_key(
                &id,
                &name,
                &principal,
                &paddock_core::auth::hash_token(&token),
            )?;
            if json_out {
                println!(
                    "{}",
                    json!({"id": id, "name": name, "principal": principal, "token": token})
                );
            } else {
                println!("{token}");
                eprintln!("key {id} ({name}) acts as {principal:?}; the token is not shown again");
            }
        }
        KeysCmd::Ls { data_dir } => {
            let keys = open(&data_dir)?.list_keys()?;
            if json_out {
                println!("{}", serde_json::to_string_pretty(&keys)?);
            } else {
                let mut t = table(&["ID", "NAME", "PRINCIPAL", "CREATED", "REVOKED"]);
                for k in keys {
                    t.add_row(vec![
                        k.id,
                        k.name,
                        k.principal,
                        k.created_at.to_rfc3339(),
                        k.revoked_at.map(|r| r.to_rfc3339()).unwrap_or_default(),
                    ]);
                }
                println!("{t}");
            }
        }
        KeysCmd::Revoke { key, data_dir } => {
            if !open(&data_dir)?.revoke_key(&key)? {
                bail!("no active key {key:?}");
            }
            eprintln!("revoked {key}");
        }
    }
    Ok(())
}

fn table(headers: &[&str]) -> comfy_table::Table {
    let mut t = comfy_table::Table::new();
    t.load_preset(comfy_table::presets::NOTHING)
        .set_header(headers.to_vec());
    t
}

fn kv(items: &[String], what: &str) -> Result<BTreeMap<String, String>> {
    items
        .iter()
        .map(|s| {
            s.split_once('=')
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .with_context(|| format!("{what} {s:?}: use K=V"))
        })
        .collect()
}

/// Where the CLI reaches the daemon.
#[derive(Debug, Clone)]
pub enum Endpoint {
    /// The native API's TCP listener: `http://HOST:PORT`.
    Url(String),
    /// The daemon's unix socket (`--host unix:///PATH`).
    Socket(PathBuf),
}

impl Endpoint {
    /// `--host` (or `PADDOCK_HOST`) if given; else the daemon's unix socket
    /// if it exists and we may open it (`PADDOCK_SOCKET`, default
    /// /run/paddock.sock), as docker does; else the default TCP listener.
    pub fn resolve(host: Option<String>) -> Endpoint {
        match host {
            Some(h) => match h.strip_prefix("unix://") {
                Some(p) => Endpoint::Socket(PathBuf::from(p)),
                None => Endpoint::Url(h.trim_end_matches('/').to_string()),
            },
            None => {
                let sock = std::env::var_os("PADDOCK_SOCKET")
                    .map(PathBuf::from)
                    .unwrap_or_else(|| PathBuf::from(crate::serve::DEFAULT_SOCKET));
                use nix::unistd::{access, AccessFlags};
                match access(&sock, AccessFlags::R_OK | AccessFlags::W_OK) {
                    Ok(()) => Endpoint::Socket(sock),
                    Err(_) => Endpoint::Url("http://127.0.0.1:7070".into()),
                }
            }
        }
    }

    /// The base URL of requests (over the socket, its host is a placeholder).
    fn base(&self) -> &str {
        match self {
            Endpoint::Url(u) => u,
            Endpoint::Socket(_) => "http://localhost",
        }
    }
}

impl std::fmt::Display for Endpoint {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Endpoint::Url(u) => f.write_str(u),
            Endpoint::Socket(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

pub struct Client {
    host: Endpoint,
    key: Option<String>,
    json: bool,
    http: reqwest::Client,
}

impl Client {
    pub fn new(host: Endpoint, key: Option<String>, json: bool) -> Client {
        let http = match &host {
            Endpoint::Url(_) => reqwest::Client::new(),
            Endpoint::Socket(p) => reqwest::Client::builder()
                .unix_socket(p.as_path())
                .build()
                .unwrap_or_default(),
        };
        Client {
            host,
            key,
            json,
            http,
        }
    }

    fn req(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}/v1{path}", self.host.base()));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        r
    }

    async fn send(&self, rb: reqwest::RequestBuilder) -> Result<reqwest::Response> {
        let resp = rb.send().await.with_context(|| {
            format!(
                "cannot reach the paddock daemon at {} (is `paddock serve` running?)",
                self.host
            )
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let body: Value = resp.json().await.unwrap_or(Value::Null);
        let detail = body["detail"].as_str().unwrap_or("").to_string();
        bail!("{status}: {detail}")
    }

    /// Pulls through the streaming form of `POST /images`, drawing a
    /// progress bar on stderr (when it is a terminal); returns the image.
    async fn pull_with_progress(&self, reference: &str) -> Result<Value> {
        let resp = self
            .send(
                self.req(reqwest::Method::POST, "/images")
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .json(&json!({ "reference": reference })),
            )
            .await?;
        let bar = indicatif::ProgressBar::new(0);
        bar.set_style(
            indicatif::ProgressStyle::with_template(
                "{msg:<24} [{bar:30}] {bytes}/{total_bytes} {bytes_per_sec} {eta}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_message(format!("resolving {reference}"));
        let mut stream = resp.bytes_stream();
        let mut buf = String::new();
        while let Some(chunk) = stream.next().await {
            buf.push_str(&String::from_utf8_lossy(&chunk?));
            while let Some(end) = buf.find("\n\n") {
                let frame: String = buf.drain(..end + 2).collect();
                let mut event = "message";
                let mut data = String::new();
                for line in frame.lines() {
                    if let Some(e) = line.strip_prefix("event:") {
                        event = e.trim();
                    } else if let Some(d) = line.strip_prefix("data:") {
                        data.push_str(d.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                let v: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                match event {
                    "progress" => {
                        bar.set_length(v["total"].as_u64().unwrap_or(0));
                        bar.set_position(v["current"].as_u64().unwrap_or(0));
                        let layer: String = v["layer"]
                            .as_str()
                            .map(|l| l.trim_start_matches("sha256:").chars().take(12).collect())
                            .unwrap_or_default();
                        bar.set_message(format!("{} {layer}", v["status"].as_str().unwrap_or("")));
                    }
                    "pulled" => {
                        bar.finish_and_clear();
                        return Ok(v);
                    }
                    "error" => {
                        bar.abandon();
                        bail!("{}", v["detail"].as_str().unwrap_or(&data));
                    }
                    _ => {}
                }
            }
        }
        bar.abandon();
        bail!("the daemon closed the pull stream without a result")
    }

    async fn json_of(&self, rb: reqwest::RequestBuilder) -> Result<Value> {
        Ok(self.send(rb).await?.json().await?)
    }

    fn print_sandboxes(&self, list: &[Value]) {
        let mut t = table(&["ID", "STATE", "KEY", "IMAGE", "CPU", "MEMORY", "CREATED"]);
        for s in list {
            t.add_row(vec![
                s["id"].as_str().unwrap_or("").to_string(),
                s["state"].as_str().unwrap_or("").to_string(),
                s["key"].as_str().unwrap_or("").to_string(),
                s["config"]["image"]
                    .as_str()
                    .unwrap_or("(host)")
                    .to_string(),
                s["config"]["cpu"].to_string(),
                format!("{} MiB", s["config"]["memory_mb"]),
                s["created_at"].as_str().unwrap_or("").to_string(),
            ]);
        }
        println!("{t}");
    }

    pub async fn run(&self, cmd: ClientCmd) -> Result<i32> {
        use reqwest::Method;
        match cmd {
            ClientCmd::Create {
                key,
                template,
                spec,
                command,
            } => {
                let mut spec = spec.to_json(&command)?;
                if let Some(k) = key {
                    spec["key"] = json!(k);
                }
                if let Some(t) = template {
                    spec["template"] = json!(t);
                }
                let sb = self
                    .json_of(self.req(Method::POST, "/sandboxes").json(&spec))
                    .await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&sb)?);
                } else {
                    println!("{}", sb["id"].as_str().unwrap_or(""));
                }
            }
            ClientCmd::Ls { state, labels } => {
                let mut q = vec![("limit".to_string(), "1000".to_string())];
                if let Some(s) = state {
                    q.push(("state".into(), s));
                }
                if !labels.is_empty() {
                    q.push(("labels".into(), labels.join(",")));
                }
                let v = self
                    .json_of(self.req(Method::GET, "/sandboxes").query(&q))
                    .await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v["sandboxes"])?);
                } else {
                    self.print_sandboxes(
                        v["sandboxes"]
                            .as_array()
                            .map(|a| a.as_slice())
                            .unwrap_or(&[]),
                    );
                }
            }
            ClientCmd::Inspect { id } => {
                let v = self
                    .json_of(self.req(Method::GET, &format!("/sandboxes/{id}")))
                    .await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            ClientCmd::Rm { ids } => {
                let mut failed = 0;
                for id in ids {
                    match self
                        .send(self.req(Method::DELETE, &format!("/sandboxes/{id}")))
                        .await
                    {
                        Ok(_) => println!("{id}"),
                        Err(e) => {
                            eprintln!("paddock: {id}: {e}");
                            failed += 1;
                        }
                    }
                }
                return Ok(if failed > 0 { 1 } else { 0 });
            }
            ClientCmd::Stop { id } => self.lifecycle(&id, "stop").await?,
            ClientCmd::Start { id } => self.lifecycle(&id, "start").await?,
            ClientCmd::Pause { id } => self.lifecycle(&id, "pause").await?,
            ClientCmd::Resume { id } => self.lifecycle(&id, "resume").await?,
            ClientCmd::Exec {
                id,
                env,
                cwd,
                user,
                timeout,
                tty,
                command,
            } => {
                let mut req = json!({"cmd": command, "env": kv(&env, "env")?});
                if let Some(c) = cwd {
                    req["cwd"] = json!(c);
                }
                if let Some(u) = user {
                    req["user"] = json!(u);
                }
                if let Some(t) = timeout {
                    req["timeout"] = json!(t);
                }
                return self.interactive(&id, req, tty).await;
            }
            ClientCmd::Shell { id, shell } => {
                let req = json!({"cmd": [shell, "-l"], "env": {"TERM": std::env::var("TERM").unwrap_or_else(|_| "xterm".into())}});
                return self.interactive(&id, req, true).await;
            }
            ClientCmd::Cp { src, dst } => self.cp(&src, &dst).await?,
            ClientCmd::Logs { id, follow } => {
                let mut resp = self
                    .send(
                        self.req(Method::GET, &format!("/sandboxes/{id}/logs"))
                            .query(&[("follow", follow)]),
                    )
                    .await?;
                let mut out = std::io::stdout();
                while let Some(chunk) = resp.chunk().await? {
                    out.write_all(&chunk)?;
                    out.flush()?;
                }
            }
            ClientCmd::Events { id, after, limit } => {
                let path = match &id {
                    Some(id) => format!("/sandboxes/{id}/events"),
                    None => "/events".into(),
                };
                let mut rb = self.req(Method::GET, &path);
                if let Some(a) = after {
                    rb = rb.query(&[("after", a)]);
                }
                let resp = self.send(rb).await?;
                let mut stream = resp.bytes_stream();
                let mut buf = String::new();
                let mut seen = 0usize;
                while let Some(chunk) = stream.next().await {
                    buf.push_str(&String::from_utf8_lossy(&chunk?));
                    while let Some(end) = buf.find("\n\n") {
                        let frame: String = buf.drain(..end + 2).collect();
                        let data: String = frame
                            .lines()
                            .filter_map(|l| l.strip_prefix("data:"))
                            .map(|d| d.trim_start())
                            .collect::<Vec<_>>()
                            .join("\n");
                        if data.is_empty() {
                            continue;
                        }
                        let ev: Value = serde_json::from_str(&data).unwrap_or(Value::Null);
                        if self.json {
                            println!("{data}");
                        } else {
                            println!(
                                "{:>6} {} {} {:<18} {}",
                                if id.is_some() {
                                    ev["id"].to_string()
                                } else {
                                    ev["seq"].to_string()
                                },
                                ev["time"].as_str().unwrap_or(""),
                                ev["sandbox_id"].as_str().unwrap_or(""),
                                ev["kind"].as_str().unwrap_or(""),
                                ev["data"]
                            );
                        }
                        std::io::stdout().flush()?;
                        seen += 1;
                        if limit.is_some_and(|l| seen >= l) {
                            return Ok(0);
                        }
                    }
                }
            }
            ClientCmd::Metrics { id } => {
                let v = self
                    .json_of(self.req(Method::GET, &format!("/sandboxes/{id}/metrics")))
                    .await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    let mut t = table(&["METRIC", "VALUE"]);
                    if let Some(o) = v.as_object() {
                        for (k, val) in o {
                            t.add_row(vec![k.clone(), val.to_string()]);
                        }
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Templates(TemplatesCmd::Create {
                name,
                spec,
                command,
            }) => {
                let mut body = spec.to_json(&command)?;
                body["name"] = json!(name);
                let t = self
                    .json_of(self.req(Method::POST, "/templates").json(&body))
                    .await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&t)?);
                } else {
                    println!("{}", t["name"].as_str().unwrap_or(""));
                }
            }
            ClientCmd::Templates(TemplatesCmd::Ls) => {
                let v = self.json_of(self.req(Method::GET, "/templates")).await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v["templates"])?);
                } else {
                    let mut t = table(&["NAME", "IMAGE", "CPU", "MEMORY", "CREATED"]);
                    for i in v["templates"].as_array().into_iter().flatten() {
                        let d = &i["defaults"];
                        let or_default = |v: &Value, dflt: &str| match v {
                            Value::Null => dflt.to_string(),
                            Value::String(s) => s.clone(),
                            other => other.to_string(),
                        };
                        t.add_row(vec![
                            i["name"].as_str().unwrap_or("").to_string(),
                            or_default(&d["image"], "(host)"),
                            or_default(&d["cpu"], "-"),
                            or_default(&d["memory_mb"], "-"),
                            i["created_at"].as_str().unwrap_or("").to_string(),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Templates(TemplatesCmd::Inspect { name }) => {
                let v = self
                    .json_of(self.req(Method::GET, &format!("/templates/{name}")))
                    .await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            ClientCmd::Templates(TemplatesCmd::Rm { name }) => {
                self.send(self.req(Method::DELETE, &format!("/templates/{name}")))
                    .await?;
                if !self.json {
                    println!("{name}");
                }
            }
            ClientCmd::Backends => {
                let v = self.json_of(self.req(Method::GET, "/backends")).await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v["backends"])?);
                } else {
                    let mut t = table(&["NAME", "ISOLATION", "DEFAULT", "CAN"]);
                    for b in v["backends"].as_array().cloned().unwrap_or_default() {
                        let can: Vec<String> = b["capabilities"]
                            .as_object()
                            .map(|m| {
                                m.iter()
                                    .filter(|(_, v)| v.as_bool() == Some(true))
                                    .map(|(k, _)| k.replace('_', " "))
                                    .collect()
                            })
                            .unwrap_or_default();
                        t.add_row(vec![
                            b["name"].as_str().unwrap_or("").to_string(),
                            b["isolation"].as_str().unwrap_or("").to_string(),
                            if b["default"] == true { "yes" } else { "" }.to_string(),
                            can.join(", "),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Images(ImagesCmd::Ls) => {
                let v = self.json_of(self.req(Method::GET, "/images")).await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v["images"])?);
                } else {
                    let mut t = table(&["REFERENCE", "DIGEST", "LAYERS", "SIZE"]);
                    for i in v["images"].as_array().cloned().unwrap_or_default() {
                        t.add_row(vec![
                            i["reference"].as_str().unwrap_or("").to_string(),
                            i["digest"]
                                .as_str()
                                .unwrap_or("")
                                .chars()
                                .take(19)
                                .collect(),
                            i["layers"].to_string(),
                            format!("{:.1} MB", i["size"].as_f64().unwrap_or(0.0) / 1e6),
                        ]);
                    }
                    println!("{t}");
                }
            }
            ClientCmd::Images(ImagesCmd::Pull { reference }) => {
                let v = self.pull_with_progress(&reference).await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v)?);
                } else {
                    println!(
                        "{} {}",
                        v["reference"].as_str().unwrap_or(""),
                        v["digest"].as_str().unwrap_or("")
                    );
                }
            }
            ClientCmd::Images(ImagesCmd::Inspect { reference }) => {
                let v = self
                    .json_of(
                        self.req(Method::GET, "/images/inspect")
                            .query(&[("reference", &reference)]),
                    )
                    .await?;
                println!("{}", serde_json::to_string_pretty(&v)?);
            }
            ClientCmd::Images(ImagesCmd::Rm { reference }) => {
                self.send(
                    self.req(Method::DELETE, "/images")
                        .query(&[("reference", &reference)]),
                )
                .await?;
                println!("{reference}");
            }
            ClientCmd::Images(ImagesCmd::Prune) => {
                let v = self
                    .json_of(self.req(Method::POST, "/images/prune"))
                    .await?;
                if self.json {
                    println!("{v}");
                } else {
                    println!("removed {} layers", v["removed_layers"]);
                }
            }
            ClientCmd::Ports { id } => {
                let v = self
                    .json_of(self.req(Method::GET, &format!("/sandboxes/{id}/ports")))
                    .await?;
                if self.json {
                    println!("{}", serde_json::to_string_pretty(&v["ports"])?);
                } else {
                    let mut t = table(&["PORT", "ADDRESS", "LISTENING", "DECLARED"]);
                    for p in v["ports"].as_array().cloned().unwrap_or_default() {
                        t.add_row(vec![
                            p["port"].to_string(),
                            p["address"].as_str().unwrap_or("").to_string(),
                            p["listening"].to_string(),
                            p["declared"].to_string(),
                        ]);
                    }
                    println!("{t}");
                }
            }
        }
        Ok(0)
    }

    async fn lifecycle(&self, id: &str, verb: &str) -> Result<()> {
        let v = self
            .json_of(self.req(reqwest::Method::POST, &format!("/sandboxes/{id}/{verb}")))
            .await?;
        if self.json {
            println!("{}", serde_json::to_string_pretty(&v)?);
        } else {
            println!(
                "{} {}",
                v["id"].as_str().unwrap_or(id),
                v["state"].as_str().unwrap_or("")
            );
        }
        Ok(())
    }

    async fn cp(&self, src: &str, dst: &str) -> Result<()> {
        let remote = |s: &str| -> Option<(String, String)> {
            let (id, path) = s.split_once(':')?;
            (!id.is_empty() && path.starts_with('/')).then(|| (id.to_string(), path.to_string()))
        };
        match (remote(src), remote(dst)) {
            (None, Some((id, path))) => {
                let f = tokio::fs::File::open(src)
                    .await
                    .with_context(|| format!("open {src}"))?;
                let mode = {
                    use std::os::unix::fs::PermissionsExt;
                    f.metadata().await?.permissions().mode() & 0o7777
                };
                let body = reqwest::Body::wrap_stream(file_stream(f));
                let v = self
                    .json_of(
                        self.req(reqwest::Method::PUT, &format!("/sandboxes/{id}/files"))
                            .query(&[("path", path.as_str()), ("mode", &format!("{mode:o}"))])
                            .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                            .body(body),
                    )
                    .await?;
                if self.json {
                    println!("{v}");
                }
            }
            (Some((id, path)), None) => {
                let mut resp = self
                    .send(
                        self.req(reqwest::Method::GET, &format!("/sandboxes/{id}/files"))
                            .query(&[("path", path.as_str())]),
                    )
                    .await?;
                let mut f: Box<dyn Write> = if dst == "-" {
                    Box::new(std::io::stdout())
                } else {
                    let target = if std::path::Path::new(dst).is_dir() {
                        std::path::Path::new(dst)
                            .join(std::path::Path::new(&path).file_name().unwrap_or_default())
                    } else {
                        PathBuf::from(dst)
                    };
                    Box::new(
                        std::fs::File::create(&target)
                            .with_context(|| format!("create {}", target.display()))?,
                    )
                };
                while let Some(chunk) = resp.chunk().await? {
                    f.write_all(&chunk)?;
                }
                f.flush()?;
            }
            _ => bail!("give exactly one side as ID:/absolute/path"),
        }
        Ok(())
    }

    /// Runs a command over the WebSocket exec: output to our stdout and
    /// stderr, our stdin to it, and (with a terminal) raw mode and resizes.
    async fn interactive(&self, id: &str, mut req: Value, tty: bool) -> Result<i32> {
        let request = ws_request(self.host.base(), self.key.as_deref(), id)?;
        let connected = match &self.host {
            Endpoint::Url(_) => tokio_tungstenite::connect_async_with_config(request, None, true)
                .await
                .map(|(ws, _)| futures::future::Either::Left(ws)),
            Endpoint::Socket(p) => {
                let unix = tokio::net::UnixStream::connect(p)
                    .await
                    .with_context(|| format!("cannot reach the paddock daemon at {}", self.host))?;
                tokio_tungstenite::client_async_with_config(request, unix, None)
                    .await
                    .map(|(ws, _)| futures::future::Either::Right(ws))
            }
        };
        let ws = connected.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                let detail = serde_json::from_str::<Value>(&body)
                    .ok()
                    .and_then(|v| v["detail"].as_str().map(String::from))
                    .unwrap_or(body);
                anyhow::anyhow!("{}: {detail}", resp.status())
            }
            e => anyhow::anyhow!("cannot reach the paddock daemon at {}: {e}", self.host),
        })?;
        let (mut sink, mut stream) = ws.split();
        let raw = tty && crossterm::tty::IsTty::is_tty(&std::io::stdin());
        if tty {
            let (cols, rows) = crossterm::terminal::size().unwrap_or((80, 24));
            req["pty"] = json!({"rows": rows, "cols": cols});
        }
        sink.send(Message::Text(req.to_string().into())).await?;
        let _guard = if raw {
            crossterm::terminal::enable_raw_mode()?;
            Some(RawGuard)
        } else {
            None
        };
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Message>(16);
        // stdin
        let tx_in = tx.clone();
        tokio::spawn(async move {
            let mut stdin = tokio::io::stdin();
            let mut buf = vec![0u8; 16 * 1024];
            loop {
                match stdin.read(&mut buf).await {
                    Ok(0) | Err(_) => {
                        let _ = tx_in
                            .send(Message::Text(json!({"type": "eof"}).to_string().into()))
                            .await;
                        break;
                    }
                    Ok(n) => {
                        if tx_in
                            .send(Message::Binary(buf[..n].to_vec().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            }
        });
        // window size changes
        if raw {
            let tx_w = tx.clone();
            tokio::spawn(async move {
                let Ok(mut sig) =
                    tokio::signal::unix::signal(tokio::signal::unix::SignalKind::window_change())
                else {
                    return;
                };
                while sig.recv().await.is_some() {
                    if let Ok((cols, rows)) = crossterm::terminal::size() {
                        let m = json!({"type": "resize", "rows": rows, "cols": cols});
                        if tx_w
                            .send(Message::Text(m.to_string().into()))
                            .await
                            .is_err()
                        {
                            break;
                        }
                    }
                }
            });
        }
        drop(tx);
        tokio::spawn(async move {
            while let Some(m) = rx.recv().await {
                if sink.send(m).await.is_err() {
                    break;
                }
            }
        });
        let mut stdout = std::io::stdout();
        let mut stderr = std::io::stderr();
        while let Some(msg) = stream.next().await {
            match msg? {
                Message::Binary(b) if !b.is_empty() => {
                    if b[0] == 2 {
                        stderr.write_all(&b[1..])?;
                        stderr.flush()?;
                    } else {
                        stdout.write_all(&b[1..])?;
                        stdout.flush()?;
                    }
                }
                Message::Text(t) => {
                    let v: Value = serde_json::from_str(&t).unwrap_or(Value::Null);
                    match v["type"].as_str() {
                        Some("exit") => {
                            drop(_guard);
                            if v["timed_out"] == json!(true) {
                                eprintln!("paddock: the command timed out");
                            }
                            return Ok(v["exit_code"].as_i64().unwrap_or(1) as i32);
                        }
                        Some("error") => {
                            drop(_guard);
                            bail!("{}", v["detail"].as_str().unwrap_or("exec failed"));
                        }
                        _ => {}
                    }
                }
                Message::Close(_) => break,
                _ => {}
            }
        }
        bail!("the connection closed before the command exited")
    }
}

struct RawGuard;

impl Drop for RawGuard {
    fn drop(&mut self) {
        let _ = crossterm::terminal::disable_raw_mode();
    }
}

/// A file as a stream of 1 MiB chunks, for a streamed upload.
fn file_stream(
    f: tokio::fs::File,
) -> impl futures::Stream<Item = std::io::Result<bytes::Bytes>> + Send + 'static {
    futures::stream::unfold(Some(f), |f| async move {
        let mut f = f?;
        let mut buf = Vec::with_capacity(1 << 20);
        match f.read_buf(&mut buf).await {
            Ok(0) => None,
            Ok(_) => Some((Ok(bytes::Bytes::from(buf)), Some(f))),
            Err(e) => Some((Err(e), None)),
        }
    })
}

/// The WebSocket exec's handshake request for sandbox `id` of the daemon at
/// `host` (http[s]://...), with the key when there is one.
pub(crate) fn ws_request(
    host: &str,
    key: Option<&str>,
    id: &str,
) -> Result<tokio_tungstenite::tungstenite::handshake::client::Request> {
    let url = format!(
        "{}/v1/sandboxes/{id}/exec/ws",
        host.trim_end_matches('/').replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request()?;
    if let Some(k) = key {
        request
            .headers_mut()
            .insert("authorization", format!("Bearer {k}").parse()?);
    }
    Ok(request)
}
