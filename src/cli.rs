//! The command line: `serve`, `run-worker`, `check`, `backup`, `key new`,
//! `jwt mint`, `schema infer`.
//!
//! Exit codes: 0 success, 1 runtime failure, 2 configuration or usage
//! problem. Only requested output goes to stdout (a minted key or token, an
//! inferred schema); everything else goes to stderr.

// The command line is where callgate talks to a terminal.
#![allow(clippy::print_stdout, clippy::print_stderr)]

use std::io::Read;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use clap::{Parser, Subcommand};

use crate::auth::api_key;
use crate::catalog::Catalog;
use crate::config::{self, Env, FormNesting, RateSpec};
use crate::telemetry::{self, LogFormat};

#[derive(Debug, Parser)]
#[command(
    name = "callgate",
    version,
    about = "Inbound webhook trigger gateway for voice-agent platforms"
)]
struct Cli {
    /// Log format on stderr.
    #[arg(long, global = true, value_enum, default_value = "text")]
    log_format: LogFormat,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Serve {
        #[arg(long, default_value = "config")]
        config: PathBuf,
        /// Overrides `server.listen` (e.g. 0.0.0.0:8443; port 0 picks one).
        #[arg(long)]
        listen: Option<SocketAddr>,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Serve without running jobs (run them with `callgate run-worker`).
        #[arg(long)]
        no_runner: bool,
    },
    /// Run jobs without serving HTTP (next to a `serve --no-runner`, on the
    /// same database).
    RunWorker {
        #[arg(long, default_value = "config")]
        config: PathBuf,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Validate the configuration and list every problem.
    Check {
        #[arg(long, default_value = "config")]
        config: PathBuf,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
    },
    /// Copy the SQLite database to FILE, consistently, while the gateway
    /// runs (PostgreSQL: use pg_dump).
    Backup {
        #[arg(long, default_value = "config")]
        config: PathBuf,
        #[arg(long, default_value = "data")]
        data_dir: PathBuf,
        /// Where to write the copy.
        #[arg(long, value_name = "FILE")]
        to: PathBuf,
        /// Replace FILE if it exists.
        #[arg(long)]
        force: bool,
    },
    /// Manage API keys.
    Key {
        #[command(subcommand)]
        command: KeyCommand,
    },
    /// JWT helpers for testing.
    Jwt {
        #[command(subcommand)]
        command: JwtCommand,
    },
    /// JSON Schema helpers.
    Schema {
        #[command(subcommand)]
        command: SchemaCommand,
    },
}

#[derive(Debug, Subcommand)]
enum KeyCommand {
    /// Create an API key: its hash goes to the key file, the key to stdout once.
    New {
        #[arg(long)]
        name: String,
        /// Repeatable; default `triggers:run`.
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Per-key rate limit as REQUESTS/PERIOD:BURST, e.g. `10/1s:20`.
        #[arg(long)]
        rate_limit: Option<String>,
        /// Repeatable: a network (CIDR) or address the key may be used
        /// from, e.g. `203.0.113.0/24`; default: anywhere.
        #[arg(long = "allowed-ip", value_name = "CIDR")]
        allowed_ips: Vec<String>,
        #[arg(long, default_value = "config")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum JwtCommand {
    /// Sign a token with a configured HMAC issuer's secret.
    Mint {
        /// Issuer id (`[auth.jwt.issuers.<id>]`).
        #[arg(long)]
        issuer: String,
        #[arg(long)]
        sub: String,
        #[arg(long = "scope")]
        scopes: Vec<String>,
        /// Lifetime, e.g. `15m`, `1h`.
        #[arg(long, default_value = "1h", value_parser = humantime::parse_duration)]
        ttl: Duration,
        #[arg(long, default_value = "config")]
        config: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
enum SchemaCommand {
    /// Print a starting schema for a trigger from a sample payload on stdin
    /// (JSON, or form-encoded with --form).
    Infer {
        /// The sample is form-encoded.
        #[arg(long)]
        form: bool,
        /// How form keys nest.
        #[arg(long, value_enum, default_value = "auto")]
        nesting: NestingArg,
    },
}

#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum NestingArg {
    Auto,
    Brackets,
    DoubleUnderscore,
    None,
}

impl From<NestingArg> for FormNesting {
    fn from(n: NestingArg) -> Self {
        match n {
            NestingArg::Auto => FormNesting::Auto,
            NestingArg::Brackets => FormNesting::Brackets,
            NestingArg::DoubleUnderscore => FormNesting::DoubleUnderscore,
            NestingArg::None => FormNesting::None,
        }
    }
}

/// Entry point of the binary.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::crypto::install_tls_provider();
    let env = config::env::from_process();
    telemetry::init(cli.log_format, env.get("CALLGATE_LOG").map(String::as_str));
    match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
            no_runner,
        } => serve(&config, listen, &data_dir, no_runner, &env),
        Command::RunWorker { config, data_dir } => run_worker(&config, &data_dir, &env),
        Command::Check { config, data_dir } => check(&config, &data_dir, &env),
        Command::Backup {
            config,
            data_dir,
            to,
            force,
        } => backup(&config, &data_dir, &to, force, &env),
        Command::Key {
            command:
                KeyCommand::New {
                    name,
                    scopes,
                    rate_limit,
                    allowed_ips,
                    config,
                },
        } => key_new(
            &config,
            &name,
            scopes,
            rate_limit.as_deref(),
            &allowed_ips,
            &env,
        ),
        Command::Jwt {
            command:
                JwtCommand::Mint {
                    issuer,
                    sub,
                    scopes,
                    ttl,
                    config,
                },
        } => jwt_mint(&config, &issuer, &sub, &scopes, ttl, &env),
        Command::Schema {
            command: SchemaCommand::Infer { form, nesting },
        } => schema_infer(form, nesting.into()),
    }
}

