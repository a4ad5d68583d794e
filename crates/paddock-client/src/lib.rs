//! A typed client of Paddock's native API (`/v1`), over TCP or the
//! daemon's unix socket. It speaks the wire types of `paddock-wire`, so a
//! change of the API is a compile error here, in the CLI, in `paddock
//! bench` and in the integration tests, which all use it.
//!
//! Every call answers the decoded body, or an [`Error`]: the daemon's
//! problem (status, detail and the field at fault), no daemon at the
//! endpoint, or a body that is not what the API promises.

mod sse;

use std::fmt;
use std::path::PathBuf;

use futures::{Stream, StreamExt};
use paddock_wire as w;
use reqwest::{Method, RequestBuilder, Response};
use serde::de::DeserializeOwned;
use uuid::Uuid;

pub use paddock_wire as wire;
pub use sse::Frame;

/// Where the daemon listens.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Endpoint {
    /// `http://127.0.0.1:7400` and the like.
    Url(String),
    /// The daemon's unix socket (`/run/paddock.sock`).
    Socket(PathBuf),
}

impl Endpoint {
    /// The base URL of requests (over the socket, its host is a placeholder).
    pub fn base(&self) -> &str {
        match self {
            Endpoint::Url(u) => u.trim_end_matches('/'),
            Endpoint::Socket(_) => "http://localhost",
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Endpoint::Url(u) => f.write_str(u),
            Endpoint::Socket(p) => write!(f, "unix://{}", p.display()),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No daemon answered at the endpoint.
    #[error(
        "cannot reach the paddock daemon at {endpoint} (is `paddock serve` running?): {source}"
    )]
    Unreachable {
        endpoint: String,
        #[source]
        source: reqwest::Error,
    },
    /// The daemon refused: its problem details.
    #[error("{0}")]
    Api(Box<w::Problem>),
    /// The connection broke, or a body was not what the API promises.
    #[error("{0}")]
    Protocol(String),
}

impl Error {
    /// The HTTP status of a refusal.
    pub fn status(&self) -> Option<u16> {
        match self {
            Error::Api(p) => Some(p.status),
            _ => None,
        }
    }
    /// The daemon's problem, if it answered one.
    pub fn problem(&self) -> Option<&w::Problem> {
        match self {
            Error::Api(p) => Some(p),
            _ => None,
        }
    }
}

impl From<reqwest::Error> for Error {
    fn from(e: reqwest::Error) -> Error {
        Error::Protocol(e.to_string())
    }
}

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// Filters of `GET /v1/sandboxes`.
#[derive(Debug, Clone, Default)]
pub struct ListFilter {
    pub state: Option<w::State>,
    /// Sandboxes carrying all these labels.
    pub labels: Vec<(String, String)>,
    pub key: Option<String>,
    /// At most this many (the daemon's default 100, at most 1000).
    pub limit: Option<usize>,
    /// The `next` of the previous page.
    pub after: Option<Uuid>,
}

/// How an upload writes its file (`PUT /v1/sandboxes/{id}/files`).
#[derive(Debug, Clone, Default)]
pub struct Upload {
    pub mode: Option<u32>,
    /// Create missing parents (the daemon's default: yes).
    pub parents: Option<bool>,
    /// Write aside and rename into place (the daemon's default: yes).
    pub atomic: Option<bool>,
    pub append: bool,
}

/// A sandbox's lifecycle verbs (`POST /v1/sandboxes/{id}/{verb}`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verb {
    Touch,
    Stop,
    Start,
    Pause,
    Resume,
}

impl Verb {
    pub fn as_str(self) -> &'static str {
        match self {
            Verb::Touch => "touch",
            Verb::Stop => "stop",
            Verb::Start => "start",
            Verb::Pause => "pause",
            Verb::Resume => "resume",
        }
    }
}

/// What a streamed command (`/exec/stream`) reports.
#[derive(Debug, Clone, PartialEq)]
pub enum ExecEvent {
    Started(u32),
    Stdout(String),
    Stderr(String),
    Exit(w::ExecResult),
}

/// What a streamed pull reports.
#[derive(Debug, Clone, PartialEq)]
pub enum PullEvent {
    Progress(w::PullProgress),
    Pulled(w::ImageInfo),
}

