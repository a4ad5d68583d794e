//! `paddock bench --only boxd`: the exec round trip of `true` through the
//! boxd dialect's gRPC `Exec` stream (its init frame, the half-close, the
//! exit frame), beside the same command (`sh -c true`, as boxd runs every
//! command) through the native API's buffered exec, on one
//! sandbox, alternating, with a channel and a connection kept for each.

use std::net::SocketAddr;
use std::time::Instant;

use anyhow::{bail, Context, Result};
use paddock_boxd::pb;
use paddock_client::wire as w;
use serde_json::{json, Value};

use crate::bench::{median, summary};

pub async fn figures(
    c: &paddock_client::Client,
    addr: SocketAddr,
    id: &str,
    runs: usize,
) -> Result<Vec<Value>> {
    // A bearer for the dialect: a token the daemon signs for whoever the
    // bench is (ten minutes).
    let token = c
        .create_token(&w::TokenCreate {
            ttl_secs: 600,
            ..Default::default()
        })
        .await
        .context("a token for the boxd dialect (POST /v1/tokens)")?
        .token;
    let channel = tonic::transport::Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(true)
        .connect()
        .await
        .with_context(|| format!("the boxd dialect on {addr} (paddock serve --boxd-listen)"))?;
    let mut client = pb::boxd_api_client::BoxdApiClient::new(channel);
    let bearer: tonic::metadata::MetadataValue<_> = format!("Bearer {token}").parse()?;
    // The same command both ways: boxd runs every command through a shell.
    let req = w::ExecRequest::shell("true");
    let (mut native, mut boxd) = (Vec::new(), Vec::new());
    for i in 0..runs + 10 {
        let t0 = Instant::now();
        let r = c.exec(id, &req).await?;
        let t_native = t0.elapsed().as_secs_f64() * 1000.0;
        if r.exit_code != 0 {
            bail!("native exec of true: exit {}", r.exit_code);
        }
        let t0 = Instant::now();
        let init = pb::ExecChunk {
            vm_id: id.to_string(),
            command: "true".into(),
            ..Default::default()
        };
        let mut call = tonic::Request::new(tokio_stream::iter(vec![init]));
        call.metadata_mut().insert("authorization", bearer.clone());
        let mut out = client.exec(call).await?.into_inner();
        let mut code = None;
        while let Some(chunk) = out.message().await? {
            code = Some(chunk.exit_code);
        }
        let t_boxd = t0.elapsed().as_secs_f64() * 1000.0;
        if code != Some(0) {
            bail!("boxd exec of true: exit {code:?}");
        }
        if i >= 10 {
            native.push(t_native);
            boxd.push(t_boxd);
        }
    }
    let ratio = median(&boxd) / median(&native);
    Ok(vec![
        summary("boxd_exec_roundtrip", "ms", boxd),
        summary("native_exec_roundtrip", "ms", native),
        json!({"figure": "boxd_exec_over_native", "unit": "x", "n": runs, "p50": ratio, "p99": ratio}),
    ])
}
