//! `ilp-settlement-worker`: load the configuration, set up logging and the pool, then run the
//! worker until SIGINT or SIGTERM. Start-up errors are one line on stderr and exit code 1.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Parser;
use settlement_worker::{LogFormat, WorkerConfig};

/// Shown in `pg_stat_activity.application_name`.
const APPLICATION_NAME: &str = "ilp-settlement-worker";

/// Settles balances through each ledger's adaptor, on each ledger's schedule.
#[derive(Debug, Parser)]
#[command(name = "ilp-settlement-worker", version, about)]
struct Cli {
    /// TOML configuration file (ledgers, worker, database, log).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// PostgreSQL URL; overrides database.url.
    #[arg(long, value_name = "URL", env = "DATABASE_URL", hide_env_values = true)]
    database_url: Option<String>,
    /// Log line format; overrides log.format.
    #[arg(long, value_enum, value_name = "FORMAT")]
    log_format: Option<LogFormat>,
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match start(cli).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // `{:#}` joins the context chain on one line; no backtrace.
            eprintln!("ilp-settlement-worker: {err:#}");
            ExitCode::FAILURE
        }
    }
}

async fn start(cli: Cli) -> anyhow::Result<()> {
    let mut config = WorkerConfig::load(cli.config.as_deref())?;
    if let Some(url) = cli.database_url {
        config.database.url = Some(url.into());
    }
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    runtime::telemetry::init_tracing(config.log.format)?;
    runtime::tls::init(&config.tls)?;

    let pool_config = config.database.pool_config(APPLICATION_NAME)?;
    let pool = schema::build_pool(&pool_config).context("building the database pool")?;

    // The worker stops after its current ledger run.
    let shutdown = runtime::shutdown::cancel_on_signal("stopping after the current ledger run")
        .context("installing signal handlers")?;
    settlement_worker::run(config, pool, shutdown).await
}
