//! The daemon's agent client against a fake agent (a real server of the
//! agent protocol, in this process) over each transport the client speaks:
//! a unix socket, Firecracker's hybrid vsock (a unix socket that answers
//! `CONNECT <port>` first) and TCP; each connection must greet with the
//! sandbox's identity, and one that greets with another is refused. No
//! root, no sandboxes.

use std::collections::HashMap;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::Stream;
use paddock_agent_client::AgentClient;
use paddock_core::model::ExecRequest;
use paddock_core::{AgentEndpoint, AgentIdentity};
use paddock_proto::identity::Identity;
use paddock_proto::v1 as pb;
use paddock_proto::v1::agent_server::{Agent, AgentServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tonic::{Request, Response, Status, Streaming};

type BoxStream<T> = Pin<Box<dyn Stream<Item = std::result::Result<T, Status>> + Send>>;

/// The fake agent: in-memory files, commands that echo their argv.
#[derive(Default, Clone)]
struct FakeAgent {
    files: Arc<Mutex<HashMap<String, Vec<u8>>>>,
}

fn info(path: &str, size: u64) -> pb::FileInfo {
    pb::FileInfo {
        name: path.rsplit('/').next().unwrap_or_default().into(),
        path: path.into(),
        kind: "file".into(),
        size,
        mode: 0o644,
        mtime_unix_ms: 0,
        symlink_target: String::new(),
    }
}

#[tonic::async_trait]
impl Agent for FakeAgent {
    async fn hello(
        &self,
        _: Request<pb::HelloRequest>,
    ) -> std::result::Result<Response<pb::HelloResponse>, Status> {
        Ok(Response::new(pb::HelloResponse {
            agent_version: "fake".into(),
            protocol_version: paddock_proto::PROTOCOL_VERSION,
            pid: std::process::id(),
            boot_unix_ms: 0,
            features: vec![],
        }))
    }

    type ExecStream = BoxStream<pb::ExecOutput>;

    async fn exec(
        &self,
        req: Request<Streaming<pb::ExecInput>>,
    ) -> std::result::Result<Response<Self::ExecStream>, Status> {
        let mut input = req.into_inner();
        let Some(pb::ExecInput {
            msg: Some(pb::exec_input::Msg::Start(start)),
        }) = input.message().await?
        else {
            return Err(Status::invalid_argument("no start"));
        };
        let text = if start.shell.is_empty() {
            start.argv.join(" ")
        } else {
            start.shell.clone()
        };
        let out = format!("{text}\n").into_bytes();
        let exit = pb::ExecOutput {
            msg: Some(pb::exec_output::Msg::Exit(pb::ExecExit {
                exit_code: 0,
                stdout: if start.buffered {
                    out.clone().into()
                } else {
                    Default::default()
                },
                ..Default::default()
            })),
        };
        let mut msgs = vec![pb::ExecOutput {
            msg: Some(pb::exec_output::Msg::Started(pb::ExecStarted { pid: 2 })),
        }];
        if !start.buffered {
            msgs.push(pb::ExecOutput {
                msg: Some(pb::exec_output::Msg::Stdout(out.into())),
            });
        }
        msgs.push(exit);
        Ok(Response::new(Box::pin(futures::stream::iter(
            msgs.into_iter().map(Ok),
        ))))
    }

    type ReadFileStream = BoxStream<pb::FileChunk>;

    async fn read_file(
        &self,
        req: Request<pb::ReadFileRequest>,
    ) -> std::result::Result<Response<Self::ReadFileStream>, Status> {
        let path = req.into_inner().path;
        let data = self.files.lock().unwrap().get(&path).cloned();
        let data = data.ok_or_else(|| Status::not_found(format!("{path}: no such file")))?;
        let chunk = pb::FileChunk { data: data.into() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(chunk)]))))
    }

    async fn write_file(
        &self,
        req: Request<Streaming<pb::WriteFileInput>>,
    ) -> std::result::Result<Response<pb::FileInfo>, Status> {
        let mut input = req.into_inner();
        let (mut path, mut data) = (String::new(), Vec::new());
        while let Some(m) = input.message().await? {
            match m.msg {
                Some(pb::write_file_input::Msg::Header(h)) => path = h.path,
                Some(pb::write_file_input::Msg::Data(d)) => data.extend_from_slice(&d),
                _ => {}
            }
        }
        let size = data.len() as u64;
        self.files.lock().unwrap().insert(path.clone(), data);
        Ok(Response::new(info(&path, size)))
    }

    async fn list_dir(
        &self,
        req: Request<pb::PathRequest>,
    ) -> std::result::Result<Response<pb::ListDirResponse>, Status> {
        let dir = req.into_inner().path.trim_end_matches('/').to_string();
        let files = self.files.lock().unwrap();
        let entries = files
            .iter()
            .filter(|(p, _)| p.rsplit_once('/').map(|(d, _)| d) == Some(dir.as_str()))
            .map(|(p, d)| info(p, d.len() as u64))
            .collect();
        Ok(Response::new(pb::ListDirResponse { entries }))
    }

    async fn stat(
        &self,
        req: Request<pb::PathRequest>,
    ) -> std::result::Result<Response<pb::FileInfo>, Status> {
        let path = req.into_inner().path;
        let files = self.files.lock().unwrap();
        match files.get(&path) {
            Some(d) => Ok(Response::new(info(&path, d.len() as u64))),
            None => Err(Status::not_found(format!("{path}: no such file"))),
        }
    }

    async fn remove(
        &self,
        req: Request<pb::RemoveRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        self.files.lock().unwrap().remove(&req.into_inner().path);
        Ok(Response::new(pb::Empty {}))
    }

    async fn rename(
        &self,
        req: Request<pb::RenameRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        let r = req.into_inner();
        let mut files = self.files.lock().unwrap();
        let d = files
            .remove(&r.from)
            .ok_or_else(|| Status::not_found(r.from.clone()))?;
        files.insert(r.to, d);
        Ok(Response::new(pb::Empty {}))
    }

    async fn mkdir(
        &self,
        _: Request<pb::MkdirRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }

    async fn ports(
        &self,
        _: Request<pb::Empty>,
    ) -> std::result::Result<Response<pb::PortsResponse>, Status> {
        Ok(Response::new(pb::PortsResponse { ports: vec![] }))
    }

    async fn resolve(
        &self,
        req: Request<pb::PathRequest>,
    ) -> std::result::Result<Response<pb::ResolveResponse>, Status> {
        Ok(Response::new(pb::ResolveResponse {
            path: req.into_inner().path,
        }))
    }

    async fn platform(
        &self,
        _: Request<pb::Empty>,
    ) -> std::result::Result<Response<pb::PlatformInfo>, Status> {
        Ok(Response::new(pb::PlatformInfo {
            sysname: "Fake".into(),
            nodename: "fake".into(),
            release: "0".into(),
            version: "0".into(),
            machine: "x86_64".into(),
        }))
    }

    type MainOutputStream = BoxStream<pb::MainOutputChunk>;

    async fn main_output(
        &self,
        _: Request<pb::MainOutputRequest>,
    ) -> std::result::Result<Response<Self::MainOutputStream>, Status> {
        // Stays open, as the real one does while the sandbox runs.
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }

    async fn guard(
        &self,
        _: Request<pb::GuardRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        Err(Status::unimplemented("no guards here"))
    }

    async fn release(
        &self,
        _: Request<pb::Empty>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        Ok(Response::new(pb::Empty {}))
    }

    async fn registrar(
        &self,
        _: Request<pb::RegistrarRequest>,
    ) -> std::result::Result<Response<pb::Empty>, Status> {
        Err(Status::unimplemented("no guards here"))
    }

    type FsDecisionsStream = BoxStream<pb::FsDecision>;

    async fn fs_decisions(
        &self,
        _: Request<pb::Empty>,
    ) -> std::result::Result<Response<Self::FsDecisionsStream>, Status> {
        Ok(Response::new(Box::pin(futures::stream::pending())))
    }
}

