//! Uploads: a request body as the byte stream the engine writes into a
//! sandbox, and the drain of what a client still sends after the upload was
//! refused midway (a full disk, a path it may not write). Answered with its
//! body half sent, a client finds the connection closed and reports a
//! broken pipe instead of the answer; so the rest is read and dropped, for
//! a bounded time and amount.

use std::sync::Arc;
use std::time::Duration;

use axum::body::{Body, BodyDataStream, Bytes};
use futures::{Stream, StreamExt};
use paddock_core::Error;

/// How long and how much a refused upload is drained at most: the time is
/// what bounds it (a client that goes on sending is cut off then); the
/// amount is a second fence, above what a refused upload of any size a
/// client sends at once would leave (a 96 MiB upload refused at its first
/// MiB, say).
pub const DRAIN_TIME: Duration = Duration::from_secs(10);
pub const DRAIN_BYTES: usize = 1 << 30;

/// A request body being uploaded; see [`Upload::drain`].
pub struct Upload {
    body: Arc<tokio::sync::Mutex<BodyDataStream>>,
    /// The body's length, when the client said it.
    pub size: Option<u64>,
}

impl Upload {
    pub fn new(body: Body) -> Upload {
        let size = axum::body::HttpBody::size_hint(&body).exact();
        Upload {
            body: Arc::new(tokio::sync::Mutex::new(body.into_data_stream())),
            size,
        }
    }

    /// The bytes as they arrive; a body that breaks off is a 400 naming
    /// `field`. Shared with the upload: what the engine leaves unread is
    /// still there for [`Upload::drain`].
    pub fn stream(
        &self,
        field: &'static str,
    ) -> impl Stream<Item = Result<Bytes, Error>> + Send + 'static {
        futures::stream::unfold(self.body.clone(), |b| async move {
            let next = b.lock().await.next().await;
            next.map(|r| (r, b))
        })
        .map(move |r| r.map_err(|e| Error::invalid(field, format!("the upload broke off: {e}"))))
    }

    /// Reads and drops the rest of the body, for at most [`DRAIN_TIME`] and
    /// [`DRAIN_BYTES`].
    pub async fn drain(&self) {
        drain(async {
            let mut b = self.body.lock().await;
            let mut left = DRAIN_BYTES;
            while let Some(Ok(c)) = b.next().await {
                left = left.saturating_sub(c.len());
                if left == 0 {
                    return;
                }
            }
        })
        .await
    }
}

/// Runs a dialect's own drain (a multipart form's remaining fields, say)
/// for at most [`DRAIN_TIME`].
pub async fn drain(f: impl std::future::Future<Output = ()>) {
    let _ = tokio::time::timeout(DRAIN_TIME, f).await;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn what_the_engine_leaves_is_drained_and_the_size_kept() {
        let chunks: Vec<Result<Bytes, std::io::Error>> =
            vec![Ok(Bytes::from_static(b"ab")), Ok(Bytes::from_static(b"cd"))];
        let up = Upload::new(Body::from_stream(futures::stream::iter(chunks)));
        let mut s = Box::pin(up.stream("body"));
        assert_eq!(s.next().await.unwrap().unwrap(), Bytes::from_static(b"ab"));
        drop(s);
        up.drain().await;
        assert!(Box::pin(up.stream("body")).next().await.is_none());
        assert_eq!(Upload::new(Body::from("xyz")).size, Some(3));
    }
}
