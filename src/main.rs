//! The `smart-autoscaler` binary: install the TLS crypto provider, parse and validate the configuration, set
//! up logging, then hand over to `app`.

use anyhow::Result;
use clap::Parser;
use smart_autoscaler::app;
use smart_autoscaler::config::{Cli, Command, LogFormat};

fn init_tracing(cli: &Cli) -> Result<()> {
    let filter = tracing_subscriber::EnvFilter::try_new(&cli.log)
        .map_err(|e| anyhow::anyhow!("invalid --log filter {:?}: {e}", cli.log))?;
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
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
    match &cli.command {
        Command::Certs(args) => {
            args.validate()?;
            app::run_certs(args)
        }
        Command::Serve(args) => {
            args.validate()?;
            runtime()?.block_on(app::run_serve((**args).clone()))
        }
        Command::Simulate(args) => {
            args.validate()?;
            print!("{}", smart_autoscaler::simulate::run(args)?);
            Ok(())
        }
        Command::Demo(args) => {
            args.validate()?;
            runtime()?.block_on(app::run_demo(args.clone()))
        }
    }
}

fn runtime() -> Result<tokio::runtime::Runtime> {
    Ok(tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?)
}
