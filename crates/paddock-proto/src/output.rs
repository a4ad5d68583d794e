//! Reading a command's output pipe: the same rules wherever it is read
//! (by the agent, or by the daemon when the pipe is handed over).

use std::time::Duration;

use bytes::{Bytes, BytesMut};
use tokio::io::AsyncReadExt;
use tokio::net::unix::pipe::Receiver;

/// Largest output message. A read takes what the pipe holds up to this, so
/// a fast writer's small writes travel together (fewer messages, each
/// one costs a gRPC frame and, further on, a WebSocket or SSE frame).
pub const CHUNK: usize = 256 * 1024;

/// Below this a chunk is copied out rather than split off, so that a
/// small chunk waiting to be sent does not hold a CHUNK-sized buffer.
pub const SMALL: usize = 16 * 1024;

/// After a command exits, its output pipe is left once it has stayed empty
/// this long (a background process may hold it open for good).
pub const DRAIN_IDLE: Duration = Duration::from_millis(50);

/// One read that waits for data, then what else the pipe already holds,
/// without waiting, until `buf` holds [`CHUNK`]. The bytes read (0: end of
/// file).
pub async fn read(rx: &mut Receiver, buf: &mut BytesMut) -> std::io::Result<usize> {
    let mut n = rx.read_buf(buf).await?;
    while n > 0 && buf.len() < CHUNK {
        match rx.try_read_buf(buf) {
            Ok(m) if m > 0 => n += m,
            _ => break,
        }
    }
    Ok(n)
}

/// What `buf` holds, as a message's chunk: copied out when small (see
/// [`SMALL`]), else split off (the allocation comes back to `buf` once the
/// chunk is sent and dropped).
pub fn take_chunk(buf: &mut BytesMut) -> Bytes {
    if buf.len() < SMALL {
        let c = Bytes::copy_from_slice(buf);
        buf.clear();
        c
    } else {
        buf.split().freeze()
    }
}
