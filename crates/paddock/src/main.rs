//! `paddock`: the daemon (`paddock serve`) and the CLI that talks to it.

mod agent_bin;
mod bench;
mod bench_boxd;
mod bench_peers;
mod bench_ssh;
mod claims;
mod cli;
mod oidc;
mod serve;

use clap::{Parser, Subcommand};

#[derive(Parser, Debug)]
#[command(name = "paddock", version, about = "Sandboxes for AI agents")]
struct Opts {
    /// The daemon's native API: `http://HOST:PORT` or `unix:///PATH`.
    /// Default: the daemon's unix socket if it exists (`PADDOCK_SOCKET`,
    /// default /run/paddock.sock), else http://127.0.0.1:7070.
    #[arg(long, global = true, env = "PADDOCK_HOST")]
    host: Option<String>,
    /// API key (needed when the daemon listens beyond loopback).
    #[arg(long, global = true, env = "PADDOCK_API_KEY", hide_env_values = true)]
    api_key: Option<String>,
    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand, Debug)]
enum Cmd {
    /// Run the daemon.
    Serve(Box<serve::ServeArgs>),
    #[command(flatten)]
    Client(cli::ClientCmd),
    /// Manage API keys (works on the daemon's data dir directly).
    #[command(subcommand)]
    Keys(cli::KeysCmd),
    /// Measure a running daemon: create-to-ready, exec, files, density.
    Bench(bench::BenchArgs),
}

fn main() {
    let opts = Opts::parse();
    let filter = tracing_subscriber::EnvFilter::try_from_env("PADDOCK_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let code = match opts.cmd {
        Cmd::Serve(args) => {
            tracing_subscriber::fmt()
                .with_env_filter(filter)
                .with_writer(std::io::stderr)
                .init();
            let rt = tokio::runtime::Runtime::new().expect("tokio");
            match rt.block_on(serve::run(*args)) {
                Ok(()) => 0,
                Err(e) => {
                    eprintln!("paddock serve: {e:#}");
                    1
                }
            }
        }
        Cmd::Keys(k) => match cli::keys(k, opts.json) {
            Ok(()) => 0,
            Err(e) => {
                eprintln!("paddock: {e:#}");
                1
            }
        },
        Cmd::Bench(b) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio");
            match rt.block_on(bench::run(
                opts.host.unwrap_or_else(|| "http://127.0.0.1:7070".into()),
                opts.api_key,
                opts.json,
                b,
            )) {
                Ok(c) => c,
                Err(e) => {
                    eprintln!("paddock bench: {e:#}");
                    1
                }
            }
        }
        Cmd::Client(c) => {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("tokio");
            let client = cli::Client::new(cli::endpoint(opts.host), opts.api_key, opts.json);
            let code = match rt.block_on(client.run(c)) {
                Ok(code) => code,
                Err(e) => {
                    eprintln!("paddock: {e:#}");
                    1
                }
            };
            // Don't wait for a read of stdin that may never return.
            rt.shutdown_background();
            code
        }
    };
    std::process::exit(code);
}
