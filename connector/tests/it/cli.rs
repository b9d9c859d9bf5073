//! The `ilp-connector` CLI, run as a real process against a fresh database.

use std::process::{Command, Output};

use schema::test_db::TestDb;
use serde_json::Value;

struct Cli<'a> {
    db: &'a TestDb,
}

impl Cli<'_> {
    fn run(&self, args: &[&str]) -> Output {
        Command::new(env!("CARGO_BIN_EXE_ilp-connector"))
            .args(args)
            .env("DATABASE_URL", self.db.url())
            .env_remove("ILP_CONNECTOR_CONFIG")
            .output()
            .expect("running ilp-connector")
    }

    /// Runs a command that must succeed, and parses its `--json` output.
    fn json(&self, args: &[&str]) -> Value {
        let mut all = vec!["--json"];
        all.extend_from_slice(args);
        let out = self.run(&all);
        assert!(
            out.status.success(),
            "{args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap_or_else(|err| {
            panic!(
                "{args:?} printed no JSON ({err}): {}",
                String::from_utf8_lossy(&out.stdout)
            )
        })
    }

    /// Runs a command that must fail with a one-line reason containing `reason`.
    fn fails(&self, args: &[&str], reason: &str) {
        let out = self.run(args);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!out.status.success(), "{args:?} succeeded");
        assert_eq!(
            stderr.trim_end().lines().count(),
            1,
            "{args:?}: not one line: {stderr}"
        );
        assert!(
            stderr.contains(reason),
            "{args:?}: {stderr:?} does not mention {reason:?}"
        );
    }

    fn accounts(&self) -> Value {
        self.json(&["accounts", "list"])
    }
}

const ALICE: &[&str] = &[
    "accounts",
    "add",
    "alice",
    "--asset-code",
    "USD",
    "--asset-scale",
    "2",
    "--relation",
    "child",
];

#[tokio::test]
async fn accounts_round_trip_through_add_list_show_update_remove() {
    // Proves every accounts subcommand reads back what the previous one wrote.
    let db = TestDb::new().await;
    let cli = Cli { db: &db };

    let mut add = ALICE.to_vec();
    add.extend_from_slice(&[
        "--credit-limit",
        "1000",
        "--max-packet-amount",
        "500",
        "--settle-threshold",
        "800",
    ]);
    add.extend_from_slice(&[
        "--outgoing-url",
        "http://127.0.0.1:9/ilp",
        "--outgoing-token",
        "secret",
    ]);
    let added = cli.json(&add);
    let token = added["incoming_token"]
        .as_str()
        .expect("a generated token is printed once");
    assert_eq!(token.len(), 64);
    assert_eq!(added["credit_limit"], 1000);
    assert_eq!(added["outgoing_token_set"], true);
    assert!(
        added.get("outgoing_token").is_none(),
        "secrets are never printed"
    );

    let list = cli.accounts();
    assert_eq!(list.as_array().map(Vec::len), Some(1));
    assert_eq!(list[0]["username"], "alice");
    assert_eq!(list[0]["max_packet_amount"], 500);
    assert!(
        list[0].get("incoming_token").is_none(),
        "the token is shown only once"
    );

    let shown = cli.json(&["accounts", "show", "ALICE"]);
    assert_eq!(shown["settle_threshold"], 800);
    assert_eq!(shown["asset_code"], "USD");

    let updated = cli.json(&[
        "accounts",
        "update",
        "alice",
        "--max-packet-amount",
        "",
        "--credit-limit",
        "",
        "--settle-to",
        "100",
    ]);
    assert_eq!(updated["max_packet_amount"], Value::Null);
    assert_eq!(updated["credit_limit"], Value::Null);
    assert_eq!(updated["settle_to"], 100);
    assert_eq!(cli.json(&["accounts", "show", "alice"])["settle_to"], 100);

    // Only the hash is stored, and it is the SHA-256 of the printed token.
    let conn = &mut db.connect().await;
    let stored = schema::models::account::find_account_by_username(conn, "alice")
        .await
        .unwrap();
    assert_eq!(
        stored.incoming_token_hash,
        connector::cli::hash_token(token).to_vec()
    );

    let removed = cli.json(&["accounts", "remove", "alice"]);
    assert_eq!(removed["removed"], "alice");
    assert_eq!(cli.accounts(), Value::Array(vec![]));
    cli.fails(&["accounts", "show", "alice"], "no account named");
    // The name is free again once removed.
    cli.json(ALICE);
}