/// An interactive command's WebSocket (`/exec/ws`), over TCP or the socket.
/// Split it (`StreamExt::split`) to read and write at once.
pub type ExecSocket = futures::future::Either<
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>,
    tokio_tungstenite::WebSocketStream<tokio::net::UnixStream>,
>;

#[derive(Clone)]
pub struct Client {
    endpoint: Endpoint,
    key: Option<String>,
    http: reqwest::Client,
}

impl Client {
    /// A client of the daemon at `endpoint`, with an API key or without
    /// (the unix socket, or loopback, need none unless the operator asks).
    pub fn new(endpoint: Endpoint, key: Option<String>) -> Client {
        let http = match &endpoint {
            Endpoint::Url(_) => reqwest::Client::new(),
            Endpoint::Socket(p) => reqwest::Client::builder()
                .unix_socket(p.as_path())
                .build()
                .unwrap_or_default(),
        };
        Client {
            endpoint,
            key,
            http,
        }
    }

    pub fn endpoint(&self) -> &Endpoint {
        &self.endpoint
    }

    /// A request to `/v1{path}`, with the key: for what the typed calls do
    /// not cover.
    pub fn request(&self, method: Method, path: &str) -> RequestBuilder {
        let mut r = self
            .http
            .request(method, format!("{}/v1{path}", self.endpoint.base()));
        if let Some(k) = &self.key {
            r = r.bearer_auth(k);
        }
        r
    }

    /// Sends a request; a refusal is [`Error::Api`] with the daemon's problem.
    pub async fn send(&self, rb: RequestBuilder) -> Result<Response> {
        let resp = rb.send().await.map_err(|source| {
            if source.is_connect() || source.is_timeout() {
                Error::Unreachable {
                    endpoint: self.endpoint.to_string(),
                    source,
                }
            } else {
                Error::Protocol(source.to_string())
            }
        })?;
        if resp.status().is_success() {
            return Ok(resp);
        }
        let status = resp.status();
        let text = resp.text().await.unwrap_or_default();
        Err(Error::Api(Box::new(problem_of(status.as_u16(), &text))))
    }

    async fn json<T: DeserializeOwned>(&self, rb: RequestBuilder) -> Result<T> {
        let resp = self.send(rb).await?;
        let bytes = resp.bytes().await?;
        serde_json::from_slice(&bytes).map_err(|e| {
            Error::Protocol(format!(
                "the daemon's answer is not what the API promises ({e}): {}",
                String::from_utf8_lossy(&bytes[..bytes.len().min(200)])
            ))
        })
    }

    async fn empty(&self, rb: RequestBuilder) -> Result<()> {
        self.send(rb).await.map(drop)
    }

    // ---- sandboxes ---------------------------------------------------------

    /// Creates a sandbox; `true` when it is new, `false` when a sandbox of
    /// the spec's `key` existed.
    pub async fn create(&self, spec: &w::SandboxSpec) -> Result<(w::Sandbox, bool)> {
        let resp = self
            .send(self.request(Method::POST, "/sandboxes").json(spec))
            .await?;
        let created = resp.status() == reqwest::StatusCode::CREATED;
        let sb = resp.json().await?;
        Ok((sb, created))
    }

    pub async fn list(&self, f: &ListFilter) -> Result<w::SandboxList> {
        let mut q: Vec<(&str, String)> = Vec::new();
        if let Some(s) = f.state {
            q.push(("state", s.as_str().into()));
        }
        if !f.labels.is_empty() {
            let l: Vec<String> = f.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            q.push(("labels", l.join(",")));
        }
        if let Some(k) = &f.key {
            q.push(("key", k.clone()));
        }
        if let Some(n) = f.limit {
            q.push(("limit", n.to_string()));
        }
        if let Some(a) = f.after {
            q.push(("after", a.to_string()));
        }
        self.json(self.request(Method::GET, "/sandboxes").query(&q))
            .await
    }

    pub async fn get(&self, id: &str) -> Result<w::Sandbox> {
        self.json(self.request(Method::GET, &format!("/sandboxes/{id}")))
            .await
    }

    pub async fn destroy(&self, id: &str) -> Result<w::Sandbox> {
        self.json(self.request(Method::DELETE, &format!("/sandboxes/{id}")))
            .await
    }

