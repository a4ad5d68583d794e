//! The versioned protocol between the Paddock daemon and `paddock-agent`.
//!
//! Generated from `proto/agent.proto` by tonic. The transport is whatever
//! the backend provides; [`connect_unix`] covers the unix socket that the
//! container and gVisor backends share with the sandbox.

pub mod v1 {
    tonic::include_proto!("paddock.agent.v1");
}

/// Protocol version spoken by this build. The daemon refuses an agent whose
/// protocol version differs (an agent is always shipped with its daemon).
pub const PROTOCOL_VERSION: u32 = 1;

use std::path::PathBuf;
use tonic::transport::{Channel, Endpoint, Uri};

/// HTTP/2 flow-control windows for the agent channel. The default 64 KiB
/// would cap file transfers far below what a local socket carries.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;
/// Largest HTTP/2 frame either side accepts (the default 16 KiB would cut
/// a 1 MiB file chunk into 64 frames).
pub const MAX_FRAME: u32 = (1 << 20) - 1;

fn endpoint() -> Result<Endpoint, tonic::transport::Error> {
    // The URI is ignored by the connector; it only has to parse.
    Ok(Endpoint::try_from("http://agent.invalid")?
        .tcp_nodelay(true)
        .initial_stream_window_size(STREAM_WINDOW)
        .initial_connection_window_size(CONNECTION_WINDOW)
        .max_frame_size(MAX_FRAME)
        .buffer_size(64))
}

fn unix_connector(
    path: PathBuf,
) -> impl tower::Service<
    Uri,
    Response = hyper_util::rt::TokioIo<tokio::net::UnixStream>,
    Error = std::io::Error,
    Future = impl std::future::Future<
        Output = Result<hyper_util::rt::TokioIo<tokio::net::UnixStream>, std::io::Error>,
    > + Send,
> + Clone
       + Send {
    tower::service_fn(move |_: Uri| {
        let path = path.clone();
        async move {
            let stream = tokio::net::UnixStream::connect(path).await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(stream))
        }
    })
}

/// Connects a gRPC channel to an agent listening on a unix socket.
pub async fn connect_unix(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    endpoint()?
        .connect_with_connector(unix_connector(path))
        .await
}

/// A channel to an agent's unix socket that connects on first use (and
/// again after the connection drops).
pub fn connect_unix_lazy(path: PathBuf) -> Result<Channel, tonic::transport::Error> {
    Ok(endpoint()?.connect_with_connector_lazy(unix_connector(path)))
}
