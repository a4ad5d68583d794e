//! Server-sent event responses: a stream of events with keep-alives at the
//! interval the dialect's SDK needs (hiver's watch reads with a 5 s
//! timeout, so every 2 s; others every 15 s).

use std::convert::Infallible;
use std::time::Duration;

use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use futures::Stream;

/// The default keep-alive interval.
pub const KEEP_ALIVE: Duration = Duration::from_secs(15);

/// An SSE response of `events`, with a comment line every `keep_alive`
/// while none comes (`None`: no keep-alives).
pub fn response<S>(events: S, keep_alive: Option<Duration>) -> Response
where
    S: Stream<Item = Result<Event, Infallible>> + Send + 'static,
{
    match keep_alive {
        Some(every) => Sse::new(events)
            .keep_alive(KeepAlive::new().interval(every))
            .into_response(),
        None => Sse::new(events).into_response(),
    }
}