    pub async fn lifecycle(&self, id: &str, verb: Verb) -> Result<w::Sandbox> {
        self.json(self.request(Method::POST, &format!("/sandboxes/{id}/{}", verb.as_str())))
            .await
    }

    // ---- snapshots and forks ------------------------------------------------

    /// Snapshots a sandbox's filesystem.
    pub async fn snapshot(&self, id: &str, req: &w::SnapshotRequest) -> Result<w::Snapshot> {
        self.json(
            self.request(Method::POST, &format!("/sandboxes/{id}/snapshots"))
                .json(req),
        )
        .await
    }

    /// Forks a sandbox into `req.count` new running ones.
    pub async fn fork(&self, id: &str, req: &w::ForkRequest) -> Result<w::ForkResult> {
        self.json(
            self.request(Method::POST, &format!("/sandboxes/{id}/fork"))
                .json(req),
        )
        .await
    }

    pub async fn snapshots(&self) -> Result<w::SnapshotList> {
        self.json(self.request(Method::GET, "/snapshots")).await
    }

    /// A snapshot by its id or name.
    pub async fn get_snapshot(&self, id: &str) -> Result<w::Snapshot> {
        self.json(self.request(Method::GET, &format!("/snapshots/{id}")))
            .await
    }

    pub async fn delete_snapshot(&self, id: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/snapshots/{id}")))
            .await
    }

    // ---- SSH keys --------------------------------------------------------------

    pub async fn ssh_keys(&self) -> Result<w::SshKeyList> {
        self.json(self.request(Method::GET, "/ssh-keys")).await
    }

    pub async fn add_ssh_key(&self, req: &w::SshKeyCreate) -> Result<w::SshKey> {
        self.json(self.request(Method::POST, "/ssh-keys").json(req))
            .await
    }

    /// Removes a key by its id or name.
    pub async fn delete_ssh_key(&self, id: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/ssh-keys/{id}")))
            .await
    }

    // ---- tokens ----------------------------------------------------------------

    pub async fn tokens(&self) -> Result<w::TokenList> {
        self.json(self.request(Method::GET, "/tokens")).await
    }

    pub async fn create_token(&self, req: &w::TokenCreate) -> Result<w::TokenCreated> {
        self.json(self.request(Method::POST, "/tokens").json(req))
            .await
    }

    pub async fn revoke_token(&self, jti: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/tokens/{jti}")))
            .await
    }

    pub async fn rotate_token_key(&self) -> Result<w::KeyRotated> {
        self.json(self.request(Method::POST, "/tokens/rotate-key"))
            .await
    }

    // ---- ingress ---------------------------------------------------------------

    /// A sandbox's proxies (by its id), the default first.
    pub async fn proxies(&self, id: &str) -> Result<w::ProxyList> {
        self.json(self.request(Method::GET, &format!("/sandboxes/{id}/proxies")))
            .await
    }

    /// Makes a proxy (`""` or `default`: the default one; port 0: auto).
    pub async fn create_proxy(&self, id: &str, name: &str, port: u16) -> Result<w::Proxy> {
        let body = w::ProxyCreate {
            name: name.to_string(),
            port,
        };
        self.json(
            self.request(Method::POST, &format!("/sandboxes/{id}/proxies"))
                .json(&body),
        )
        .await
    }

    pub async fn set_proxy_port(&self, id: &str, name: &str, port: u16) -> Result<w::Proxy> {
        let name = if name.is_empty() { "default" } else { name };
        self.json(
            self.request(Method::PUT, &format!("/sandboxes/{id}/proxies/{name}"))
                .json(&w::ProxyPort { port }),
        )
        .await
    }

    pub async fn delete_proxy(&self, id: &str, name: &str) -> Result<()> {
        let name = if name.is_empty() { "default" } else { name };
        self.empty(self.request(Method::DELETE, &format!("/sandboxes/{id}/proxies/{name}")))
            .await
    }

    pub async fn domains(&self) -> Result<w::DomainList> {
        self.json(self.request(Method::GET, "/domains")).await
    }

    pub async fn bind_domain(&self, domain: &str, sandbox: uuid::Uuid) -> Result<w::Domain> {
        let body = w::DomainBind {
            domain: domain.to_string(),
            sandbox,
        };
        self.json(self.request(Method::POST, "/domains").json(&body))
            .await
    }