fn load(dir: &Path, data_dir: &Path, env: &Env) -> Result<Catalog, ExitCode> {
    crate::app::compile::load(dir, data_dir, env).map_err(|e| {
        eprintln!("{e}");
        ExitCode::from(2)
    })
}

fn serve(
    dir: &Path,
    listen: Option<SocketAddr>,
    data_dir: &Path,
    no_runner: bool,
    env: &Env,
) -> ExitCode {
    let mut config = match load(dir, data_dir, env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    if let Some(addr) = listen {
        config.main.server.listen = addr;
    }
    if no_runner {
        config.main.runner.enabled = false;
    }
    block_on(async move {
        let addr = config.main.server.listen;
        let listener = tokio::net::TcpListener::bind(addr)
            .await
            .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}"))?;
        crate::run(config, listener, shutdown_signal()).await
    })
}

fn run_worker(dir: &Path, data_dir: &Path, env: &Env) -> ExitCode {
    let config = match load(dir, data_dir, env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    block_on(crate::run_worker(config, shutdown_signal()))
}

/// Runs `main` on a multi-threaded runtime; an error exits 1.
fn block_on(main: impl std::future::Future<Output = anyhow::Result<()>>) -> ExitCode {
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cannot start the async runtime: {e}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(main) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            tracing::error!(error = format!("{e:#}"), "callgate stopped with an error");
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}

/// Resolves on SIGTERM or Ctrl-C (SIGINT).
async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        _ = ctrl_c => {},
        _ = terminate => {},
    }
    tracing::info!("shutdown signal received; finishing in-flight requests");
}

fn check(dir: &Path, data_dir: &Path, env: &Env) -> ExitCode {
    match load(dir, data_dir, env) {
        Ok(c) => {
            eprintln!(
                "{}: configuration OK ({} trigger(s), {} agent(s), {} API key(s), {} JWT issuer(s))",
                dir.display(),
                c.triggers.len(),
                c.agents.len(),
                c.keys.len(),
                c.main.auth.jwt.issuers.len()
            );
            ExitCode::SUCCESS
        }
        Err(code) => code,
    }
}

