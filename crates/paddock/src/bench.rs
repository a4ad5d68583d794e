//! `paddock bench`: measures a running daemon through its native API, as a
//! client would see it: create-to-ready, exec round trip, file upload and
//! download throughput, and host memory per idle sandbox.

use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use serde_json::{json, Value};

#[derive(clap::Args, Debug)]
pub struct BenchArgs {
    /// Sandboxes created one after another for create-to-ready.
    #[arg(long, default_value_t = 30)]
    pub creates: usize,
    /// Exec round trips of `true`.
    #[arg(long, default_value_t = 300)]
    pub execs: usize,
    /// MiB moved each way for the file figures.
    #[arg(long, default_value_t = 64)]
    pub file_mib: usize,
    /// Idle sandboxes held at once for the density figure (0: skip).
    #[arg(long, default_value_t = 300)]
    pub density: usize,
    /// Also measure this image: create-to-ready from the cache, and pulls
    /// with nothing cached (the daemon must reach its registry).
    #[arg(long)]
    pub image: Option<String>,
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn summary(name: &str, unit: &str, mut v: Vec<f64>) -> Value {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    json!({"figure": name, "unit": unit, "n": v.len(), "p50": pct(&v, 0.5), "p99": pct(&v, 0.99),
           "min": v.first(), "max": v.last()})
}

/// Host memory that sandboxes cost, KiB, read on the daemon's host:
/// what their cgroups are charged (the agent, its page tables, the
/// writable layer on tmpfs, charged kernel objects), plus kernel memory no
/// cgroup is charged for (unreclaimable slab, kernel stacks, page tables),
/// plus the daemon's own resident memory. MemFree is no use here: this VM
/// hands free pages back to its host, so it moves on its own.
fn sandbox_memory_kib() -> Result<u64> {
    let m = std::fs::read_to_string("/proc/meminfo")?;
    let get = |k: &str| -> u64 {
        m.lines()
            .find_map(|l| l.strip_prefix(k).and_then(|v| v.strip_prefix(':')))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap_or(0)
    };
    let kernel = get("SUnreclaim") + get("KernelStack") + get("PageTables");
    let mut cgroups = 0u64;
    for root in ["/sys/fs/cgroup/memory/paddock", "/sys/fs/cgroup/paddock"] {
        if let Ok(rd) = std::fs::read_dir(root) {
            for e in rd.flatten() {
                for f in ["memory.usage_in_bytes", "memory.current"] {
                    if let Ok(v) = std::fs::read_to_string(e.path().join(f)) {
                        cgroups += v.trim().parse::<u64>().unwrap_or(0) / 1024;
                        break;
                    }
                }
            }
        }
    }
    let mut daemon = 0u64;
    if let Ok(rd) = std::fs::read_dir("/proc") {
        for e in rd.flatten() {
            let cmd = std::fs::read(e.path().join("cmdline")).unwrap_or_default();
            let args: Vec<&[u8]> = cmd.split(|b| *b == 0).collect();
            if args.len() > 1 && args[0].ends_with(b"paddock") && args[1] == b"serve" {
                let st = std::fs::read_to_string(e.path().join("status")).unwrap_or_default();
                daemon += st
                    .lines()
                    .find_map(|l| l.strip_prefix("VmRSS:"))
                    .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
                    .unwrap_or(0);
            }
        }
    }
    Ok(kernel + cgroups + daemon)
}

struct Api {
    base: String,
    key: Option<String>,
    http: reqwest::Client,
}

impl Api {
    fn req(&self, m: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(m, format!("{}/v1{path}", self.base));
        match &self.key {
            Some(k) => r.bearer_auth(k),
            None => r,
        }
    }

    async fn create(&self) -> Result<String> {
        let r = self
            .req(reqwest::Method::POST, "/sandboxes")
            .json(&json!({"labels": {"paddock-bench": "1"}}))
            .send()
            .await?;
        if r.status().as_u16() != 201 {
            bail!("create: {} {}", r.status(), r.text().await?);
        }
        let v: Value = r.json().await?;
        Ok(v["id"].as_str().unwrap_or_default().to_string())
    }

    /// One `true` through the exec API; its round trip in ms.
    async fn exec_true(&self, id: &str) -> Result<f64> {
        let t0 = Instant::now();
        let r = self
            .req(reqwest::Method::POST, &format!("/sandboxes/{id}/exec"))
            .json(&json!({"cmd": ["true"]}))
            .send()
            .await?;
        let v: Value = r.json().await?;
        if v["exit_code"] != 0 {
            bail!("exec: {v}");
        }
        Ok(t0.elapsed().as_secs_f64() * 1000.0)
    }

