//! The versioned protocol between the Paddock daemon and `paddock-agent`.
//!
//! Generated from `proto/agent.proto` by tonic, and what both ends share:
//! the identity greeting, descriptor hand-over, output chunking and the
//! unix socket wrapper. The daemon's client and its transports are in
//! `paddock-agent-client`.

pub mod v1 {
    tonic::include_proto!("paddock.agent.v1");
}

mod conn;
pub use conn::UnixConn;
pub mod handover;
pub mod identity;
pub mod output;

/// The binary metadata that may carry an exec's `ExecStart` (see the
/// `Exec` rpc in agent.proto), and the agent feature that announces it.
pub const EXEC_START_HEADER: &str = "paddock-exec-start-bin";
pub const FEATURE_EXEC_START_HEADER: &str = "exec-start-header";

/// The agent feature of `Guard`, `Release` and `FsDecisions`.
pub const FEATURE_GUARD: &str = "guard";

/// Response metadata of `ReadFile`: the size of the file the agent opened
/// (from its `fstat`, after following every symlink; absent where the size
/// says nothing of the bytes, such as a file of `/proc`), and the path it
/// opened as the sandbox sees it (binary: a path need not be UTF-8), so
/// that the daemon judges a mount's ACL on the file actually read.
pub const READ_SIZE_HEADER: &str = "paddock-size";
pub const READ_PATH_HEADER: &str = "paddock-path-bin";

/// A request extension: send this call's HEADERS with END_STREAM and no
/// body (its input travels in metadata). The daemon's channel drops the body.
#[derive(Clone, Copy, Debug)]
pub struct HeadersOnly;

/// Protocol version spoken by this build. The daemon refuses an agent whose
/// protocol version differs (an agent is always shipped with its daemon).
pub const PROTOCOL_VERSION: u32 = 2;

/// HTTP/2 flow-control windows for the agent channel. The default 64 KiB
/// would cap file transfers far below what a local socket carries.
pub const STREAM_WINDOW: u32 = 8 << 20;
pub const CONNECTION_WINDOW: u32 = 32 << 20;
/// Largest HTTP/2 frame either side accepts (the default 16 KiB would cut
/// a 1 MiB file chunk into 64 frames).
pub const MAX_FRAME: u32 = (1 << 20) - 1;

/// The origin every call names (HTTP/2 needs a scheme and an authority;
/// the socket decides where a call goes).
pub const ORIGIN: &str = "http://agent.invalid";
