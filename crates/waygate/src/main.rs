//! The `waygate` binary: parse the command line, load and validate the
//! config, start telemetry, serve until a signal, drain, exit.

mod admin_client;
mod alloc;
mod check;
mod demo;
mod logging;
mod purge;
mod reload;
mod run;
mod upgrade;
mod why;

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc instead of glibc malloc: the request path allocates small,
/// short-lived objects on one thread and frees them on another; see
/// BENCHMARKS.md for the measurement behind this choice. Called through
/// its plain entry points where it can be (see `alloc`).
#[global_allocator]
static GLOBAL: alloc::Mimalloc = alloc::Mimalloc;

/// waygate: an HTTP gateway that answers every failure truthfully.
#[derive(Debug, Parser)]
#[command(name = "waygate", version, about, long_about = None)]
struct Cli {
    /// Format of the gateway's own log (on stderr).
    #[arg(long, value_enum, global = true, default_value_t = LogFormat::Pretty)]
    log_format: LogFormat,
    /// Log filter, e.g. `info` or `waygate_proxy=debug` (overrides RUST_LOG).
    #[arg(long, global = true)]
    log_level: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum LogFormat {
    Json,
    Pretty,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway.
    Run {
        /// The config file.
        #[arg(long, short, default_value = "waygate.toml")]
        config: PathBuf,
        /// Worker threads (default: the number of cores).
        #[arg(long)]
        workers: Option<usize>,
        /// Take over the listening sockets of the waygate running with the
        /// same config (binary upgrade); it then drains and exits.
        #[arg(long)]
        upgrade: bool,
    },
    /// Validate a config file: prints errors and warnings, exits 0 if valid, 1 if not.
    Check {
        #[arg(long, short, default_value = "waygate.toml")]
        config: PathBuf,
        /// Output format; `json` is for CI pipelines.
        #[arg(long, value_enum, default_value_t = check::Format::Text)]
        format: check::Format,
        /// Also connect to every upstream server (and its health path) and
        /// report, per server: healthy / reachable / refused / timeout /
        /// bad_http / unhealthy / dns_error, with timings. Exit 1 if any is not ready.
        #[arg(long)]
        probe: bool,
    },
    /// Explain a gateway error by its request id (asks the admin listener).
    Why {
        /// The X-Request-Id of the failed request.
        request_id: String,
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Ask the running gateway to read its config file again (through the
    /// admin listener); prints what changed, or the errors of a rejected config.
    Reload {
        #[command(flatten)]
        admin: AdminArgs,
    },
    /// Replace the running gateway by a new process of the binary on disk
    /// (after a package upgrade) without dropping a connection: the new one
    /// takes over the listening sockets, the old one drains and exits.
    Upgrade {
        #[arg(long, short, default_value = "waygate.toml")]
        config: PathBuf,
    },
    /// Start the gateway in front of built-in demo upstreams that fail in every way.
    Demo {
        /// Where the demo gateway listens.
        #[arg(long, default_value = "127.0.0.1:8080")]
        listen: std::net::SocketAddr,
    },
}

/// How to reach a running gateway's admin listener.
#[derive(Debug, clap::Args)]
struct AdminArgs {
    /// The admin listener's address (default: [admin] listen of the config).
    #[arg(long)]
    admin: Option<String>,
    /// The admin token (default: [admin] token of the config, or $WAYGATE_ADMIN_TOKEN).
    #[arg(long, env = "WAYGATE_ADMIN_TOKEN")]
    token: Option<String>,
    /// The config file whose [admin] table says where the admin listener is.
    #[arg(long, short, default_value = "waygate.toml")]
    config: PathBuf,
}

impl From<AdminArgs> for admin_client::Target {
    fn from(a: AdminArgs) -> Self {
        Self {
            admin: a.admin,
            token: a.token,
            config: a.config,
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Check {
            config,
            format,
            probe,
        } => check::check(&config, format, probe),
        Command::Run {
            config,
            workers,
            upgrade,
        } => {
            logging::init(cli.log_format, cli.log_level.as_deref());
            purge::spawn();
            run::run(&config, workers, upgrade)
        }
        Command::Upgrade { config } => upgrade::upgrade(&config),
        Command::Why { request_id, admin } => why::why(&request_id, admin.into()),
        Command::Reload { admin } => reload::reload(admin.into()),
        Command::Demo { listen } => {
            logging::init(cli.log_format, cli.log_level.as_deref());
            purge::spawn();
            demo::demo(listen)
        }
    }
}