    async fn destroy(&self, id: &str) -> Result<()> {
        self.req(reqwest::Method::DELETE, &format!("/sandboxes/{id}"))
            .send()
            .await?
            .error_for_status()?;
        Ok(())
    }
}

pub async fn run(host: String, key: Option<String>, json_out: bool, a: BenchArgs) -> Result<i32> {
    let api = Api {
        base: host.trim_end_matches('/').to_string(),
        key,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(64)
            .tcp_nodelay(true)
            .build()?,
    };
    let mut figures = Vec::new();
    let say = |s: &str| {
        if !json_out {
            eprintln!("{s}");
        }
    };

    say(&format!(
        "create-to-ready: {} sandboxes, one after another",
        a.creates
    ));
    let (mut t, mut ids) = (Vec::new(), Vec::new());
    for _ in 0..a.creates {
        let t0 = Instant::now();
        ids.push(api.create().await?);
        t.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    figures.push(summary("create_to_ready", "ms", t));
    let mut t = Vec::new();
    for id in ids {
        let t0 = Instant::now();
        api.destroy(&id).await?;
        t.push(t0.elapsed().as_secs_f64() * 1000.0);
    }
    figures.push(summary("destroy", "ms", t));
    say("create-to-ready with a destroy between creates");
    let mut t = Vec::new();
    for _ in 0..a.creates {
        let t0 = Instant::now();
        let id = api.create().await?;
        t.push(t0.elapsed().as_secs_f64() * 1000.0);
        api.destroy(&id).await?;
    }
    figures.push(summary("create_to_ready_between_destroys", "ms", t));

    let id = api.create().await?;
    say(&format!("exec round trip: {} × `true`", a.execs));
    let mut t = Vec::new();
    for i in 0..a.execs + 20 {
        let ms = api.exec_true(&id).await?;
        if i >= 20 {
            t.push(ms);
        }
    }
    figures.push(summary("exec_round_trip", "ms", t));

    say(&format!("files: {} MiB up and down, 5 times", a.file_mib));
    let data = bytes::Bytes::from(vec![0x5au8; a.file_mib << 20]);
    let (mut up, mut down) = (Vec::new(), Vec::new());
    for _ in 0..5 {
        let t0 = Instant::now();
        api.req(reqwest::Method::PUT, &format!("/sandboxes/{id}/files"))
            .query(&[("path", "/workspace/bench.bin")])
            .body(data.clone())
            .send()
            .await?
            .error_for_status()?;
        up.push(data.len() as f64 / 1e6 / t0.elapsed().as_secs_f64());
        let t0 = Instant::now();
        let r = api
            .req(reqwest::Method::GET, &format!("/sandboxes/{id}/files"))
            .query(&[("path", "/workspace/bench.bin")])
            .send()
            .await?
            .error_for_status()?;
        let n = r.bytes().await?.len();
        if n != data.len() {
            bail!("download returned {n} bytes of {}", data.len());
        }
        down.push(n as f64 / 1e6 / t0.elapsed().as_secs_f64());
    }
    figures.push(summary("upload", "MB/s", up));
    figures.push(summary("download", "MB/s", down));
    api.destroy(&id).await?;

    if let Some(image) = &a.image {
        say(&format!(
            "image {image}: pulls with an empty cache, then creates from it"
        ));
        let mut rates = Vec::new();
        for _ in 0..3 {
            let _ = api
                .req(reqwest::Method::DELETE, "/images")
                .query(&[("reference", image)])
                .send()
                .await?;
            api.req(reqwest::Method::POST, "/images/prune")
                .send()
                .await?
                .error_for_status()?;
            let t0 = Instant::now();
            let r = api
                .req(reqwest::Method::POST, "/images")
                .json(&json!({"reference": image}))
                .send()
                .await?;
            if !r.status().is_success() {
                bail!("pull {image}: {} {}", r.status(), r.text().await?);
            }
            let v: Value = r.json().await?;
            rates.push(v["size"].as_f64().unwrap_or(0.0) / 1e6 / t0.elapsed().as_secs_f64());
        }
        figures.push(summary("image_pull", "MB/s", rates));
        let mut t = Vec::new();
        for _ in 0..a.creates {
            let t0 = Instant::now();
            let r = api
                .req(reqwest::Method::POST, "/sandboxes")
                .json(&json!({"image": image, "labels": {"paddock-bench": "1"}}))
                .send()
                .await?;
            if r.status().as_u16() != 201 {
                bail!("create from {image}: {} {}", r.status(), r.text().await?);
            }
            t.push(t0.elapsed().as_secs_f64() * 1000.0);
            let v: Value = r.json().await?;
            api.destroy(v["id"].as_str().unwrap_or_default()).await?;
        }
        figures.push(summary("create_to_ready_cached_image", "ms", t));
    }

    if a.density > 0 {
        say(&format!("density: {} idle sandboxes at once", a.density));
        tokio::time::sleep(Duration::from_millis(500)).await;
        let before = sandbox_memory_kib()?;
        let mut ids = Vec::new();
        let t0 = Instant::now();
        for _ in 0..a.density {
            ids.push(api.create().await?);
        }
        let took = t0.elapsed().as_secs_f64();
        tokio::time::sleep(Duration::from_secs(2)).await;
        let after = sandbox_memory_kib()?;
        let per = (after.saturating_sub(before)) as f64 / 1024.0 / a.density as f64;
        // Every one still answers.
        let mut t = Vec::new();
        for id in &ids {
            t.push(api.exec_true(id).await?);
        }
        figures.push(json!({"figure": "host_memory_per_idle_sandbox", "unit": "MiB", "n": a.density, "p50": per, "p99": per}));
        figures.push(summary("exec_round_trip_at_density", "ms", t));
        figures.push(json!({"figure": "sequential_creates_at_density", "unit": "s", "n": a.density, "p50": took, "p99": took}));
        for id in ids {
            api.destroy(&id).await?;
        }
    }

    if json_out {
        println!("{}", serde_json::to_string_pretty(&figures)?);
    } else {
        let mut t = comfy_table::Table::new();
        t.load_preset(comfy_table::presets::NOTHING)
            .set_header(vec!["FIGURE", "UNIT", "N", "P50", "P99"]);
        for f in &figures {
            t.add_row(vec![
                f["figure"].as_str().unwrap_or("").to_string(),
                f["unit"].as_str().unwrap_or("").to_string(),
                f["n"].to_string(),
                format!("{:.2}", f["p50"].as_f64().unwrap_or(f64::NAN)),
                format!("{:.2}", f["p99"].as_f64().unwrap_or(f64::NAN)),
            ]);
        }
        println!("{t}");
    }
    Ok(0)
}