    pub async fn unbind_domain(&self, domain: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/domains/{domain}")))
            .await
    }

    /// Where the ingress is, and Paddock's CA.
    pub async fn ingress(&self) -> Result<w::Ingress> {
        self.json(self.request(Method::GET, "/ingress")).await
    }

    // ---- governance ------------------------------------------------------------

    pub async fn policies(&self) -> Result<w::PolicyList> {
        self.json(self.request(Method::GET, "/policies")).await
    }

    pub async fn put_policy(&self, p: &w::Policy) -> Result<w::Policy> {
        self.json(
            self.request(Method::PUT, &format!("/policies/{}", p.name))
                .json(p),
        )
        .await
    }

    pub async fn delete_policy(&self, name: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/policies/{name}")))
            .await
    }

    /// The audit log, newest first: `query` is `/v1/audit`'s (`sandbox`,
    /// `action`, `principal`, `before`, `limit`).
    pub async fn audit(&self, query: &[(&str, String)]) -> Result<w::AuditList> {
        self.json(self.request(Method::GET, "/audit").query(query))
            .await
    }

    pub async fn usage(&self) -> Result<w::Usage> {
        self.json(self.request(Method::GET, "/usage")).await
    }

    // ---- workspaces ------------------------------------------------------------

    pub async fn create_workspace(&self, req: &w::WorkspaceCreate) -> Result<w::Workspace> {
        self.json(self.request(Method::POST, "/workspaces").json(req))
            .await
    }

    pub async fn workspaces(&self) -> Result<w::WorkspaceList> {
        self.json(self.request(Method::GET, "/workspaces")).await
    }

    pub async fn workspace(&self, name: &str) -> Result<w::Workspace> {
        self.json(self.request(Method::GET, &format!("/workspaces/{name}")))
            .await
    }

    pub async fn update_workspace(
        &self,
        name: &str,
        req: &w::WorkspaceUpdate,
    ) -> Result<w::Workspace> {
        self.json(
            self.request(Method::PATCH, &format!("/workspaces/{name}"))
                .json(req),
        )
        .await
    }

    pub async fn delete_workspace(&self, name: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/workspaces/{name}")))
            .await
    }

    /// Snapshots its sandbox, then destroys it.
    pub async fn hibernate_workspace(&self, name: &str) -> Result<w::Workspace> {
        self.json(self.request(Method::POST, &format!("/workspaces/{name}/hibernate")))
            .await
    }

    /// Gives it a running sandbox (from its latest snapshot when it sleeps).
    pub async fn wake_workspace(&self, name: &str) -> Result<w::Workspace> {
        self.json(self.request(Method::POST, &format!("/workspaces/{name}/wake")))
            .await
    }

    // ---- networks --------------------------------------------------------------

    /// Makes a private network.
    pub async fn create_network(&self, req: &w::NetworkCreate) -> Result<w::Network> {
        self.json(self.request(Method::POST, "/networks").json(req))
            .await
    }

    /// Your networks.
    pub async fn networks(&self) -> Result<w::NetworkList> {
        self.json(self.request(Method::GET, "/networks")).await
    }

    /// A network by its id or name (`default`: your default network).
    pub async fn network(&self, id: &str) -> Result<w::Network> {
        self.json(self.request(Method::GET, &format!("/networks/{id}")))
            .await
    }

    /// Deletes a network (refused while a sandbox is on it).
    pub async fn delete_network(&self, id: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/networks/{id}")))
            .await
    }

    // ---- volumes ---------------------------------------------------------------

    pub async fn create_volume(&self, req: &w::VolumeCreate) -> Result<w::Volume> {
        self.json(self.request(Method::POST, "/volumes").json(req))
            .await
    }

    pub async fn volumes(&self) -> Result<w::VolumeList> {
        self.json(self.request(Method::GET, "/volumes")).await
    }

    /// A volume by its id or name.
    pub async fn volume(&self, id: &str) -> Result<w::Volume> {
        self.json(self.request(Method::GET, &format!("/volumes/{id}")))
            .await
    }

    pub async fn delete_volume(&self, id: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/volumes/{id}")))
            .await
    }