/// Reads only `[storage]` (with its environment overrides): a backup must
/// not depend on the rest of the configuration being valid at that moment.
fn backup(dir: &Path, data_dir: &Path, to: &Path, force: bool, env: &Env) -> ExitCode {
    let storage = match config::read_storage(dir, env) {
        Ok(s) => s,
        Err(e) => {
            eprintln!("{e}");
            return ExitCode::from(2);
        }
    };
    match crate::store::backup(&storage, data_dir, to, force) {
        Ok(r) => {
            eprintln!(
                "backed up {} to {}: {} job(s), {} bytes in {} ms",
                r.source.display(),
                r.path.display(),
                r.jobs,
                r.bytes,
                r.elapsed.as_millis()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(if e.is_usage() { 2 } else { 1 })
        }
    }
}

fn key_new(
    dir: &Path,
    name: &str,
    mut scopes: Vec<String>,
    rate: Option<&str>,
    allowed_ips: &[String],
    env: &Env,
) -> ExitCode {
    if scopes.is_empty() {
        scopes.push("triggers:run".into());
    }
    let rate_limit = match rate.map(parse_rate).transpose() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("--rate-limit: {e}");
            return ExitCode::from(2);
        }
    };
    let path = dir.join(config::keys_file_name(dir, env));
    let now = crate::clock::rfc3339(crate::clock::system_now_ms());
    match api_key::add_to_file_allowing(&path, name, &scopes, rate_limit, allowed_ips, &now) {
        Ok(key) => {
            println!("{key}");
            let from = if allowed_ips.is_empty() {
                String::new()
            } else {
                format!(", usable from [{}]", allowed_ips.join(", "))
            };
            eprintln!(
                "created API key `{name}` with scopes [{}]{from}; its hash is in {} (a running gateway picks it up within seconds). The key is shown only this once.",
                scopes.join(", "),
                path.display()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

/// `REQUESTS/PERIOD:BURST`, e.g. `10/1s:20`.
fn parse_rate(s: &str) -> Result<RateSpec, String> {
    let err = || format!("`{s}` is not REQUESTS/PERIOD:BURST such as 10/1s:20");
    let (requests, rest) = s.split_once('/').ok_or_else(err)?;
    let (per, burst) = rest.split_once(':').ok_or_else(err)?;
    let spec = RateSpec {
        requests: requests.trim().parse().map_err(|_| err())?,
        per: humantime::parse_duration(per.trim()).map_err(|_| err())?,
        burst: burst.trim().parse().map_err(|_| err())?,
    };
    spec.check()?;
    Ok(spec)
}

fn jwt_mint(
    dir: &Path,
    issuer: &str,
    sub: &str,
    scopes: &[String],
    ttl: Duration,
    env: &Env,
) -> ExitCode {
    let config = match load(dir, Path::new("data"), env) {
        Ok(c) => c,
        Err(code) => return code,
    };
    let now = crate::clock::system_now_ms().div_euclid(1000).max(0) as u64;
    match config.issuers.mint(issuer, sub, scopes, ttl, now) {
        Ok(token) => {
            println!("{token}");
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}

fn schema_infer(form: bool, nesting: FormNesting) -> ExitCode {
    let mut input = Vec::new();
    if let Err(e) = std::io::stdin().read_to_end(&mut input) {
        eprintln!("error: cannot read stdin: {e}");
        return ExitCode::from(1);
    }
    let sample = if form {
        crate::input::form::parse(input.trim_ascii(), nesting).map_err(|e| e.to_string())
    } else {
        serde_json::from_slice(&input)
            .map_err(|e| format!("stdin is not JSON ({e}); use --form for form-encoded samples"))
    };
    match sample {
        Ok(sample) => {
            let schema = crate::schema::infer::infer(&sample);
            println!(
                "{}",
                serde_json::to_string_pretty(&schema).unwrap_or_default()
            );
            ExitCode::SUCCESS
        }
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(2)
        }
    }
}