#[tokio::test]
async fn routes_round_trip_through_add_list_remove() {
    // Proves routes are stored, listed with their next hop, and removed.
    let db = TestDb::new().await;
    let cli = Cli { db: &db };
    cli.json(ALICE);
    cli.json(&["routes", "add", "g.bob", "alice"]);
    cli.json(&["routes", "add", "test", "alice"]);
    let routes = cli.json(&["routes", "list"]);
    assert_eq!(
        routes,
        serde_json::json!([{"prefix": "g.bob", "username": "alice"}, {"prefix": "test", "username": "alice"}])
    );
    cli.json(&["routes", "remove", "g.bob"]);
    assert_eq!(
        cli.json(&["routes", "list"]),
        serde_json::json!([{"prefix": "test", "username": "alice"}])
    );
    cli.fails(&["routes", "remove", "g.bob"], "no route with prefix");
}

#[tokio::test]
async fn bad_input_exits_non_zero_and_changes_nothing() {
    // Proves each kind of bad input gets a one-line reason and leaves the database as it was.
    let db = TestDb::new().await;
    let cli = Cli { db: &db };
    cli.json(ALICE);
    let before = (
        cli.accounts(),
        cli.json(&["routes", "list"]),
        cli.json(&["balances"]),
    );

    // `accounts add USERNAME` for a USD/2 peer, with `extra` arguments after.
    let add = |username: &'static str,
               asset: &'static str,
               relation: &'static str,
               extra: &[&'static str]| {
        let mut args = vec![
            "accounts",
            "add",
            username,
            "--asset-code",
            asset,
            "--asset-scale",
            "2",
            "--relation",
            relation,
        ];
        args.extend_from_slice(extra);
        args
    };
    let cases: [(Vec<&str>, &str); 13] = [
        (add("bob", "USD/x", "peer", &[]), "asset code"),
        (
            add("bob", "USD", "peer", &["--ilp-address", "g..bob"]),
            "not a valid ILP address",
        ),
        (add("bob", "USD", "boss", &[]), "relation"),
        (add("b.b", "USD", "peer", &[]), "username"),
        (
            add("bob", "USD", "peer", &["--credit-limit=-5"]),
            "credit-limit",
        ),
        (
            add("bob", "USD", "peer", &["--outgoing-url", "ftp://x"]),
            "outgoing URL",
        ),
        (
            add(
                "bob",
                "USD",
                "peer",
                &["--settle-threshold", "10", "--settle-to", "20"],
            ),
            "settle-to",
        ),
        (add("ALICE", "USD", "peer", &[]), "already exists"),
        (
            vec!["accounts", "update", "nobody", "--settle-to", "1"],
            "no account named",
        ),
        (vec!["accounts", "update", "alice"], "nothing to update"),
        (vec!["accounts", "remove", "nobody"], "no account named"),
        (vec!["routes", "add", "g.x", "nobody"], "no account named"),
        (
            vec!["routes", "add", "g..x", "alice"],
            "not a valid ILP address",
        ),
    ];
    for (args, reason) in &cases {
        cli.fails(args, reason);
    }

    assert_eq!(
        (
            cli.accounts(),
            cli.json(&["routes", "list"]),
            cli.json(&["balances"])
        ),
        before
    );
}

#[tokio::test]
async fn account_with_a_balance_cannot_be_removed() {
    // Proves removal is refused while money is owed either way, and the account stays.
    use diesel::prelude::*;
    use diesel_async::RunQueryDsl;
    let db = TestDb::new().await;
    let cli = Cli { db: &db };
    let id = cli.json(ALICE)["id"].as_i64().unwrap();
    let conn = &mut db.connect().await;
    diesel::update(schema::schema::balances::table.find(id))
        .set(schema::schema::balances::balance.eq(5))
        .execute(conn)
        .await
        .unwrap();
    cli.fails(&["accounts", "remove", "alice"], "settle it to zero first");
    assert_eq!(cli.accounts()[0]["username"], "alice");
}