/// Serves the fake agent on every connection `conns` yields, greeting each
/// with `identity` first.
async fn serve_conns<S>(mut conns: tokio::sync::mpsc::Receiver<S>, identity: Identity)
where
    S: tokio::io::AsyncRead
        + tokio::io::AsyncWrite
        + tonic::transport::server::Connected
        + Unpin
        + Send
        + 'static,
{
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(mut s) = conns.recv().await {
            if paddock_proto::identity::greet(&mut s, &identity)
                .await
                .is_ok()
                && tx.send(Ok::<_, std::io::Error>(s)).await.is_err()
            {
                return;
            }
        }
    });
    let _ = tonic::transport::Server::builder()
        .add_service(AgentServer::new(FakeAgent::default()))
        .serve_with_incoming(tokio_stream::wrappers::ReceiverStream::new(rx))
        .await;
}

/// A fake agent on a unix socket; with `vsock_port`, behind Firecracker's
/// hybrid-vsock handshake for that port (other ports are refused by
/// closing, as the VMM does when nothing listens).
fn on_unix(path: &std::path::Path, identity: Identity, vsock_port: Option<u32>) {
    let listener = tokio::net::UnixListener::bind(path).unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = listener.accept().await else {
                continue;
            };
            if let Some(want) = vsock_port {
                let mut line = Vec::new();
                loop {
                    match s.read_u8().await {
                        Ok(b'\n') | Err(_) => break,
                        Ok(b) => line.push(b),
                    }
                }
                if line != format!("CONNECT {want}").into_bytes() {
                    continue;
                }
                if s.write_all(b"OK 1073741824\n").await.is_err() {
                    continue;
                }
            }
            if let Ok(c) = paddock_proto::UnixConn::from_tokio(s) {
                let _ = tx.send(c).await;
            }
        }
    });
    tokio::spawn(serve_conns(rx, identity));
}

