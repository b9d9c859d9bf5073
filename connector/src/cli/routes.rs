//! `ilp-connector routes ...`: the static routes.

use anyhow::Context;
use clap::Subcommand;
use diesel_async::AsyncPgConnection;
use schema::DbError;
use schema::models::route;
use serde_json::json;

use super::{Output, db_refusal, find, parse_address};

/// `ilp-connector routes ...`
#[derive(Debug, Subcommand)]
pub enum RoutesCommand {
    /// Route destinations under PREFIX to USERNAME's account (replaces an existing route).
    Add {
        /// ILP address prefix, matched at segment boundaries.
        prefix: String,
        /// Username of the next hop.
        username: String,
    },
    /// List static routes.
    List,
    /// Remove a static route.
    Remove {
        /// The prefix, as added.
        prefix: String,
    },
}

/// Runs a `routes` command.
pub async fn run_routes(
    conn: &mut AsyncPgConnection,
    command: RoutesCommand,
    out: Output,
) -> anyhow::Result<()> {
    match command {
        RoutesCommand::Add { prefix, username } => {
            parse_address_prefix(&prefix)?;
            let account = find(conn, &username).await?;
            route::upsert_route(conn, &prefix, account.id)
                .await
                .map_err(|err| db_refusal(err, "route"))?;
            if out.json {
                say!(
                    "{}",
                    json!({ "prefix": prefix, "username": account.username })
                );
            } else {
                say!("route {prefix} -> {}", account.username);
            }
        }
        RoutesCommand::List => {
            let routes = route::list_routes(conn).await.context("listing routes")?;
            if out.json {
                let list: Vec<_> = routes
                    .iter()
                    .map(|r| json!({ "prefix": r.prefix, "username": r.username }))
                    .collect();
                say!("{}", serde_json::Value::Array(list));
            } else {
                say!("{:<50} USERNAME", "PREFIX");
                for r in &routes {
                    say!("{:<50} {}", r.prefix, r.username);
                }
            }
        }
        RoutesCommand::Remove { prefix } => {
            route::delete_route(conn, &prefix)
                .await
                .map_err(|err| match err {
                    DbError::NotFound => anyhow::anyhow!("no route with prefix {prefix:?}"),
                    other => anyhow::Error::new(other).context("removing the route"),
                })?;
            if out.json {
                say!("{}", json!({ "removed": prefix }));
            } else {
                say!("removed route {prefix}");
            }
        }
    }
    Ok(())
}

/// A route prefix is an address, or a bare allocation scheme such as `g` or `test`.
fn parse_address_prefix(prefix: &str) -> anyhow::Result<()> {
    const SCHEMES: [&str; 10] = [
        "g", "private", "example", "peer", "self", "test", "test1", "test2", "test3", "local",
    ];
    if SCHEMES.contains(&prefix) {
        return Ok(());
    }
    parse_address(prefix).map(|_| ())
}