#[test]
fn missing_or_unreachable_database_is_a_one_line_error() {
    // Proves the CLI says what is wrong with the database instead of panicking.
    let run = |url: Option<&str>| {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_ilp-connector"));
        cmd.args(["accounts", "list"])
            .env_remove("DATABASE_URL")
            .env_remove("ILP_CONNECTOR_CONFIG");
        if let Some(url) = url {
            cmd.env("DATABASE_URL", url);
        }
        cmd.output().expect("running ilp-connector")
    };
    let missing = run(None);
    assert!(!missing.status.success());
    assert!(String::from_utf8_lossy(&missing.stderr).contains("database.url is not set"));
    // Port 1 on loopback: nothing listens, so the connection is refused at once.
    let unreachable = run(Some("postgres://ilp:ilp@127.0.0.1:1/ilp"));
    let stderr = String::from_utf8_lossy(&unreachable.stderr);
    assert!(!unreachable.status.success());
    assert_eq!(stderr.trim_end().lines().count(), 1, "{stderr}");
    assert!(stderr.contains("database unavailable"), "{stderr}");
}

#[test]
fn bad_config_names_the_key() {
    // Proves a bad config file stops the binary with the offending key in the message.
    let dir = std::env::temp_dir().join(format!("ilp-cfg-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("bad.toml");
    std::fs::write(&file, "[http]\nlisten = \"not an address\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ilp-connector"))
        .args(["--config", file.to_str().unwrap(), "accounts", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("http.listen"), "{stderr}");
    std::fs::write(&file, "[node]\nilp_adress = \"g.x\"\n").unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ilp-connector"))
        .args(["--config", file.to_str().unwrap(), "accounts", "list"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("ilp_adress"), "{stderr}");
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn config_file_named_by_ilp_connector_config_is_read() {
    // Proves ILP_CONNECTOR_CONFIG names the file and is not mistaken for a config key.
    let db = TestDb::new().await;
    let dir = std::env::temp_dir().join(format!("ilp-cfg-env-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("connector.toml");
    std::fs::write(&file, format!("[database]\nurl = \"{}\"\n", db.url())).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_ilp-connector"))
        .args(["--json", "accounts", "list"])
        .env_remove("DATABASE_URL")
        .env("ILP_CONNECTOR_CONFIG", &file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        serde_json::from_slice::<Value>(&out.stdout).unwrap(),
        Value::Array(vec![])
    );
    std::fs::remove_dir_all(&dir).ok();
}

#[tokio::test]
async fn output_cut_short_by_its_reader_ends_quietly() {
    // Proves `ilp-connector balances | head -n 1` exits 0 without a panic message when the
    // reader closes the pipe: the output is larger than a pipe buffer, so writing blocks
    // until the reader is gone and then fails with a broken pipe.
    let db = TestDb::new().await;
    let mut conn = db.connect().await;
    diesel_async::RunQueryDsl::execute(
        diesel::sql_query(
            "WITH a AS (INSERT INTO accounts (username, asset_code, asset_scale, relation, incoming_token_hash) \
             SELECT 'customer' || g, 'USD', 2, 'child', sha256(('t' || g)::bytea) FROM generate_series(1, 2000) g RETURNING id) \
             INSERT INTO balances (account_id) SELECT id FROM a",
        ),
        &mut conn,
    )
    .await
    .expect("adding 2,000 accounts");
    let mut child = Command::new(env!("CARGO_BIN_EXE_ilp-connector"))
        .args(["balances"])
        .env("DATABASE_URL", db.url())
        .env_remove("ILP_CONNECTOR_CONFIG")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("running ilp-connector");
    let mut stdout = child.stdout.take().expect("piped stdout");
    let mut first = [0u8; 16];
    std::io::Read::read_exact(&mut stdout, &mut first).expect("the start of the table");
    drop(stdout);
    let out = child.wait_with_output().expect("waiting for ilp-connector");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "exit {:?}: {stderr}", out.status);
    assert!(!stderr.contains("panicked"), "{stderr}");
}