    /// Mounts a volume in a sandbox.
    pub async fn attach_volume(&self, id: &str, req: &w::VolumeRequest) -> Result<w::Sandbox> {
        self.json(
            self.request(Method::POST, &format!("/sandboxes/{id}/volumes"))
                .json(req),
        )
        .await
    }

    /// Unmounts a volume (by name or id) from a sandbox.
    pub async fn detach_volume(&self, id: &str, volume: &str) -> Result<w::Sandbox> {
        self.json(self.request(Method::DELETE, &format!("/sandboxes/{id}/volumes/{volume}")))
            .await
    }

    // ---- commands ------------------------------------------------------------

    /// Runs a command to its end; its output, buffered.
    pub async fn exec(&self, id: &str, req: &w::ExecRequest) -> Result<w::ExecResult> {
        self.json(
            self.request(Method::POST, &format!("/sandboxes/{id}/exec"))
                .json(req),
        )
        .await
    }

    /// Runs a command, its output streamed as it comes (server-sent events).
    pub async fn exec_stream(
        &self,
        id: &str,
        req: &w::ExecRequest,
    ) -> Result<impl Stream<Item = Result<ExecEvent>> + Send + 'static> {
        let resp = self
            .send(
                self.request(Method::POST, &format!("/sandboxes/{id}/exec/stream"))
                    .json(req),
            )
            .await?;
        Ok(sse::frames(resp).map(|f| {
            let f = f?;
            Ok(match f.event.as_str() {
                "started" => ExecEvent::Started(f.decode::<w::Started>()?.pid),
                "stdout" => ExecEvent::Stdout(f.decode::<w::OutputChunk>()?.data),
                "stderr" => ExecEvent::Stderr(f.decode::<w::OutputChunk>()?.data),
                "exit" => ExecEvent::Exit(f.decode()?),
                "error" => return Err(Error::Api(Box::new(f.decode()?))),
                other => return Err(Error::Protocol(format!("unknown exec event {other:?}"))),
            })
        }))
    }

    /// Opens an interactive command's WebSocket. Send the ExecRequest as
    /// the first (text) message; see `paddock_wire::WsControl`.
    pub async fn exec_socket(&self, id: &str) -> Result<ExecSocket> {
        use tokio_tungstenite::tungstenite::client::IntoClientRequest;
        let url = format!(
            "{}/v1/sandboxes/{id}/exec/ws",
            self.endpoint.base().replacen("http", "ws", 1)
        );
        let mut request = url
            .into_client_request()
            .map_err(|e| Error::Protocol(e.to_string()))?;
        if let Some(k) = &self.key {
            let v = format!("Bearer {k}")
                .parse()
                .map_err(|_| Error::Protocol("the API key is not a valid header".into()))?;
            request.headers_mut().insert("authorization", v);
        }
        let connected = match &self.endpoint {
            Endpoint::Url(_) => tokio_tungstenite::connect_async_with_config(request, None, true)
                .await
                .map(|(ws, _)| futures::future::Either::Left(ws)),
            Endpoint::Socket(p) => {
                let unix = tokio::net::UnixStream::connect(p).await.map_err(|e| {
                    Error::Protocol(format!(
                        "cannot reach the paddock daemon at {}: {e}",
                        self.endpoint
                    ))
                })?;
                tokio_tungstenite::client_async_with_config(request, unix, None)
                    .await
                    .map(|(ws, _)| futures::future::Either::Right(ws))
            }
        };
        connected.map_err(|e| match e {
            tokio_tungstenite::tungstenite::Error::Http(resp) => {
                let body = resp
                    .body()
                    .as_ref()
                    .map(|b| String::from_utf8_lossy(b).into_owned())
                    .unwrap_or_default();
                Error::Api(Box::new(problem_of(resp.status().as_u16(), &body)))
            }
            e => Error::Protocol(format!(
                "cannot reach the paddock daemon at {}: {e}",
                self.endpoint
            )),
        })
    }

    // ---- files -----------------------------------------------------------------

    /// Writes a file from `body` (bytes, or a stream through
    /// `reqwest::Body::wrap_stream`).
    pub async fn upload(
        &self,
        id: &str,
        path: &str,
        opts: &Upload,
        body: impl Into<reqwest::Body>,
    ) -> Result<w::FileInfo> {
        let mut q: Vec<(&str, String)> = vec![("path", path.into())];
        if let Some(m) = opts.mode {
            q.push(("mode", format!("{m:o}")));
        }
        if let Some(p) = opts.parents {
            q.push(("parents", p.to_string()));
        }
        if let Some(a) = opts.atomic {
            q.push(("atomic", a.to_string()));
        }
        if opts.append {
            q.push(("append", "true".into()));
        }
        self.json(
            self.request(Method::PUT, &format!("/sandboxes/{id}/files"))
                .query(&q)
                .header(reqwest::header::CONTENT_TYPE, "application/octet-stream")
                .body(body),
        )
        .await
    }

    /// A file's bytes, as a response to read in chunks.
    pub async fn download(&self, id: &str, path: &str) -> Result<Response> {
        self.send(
            self.request(Method::GET, &format!("/sandboxes/{id}/files"))
                .query(&[("path", path)]),
        )
        .await
    }

    /// A (small) file's bytes, whole.
    pub async fn read(&self, id: &str, path: &str) -> Result<bytes::Bytes> {
        Ok(self.download(id, path).await?.bytes().await?)
    }

    pub async fn list_dir(&self, id: &str, path: &str) -> Result<w::DirListing> {
        self.json(
            self.request(Method::GET, &format!("/sandboxes/{id}/files/list"))
                .query(&[("path", path)]),
        )
        .await
    }

    pub async fn stat(&self, id: &str, path: &str) -> Result<w::FileInfo> {
        self.json(
            self.request(Method::GET, &format!("/sandboxes/{id}/files/stat"))
                .query(&[("path", path)]),
        )
        .await
    }

    pub async fn mkdir(&self, id: &str, path: &str, parents: bool) -> Result<()> {
        self.empty(
            self.request(Method::POST, &format!("/sandboxes/{id}/files/mkdir"))
                .query(&[("path", path), ("parents", &parents.to_string())]),
        )
        .await
    }

    pub async fn rename(&self, id: &str, from: &str, to: &str) -> Result<()> {
        let body = w::RenameBody {
            from: from.into(),
            to: to.into(),
        };
        self.empty(
            self.request(Method::POST, &format!("/sandboxes/{id}/files/rename"))
                .json(&body),
        )
        .await
    }

    pub async fn remove(&self, id: &str, path: &str, recursive: bool) -> Result<()> {
        self.empty(
            self.request(Method::DELETE, &format!("/sandboxes/{id}/files"))
                .query(&[("path", path), ("recursive", &recursive.to_string())]),
        )
        .await
    }

    // ---- observing ----------------------------------------------------------------

    pub async fn ports(&self, id: &str) -> Result<w::PortList> {
        self.json(self.request(Method::GET, &format!("/sandboxes/{id}/ports")))
            .await
    }

    pub async fn metrics(&self, id: &str) -> Result<w::Metrics> {
        self.json(self.request(Method::GET, &format!("/sandboxes/{id}/metrics")))
            .await
    }

    pub async fn platform(&self, id: &str) -> Result<w::Platform> {
        self.json(self.request(Method::GET, &format!("/sandboxes/{id}/platform")))
            .await
    }

    /// The main process's output from `offset`; with `follow`, the
    /// response stays open and brings what is appended.
    pub async fn logs(&self, id: &str, offset: u64, follow: bool) -> Result<Response> {
        self.send(
            self.request(Method::GET, &format!("/sandboxes/{id}/logs"))
                .query(&[
                    ("offset", offset.to_string()),
                    ("follow", follow.to_string()),
                ]),
        )
        .await
    }

    /// Events of one sandbox (ids per sandbox) or of all the caller's
    /// (ids the daemon-wide sequence), after `after`, as they happen.
    pub async fn events(
        &self,
        sandbox: Option<&str>,
        after: Option<i64>,
    ) -> Result<impl Stream<Item = Result<w::Event>> + Send + 'static> {
        let path = match sandbox {
            Some(id) => format!("/sandboxes/{id}/events"),
            None => "/events".into(),
        };
        let mut rb = self.request(Method::GET, &path);
        if let Some(a) = after {
            rb = rb.query(&[("after", a)]);
        }
        let resp = self.send(rb).await?;
        Ok(sse::frames(resp).map(|f| f?.decode()))
    }

    // ---- images, templates, pools, backends -------------------------------------------

    pub async fn images(&self) -> Result<w::ImageList> {
        self.json(self.request(Method::GET, "/images")).await
    }

    /// Pulls an image (layers already cached are not downloaded again).
    pub async fn pull(&self, reference: &str) -> Result<w::ImageInfo> {
        let body = w::PullBody {
            reference: reference.into(),
        };
        self.json(self.request(Method::POST, "/images").json(&body))
            .await
    }

    /// Pulls an image, reporting progress as it goes; the last event is
    /// `Pulled`, or the stream ends with the daemon's error.
    pub async fn pull_stream(
        &self,
        reference: &str,
    ) -> Result<impl Stream<Item = Result<PullEvent>> + Send + 'static> {
        let body = w::PullBody {
            reference: reference.into(),
        };
        let resp = self
            .send(
                self.request(Method::POST, "/images")
                    .header(reqwest::header::ACCEPT, "text/event-stream")
                    .json(&body),
            )
            .await?;
        Ok(sse::frames(resp).filter_map(|f| async move {
            let f = match f {
                Ok(f) => f,
                Err(e) => return Some(Err(e)),
            };
            match f.event.as_str() {
                "progress" => Some(f.decode().map(PullEvent::Progress)),
                "pulled" => Some(f.decode().map(PullEvent::Pulled)),
                "error" => Some(f.decode().and_then(|p| Err(Error::Api(Box::new(p))))),
                _ => None,
            }
        }))
    }

    pub async fn inspect_image(&self, reference: &str) -> Result<w::ImageInfo> {
        self.json(
            self.request(Method::GET, "/images/inspect")
                .query(&[("reference", reference)]),
        )
        .await
    }

    pub async fn remove_image(&self, reference: &str) -> Result<()> {
        self.empty(
            self.request(Method::DELETE, "/images")
                .query(&[("reference", reference)]),
        )
        .await
    }

    pub async fn prune_images(&self) -> Result<w::Pruned> {
        self.json(self.request(Method::POST, "/images/prune")).await
    }

    /// Stores a template: `defaults` is any sandbox spec without `key` and
    /// `template`; `warm_pool` sandboxes of it are kept booted.
    pub async fn create_template(
        &self,
        name: &str,
        defaults: &w::SandboxSpec,
        warm_pool: usize,
    ) -> Result<w::Template> {
        let mut body = match serde_json::to_value(defaults) {
            Ok(serde_json::Value::Object(m)) => m,
            _ => return Err(Error::Protocol("a spec is a JSON object".into())),
        };
        body.insert("name".into(), name.into());
        if warm_pool > 0 {
            body.insert("warm_pool".into(), warm_pool.into());
        }
        self.json(self.request(Method::POST, "/templates").json(&body))
            .await
    }

    pub async fn templates(&self) -> Result<w::TemplateList> {
        self.json(self.request(Method::GET, "/templates")).await
    }

    pub async fn template(&self, name: &str) -> Result<w::Template> {
        self.json(self.request(Method::GET, &format!("/templates/{name}")))
            .await
    }

    pub async fn delete_template(&self, name: &str) -> Result<()> {
        self.empty(self.request(Method::DELETE, &format!("/templates/{name}")))
            .await
    }

    pub async fn pools(&self) -> Result<w::PoolList> {
        self.json(self.request(Method::GET, "/pools")).await
    }

    pub async fn backends(&self) -> Result<w::BackendList> {
        self.json(self.request(Method::GET, "/backends")).await
    }

    /// Whether the daemon serves (`GET /healthz`).
    pub async fn healthz(&self) -> Result<()> {
        let url = format!("{}/healthz", self.endpoint.base());
        self.empty(self.http.get(url)).await
    }

    pub async fn version(&self) -> Result<w::Version> {
        self.json(self.request(Method::GET, "/version")).await
    }
}

/// A refusal's problem: the body when it is one, else one made of the
/// status and the body's text.
fn problem_of(status: u16, body: &str) -> w::Problem {
    serde_json::from_str::<w::Problem>(body).unwrap_or_else(|_| w::Problem {
        kind: "about:blank".into(),
        title: String::new(),
        status,
        detail: body.chars().take(500).collect(),
        field: None,
        violations: Vec::new(),
    })
}
