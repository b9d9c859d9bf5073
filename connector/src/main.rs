//! `ilp-connector`: runs the connector (`serve`), applies migrations, and manages accounts,
//! routes, rates and balances directly in the database.

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};
use connector::cli::{self, AccountsCommand, Output, RatesCommand, RoutesCommand};
use connector::config::ConnectorConfig;
use runtime::config::LogFormat;

/// An Interledger (ILPv4) connector with balances in PostgreSQL.
#[derive(Debug, Parser)]
#[command(name = "ilp-connector", version, about)]
struct Cli {
    /// TOML configuration file (see README "Configuration"); environment overrides apply on top.
    #[arg(long, short, global = true, env = "ILP_CONNECTOR_CONFIG")]
    config: Option<PathBuf>,
    /// PostgreSQL URL; overrides DATABASE_URL and the config file.
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// Log format: text or json (default: the config's log.format).
    #[arg(long, global = true)]
    log_format: Option<LogFormat>,
    /// Print JSON instead of tables (accounts, routes, rates, balances).
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the connector: ILP-over-HTTP on http.listen, until SIGINT or SIGTERM.
    Serve,
    /// Apply pending database migrations.
    Migrate,
    /// Manage accounts.
    #[command(subcommand)]
    Accounts(Box<AccountsCommand>),
    /// Manage static routes.
    #[command(subcommand)]
    Routes(RoutesCommand),
    /// Manage exchange rates.
    #[command(subcommand)]
    Rates(RatesCommand),
    /// Show every account's balance and holds (base and whole units).
    Balances {
        /// Redraw every --interval seconds until Ctrl-C, with settlements in flight.
        #[arg(long)]
        watch: bool,
        /// Seconds between redraws with --watch.
        #[arg(long, default_value_t = 2, value_parser = clap::value_parser!(u64).range(1..=3600))]
        interval: u64,
    },
    /// Pay a STREAM receiver (SPSP URL, payment pointer, or ILP address with --shared-secret)
    /// from one of our accounts, through the running node, and print what was delivered.
    Pay(Box<cli::PayArgs>),
    /// Round trips to an ILP address (echo protocol) through the running node, with times.
    Ping(Box<cli::PingArgs>),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the async runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        // stdout closed by its reader (`ilp-connector balances | head`): nothing left to say.
        Err(err)
            if err.chain().any(|cause| {
                cause
                    .downcast_ref::<std::io::Error>()
                    .is_some_and(|err| err.kind() == std::io::ErrorKind::BrokenPipe)
            }) =>
        {
            ExitCode::SUCCESS
        }
        Err(err) => {
            // One line: the error and its causes, joined.
            eprintln!("error: {}", format!("{err:#}").replace('\n', " "));
            ExitCode::FAILURE
        }
    }
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    let mut config = ConnectorConfig::load(cli.config.as_deref())?;
    if let Some(url) = cli.database_url {
        config.database.url = Some(url.into());
    }
    if let Some(format) = cli.log_format {
        config.log.format = format;
    }
    let out = Output { json: cli.json };
    match cli.command {
        Command::Serve => {
            runtime::telemetry::init_tracing(config.log.format)?;
            runtime::tls::init(&config.tls)?;
            let shutdown = runtime::shutdown::cancel_on_signal("stopping")
                .context("installing signal handlers")?;
            connector::node::serve(config, shutdown).await
        }
        Command::Migrate => {
            let conn = connect(&config).await?;
            let applied = schema::migrate::run_pending_migrations(conn)
                .await
                .context("applying migrations")?;
            if out.json {
                writeln!(
                    std::io::stdout(),
                    "{}",
                    serde_json::json!({ "applied": applied })
                )?;
            } else if applied.is_empty() {
                writeln!(std::io::stdout(), "database is up to date")?;
            } else {
                for version in applied {
                    writeln!(std::io::stdout(), "applied {version}")?;
                }
            }
            Ok(())
        }
        Command::Accounts(command) => {
            // Only for showing children's addresses: an unusable one shows none.
            let node = node_address(&config).ok().flatten();
            let mut conn = connect(&config).await?;
            cli::run_accounts(&mut conn, *command, node.as_ref(), out).await
        }
        Command::Routes(command) => {
            let mut conn = connect(&config).await?;
            cli::run_routes(&mut conn, command, out).await
        }
        Command::Rates(command) => {
            let mut conn = connect(&config).await?;
            cli::run_rates(&mut conn, command, out).await
        }
        Command::Balances { watch: false, .. } => {
            let mut conn = connect(&config).await?;
            cli::run_balances(&mut conn, out).await
        }
        Command::Balances {
            watch: true,
            interval,
        } => {
            let pool_config = config.database.pool_config("ilp-connector-cli")?;
            cli::watch_balances(&pool_config, std::time::Duration::from_secs(interval)).await
        }
        Command::Pay(args) => {
            runtime::tls::init(&config.tls)?;
            let mut conn = connect(&config).await?;
            cli::run_pay(&mut conn, *args, config.http.listen, out).await
        }
        Command::Ping(args) => {
            runtime::tls::init(&config.tls)?;
            let node = node_address(&config)?;
            let mut conn = connect(&config).await?;
            cli::run_ping(&mut conn, *args, node.as_ref(), config.http.listen, out).await
        }
    }
}

/// `node.ilp_address`, checked, if set.
fn node_address(config: &ConnectorConfig) -> anyhow::Result<Option<connector::packet::Address>> {
    config
        .node
        .ilp_address
        .as_deref()
        .map(connector::packet::Address::new)
        .transpose()
        .context("node.ilp_address")
}

async fn connect(config: &ConnectorConfig) -> anyhow::Result<diesel_async::AsyncPgConnection> {
    let pool_config = config.database.pool_config("ilp-connector-cli")?;
    schema::connect(&pool_config)
        .await
        .context("connecting to the database")
}