/// A fake agent on TCP loopback; its address.
async fn on_tcp(identity: Identity) -> std::net::SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(16);
    tokio::spawn(async move {
        while let Ok((s, _)) = listener.accept().await {
            let _ = tx.send(s).await;
        }
    });
    tokio::spawn(serve_conns(rx, identity));
    addr
}

fn shell(s: &str) -> ExecRequest {
    serde_json::from_value(serde_json::json!({"shell": s})).unwrap()
}

/// Connects, runs a command and moves a file through `endpoint`.
async fn round_trip(endpoint: &AgentEndpoint) {
    let c = AgentClient::connect(endpoint, false, Duration::from_secs(5))
        .await
        .unwrap_or_else(|e| panic!("{endpoint}: {e}"));
    assert_eq!(c.exec(&shell("echo hi")).await.unwrap().stdout, "echo hi\n");
    let data = futures::stream::iter([Ok(bytes::Bytes::from_static(b"payload"))]);
    c.write_file("/w/f", &Default::default(), data)
        .await
        .unwrap();
    let (_, s) = c.read_file("/w/f").await.unwrap();
    use futures::StreamExt;
    let got: Vec<_> = s.collect().await;
    assert_eq!(got.len(), 1);
    assert_eq!(&got[0].as_ref().unwrap()[..], b"payload");
}

fn ids() -> (Identity, AgentIdentity) {
    let id = Identity::generate().unwrap();
    (id, AgentIdentity(id.bytes()))
}

#[tokio::test]
async fn each_transport_carries_the_protocol() {
    let dir = tempfile::tempdir().unwrap();
    let (id, aid) = ids();
    let unix = dir.path().join("agent.sock");
    on_unix(&unix, id, None);
    round_trip(&AgentEndpoint::Unix {
        path: unix,
        identity: aid,
    })
    .await;

    let vmm = dir.path().join("vmm.sock");
    on_unix(&vmm, id, Some(1024));
    round_trip(&AgentEndpoint::HybridVsock {
        path: vmm.clone(),
        port: 1024,
        identity: aid,
    })
    .await;
    // A port nothing listens on: the VMM closes, and the client says so.
    let e = AgentClient::connect(
        &AgentEndpoint::HybridVsock {
            path: vmm,
            port: 7,
            identity: aid,
        },
        false,
        Duration::from_millis(300),
    )
    .await
    .err()
    .unwrap()
    .to_string();
    assert!(e.contains("vsock"), "{e}");

    let addr = on_tcp(id).await;
    round_trip(&AgentEndpoint::Tcp {
        addr,
        identity: aid,
    })
    .await;
}

/// What answers must prove it is the sandbox's agent on every transport.
#[tokio::test]
async fn an_agent_with_another_identity_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (theirs, _) = ids();
    let (_, mine) = ids();
    let unix = dir.path().join("agent.sock");
    on_unix(&unix, theirs, None);
    let addr = on_tcp(theirs).await;
    for endpoint in [
        AgentEndpoint::Unix {
            path: unix,
            identity: mine,
        },
        AgentEndpoint::Tcp {
            addr,
            identity: mine,
        },
    ] {
        let e = AgentClient::connect(&endpoint, false, Duration::from_millis(300))
            .await
            .err()
            .unwrap_or_else(|| panic!("{endpoint}: another sandbox's agent was taken"))
            .to_string();
        assert!(
            e.contains("identity") || e.contains("another"),
            "{endpoint}: {e}"
        );
    }
}
