//! The `smart-autoscaler` binary: install the TLS crypto provider, parse the command line, set up logging, check
//! every setting once (failing fast with every problem named), then hand over to `app`.

use anyhow::Result;
use clap::Parser;
use smart_autoscaler::app;
use smart_autoscaler::config::{Cli, LogFormat};

/// jemalloc instead of glibc's malloc. Each tick decodes megabytes of Prometheus JSON and builds a new snapshot
/// while longer-lived data (the snapshot, sled's cache, the store's open hour) is allocated among it; glibc kept the
/// freed space in its arenas and `serve`'s RSS crept up tick after tick while the live heap stayed flat (measured
/// with heaptrack and `malloc_info`, see docs/benchmarks.md "Memory of serve at scale").
#[cfg(all(unix, not(target_env = "musl")))]
#[global_allocator]
static ALLOCATOR: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// jemalloc's settings, read at its first allocation (`_RJEM_MALLOC_CONF` in the environment overrides them):
/// one arena, and freed pages returned at once instead of after a 10 s decay. With the defaults (8 arenas on 2
/// cores) the server at 2,000 deployments kept ~125 MiB resident beyond its ~225 MiB live heap; with these, ~35.
/// The server allocates from few threads, so one arena costs little contention.
#[cfg(all(unix, not(target_env = "musl")))]
#[unsafe(export_name = "_rjem_malloc_conf")]
static JEMALLOC_CONF: &[u8; 44] = b"narenas:1,dirty_decay_ms:0,muzzy_decay_ms:0\0";

fn init_tracing(cli: &Cli) -> Result<()> {
    // kube's client logs every failed request at error level, and each failure reaches us and is logged once
    // per state change with the API server's URL (src/k8s): keep its lines out unless the filter asks for them.
    let directives = if cli.log.contains("kube_client") {
        cli.log.clone()
    } else {
        format!("{},kube_client::client::builder=off", cli.log)
    };
    let filter = tracing_subscriber::EnvFilter::try_new(&directives)
        .map_err(|e| anyhow::anyhow!("invalid --log filter {:?}: {e}", cli.log))?;
    // Colours only on a terminal (and never with NO_COLOR set): log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match cli.log_format {
        LogFormat::Text => builder.init(),
        LogFormat::Json => builder.json().init(),
    }
    Ok(())
}

fn main() -> Result<()> {
    // One crypto provider for every TLS user in the process; a second one would make rustls panic at first use.
    rustls::crypto::aws_lc_rs::default_provider()
        .install_default()
        .map_err(|_| anyhow::anyhow!("a rustls crypto provider was already installed"))?;
    let cli = Cli::parse();
    init_tracing(&cli)?;
    let settings = match cli.command.settings() {
        Ok(settings) => settings,
        Err(invalid) => {
            // A usage error, like clap's own: the list of problems and exit status 2, no backtrace.
            eprintln!("error: {invalid}");
            std::process::exit(2);
        }
    };
    if let Err(error) = app::run(settings) {
        // Once, without a backtrace: the message and each cause that adds something (many errors repeat
        // their source's text in their own).
        eprintln!("error: {}", describe(&error));
        std::process::exit(1);
    }
    Ok(())
}

/// The error and its causes as one line, leaving out a cause whose text the line already holds.
fn describe(error: &anyhow::Error) -> String {
    let mut line = String::new();
    for cause in error.chain() {
        let text = cause.to_string();
        if line.contains(&text) {
            continue;
        }
        if !line.is_empty() {
            line.push_str(": ");
        }
        line.push_str(&text);
    }
    line
}
