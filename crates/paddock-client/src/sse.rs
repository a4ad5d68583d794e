//! Server-sent events, as the native API's streams send them.

use futures::{Stream, StreamExt};
use serde::de::DeserializeOwned;

use crate::{Error, Result};

/// One event: its name (`message` when unnamed), id and data.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Frame {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

impl Frame {
    pub fn decode<T: DeserializeOwned>(&self) -> Result<T> {
        serde_json::from_str(&self.data)
            .map_err(|e| Error::Protocol(format!("a `{}` event: {e}: {}", self.event, self.data)))
    }
}

/// Parses one event block (the lines between blank lines); `None` for a
/// block without data (a comment, a keep-alive).
pub fn parse(block: &str) -> Option<Frame> {
    let mut f = Frame {
        event: "message".into(),
        ..Frame::default()
    };
    let mut data: Vec<&str> = Vec::new();
    for line in block.lines() {
        let (name, value) = match line.split_once(':') {
            Some((n, v)) => (n, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match name {
            "event" => f.event = value.to_string(),
            "id" => f.id = Some(value.to_string()),
            "data" => data.push(value),
            _ => {}
        }
    }
    if data.is_empty() {
        return None;
    }
    f.data = data.join("\n");
    Some(f)
}

/// A response's body as events, as they arrive.
pub(crate) fn frames(resp: reqwest::Response) -> impl Stream<Item = Result<Frame>> + Send {
    let body = resp.bytes_stream();
    futures::stream::unfold(
        (Box::pin(body), Vec::<u8>::new(), false),
        |(mut body, mut buf, done)| async move {
            if done {
                return None;
            }
            loop {
                // One block, ended by a blank line (\n\n, or \r\n\r\n).
                if let Some(end) = block_end(&buf) {
                    let (block, rest) = buf.split_at(end.0);
                    let text = String::from_utf8_lossy(block).into_owned();
                    buf = rest[end.1 - end.0..].to_vec();
                    if let Some(f) = parse(&text) {
                        return Some((Ok(f), (body, buf, false)));
                    }
                    continue;
                }
                match body.next().await {
                    Some(Ok(chunk)) => buf.extend_from_slice(&chunk),
                    Some(Err(e)) => return Some((Err(Error::from(e)), (body, buf, true))),
                    None => return None,
                }
            }
        },
    )
}

/// Where the first block of `buf` ends, and where the next one starts.
fn block_end(buf: &[u8]) -> Option<(usize, usize)> {
    let lf = buf
        .windows(2)
        .position(|w| w == b"\n\n")
        .map(|i| (i, i + 2));
    let crlf = buf
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .map(|i| (i, i + 4));
    match (lf, crlf) {
        (Some(a), Some(b)) => Some(if a.0 <= b.0 { a } else { b }),
        (a, b) => a.or(b),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_named_events_ids_and_multiline_data() {
        let f = parse("id: 7\nevent: exit\ndata: {\"a\":\ndata: 1}").unwrap();
        assert_eq!(f.event, "exit");
        assert_eq!(f.id.as_deref(), Some("7"));
        assert_eq!(f.data, "{\"a\":\n1}");
        assert_eq!(parse(": keep-alive"), None);
        assert_eq!(parse("data:x").unwrap().event, "message");
        assert_eq!(parse("data:x").unwrap().data, "x");
    }

    #[test]
    fn finds_block_ends_of_either_line_ending() {
        assert_eq!(block_end(b"data: 1\n\ndata: 2"), Some((7, 9)));
        assert_eq!(block_end(b"data: 1\r\n\r\n"), Some((7, 11)));
        assert_eq!(block_end(b"data: 1\n"), None);
    }
}
