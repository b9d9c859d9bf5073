//! Every migration applies and reverts cleanly.

use diesel::QueryableByName;
use diesel_async::RunQueryDsl;
use schema::migrate::{MIGRATIONS, revert_all_migrations, run_pending_migrations};
use schema::test_db::TestDb;

#[derive(QueryableByName)]
struct Name {
    #[diesel(sql_type = diesel::sql_types::Text)]
    name: String,
}

async fn user_relations(conn: &mut diesel_async::AsyncPgConnection) -> Vec<String> {
    let rows: Vec<Name> = diesel::sql_query(
        "SELECT c.relname::text AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
         WHERE n.nspname = 'public' AND c.relkind IN ('r', 'v', 'S') \
         AND c.relname <> '__diesel_schema_migrations' ORDER BY 1",
    )
    .load(conn)
    .await
    .expect("listing relations");
    rows.into_iter().map(|r| r.name).collect()
}

#[tokio::test]
async fn migrations_revert_to_nothing_and_apply_again() {
    // Proves down.sql undoes up.sql for every migration, and that up runs again after it.
    use diesel::migration::MigrationSource;
    let db = TestDb::new().await;
    let total = MigrationSource::<diesel::pg::Pg>::migrations(&MIGRATIONS)
        .unwrap()
        .len();
    let before = user_relations(&mut db.connect().await).await;
    assert!(
        before.contains(&"accounts".to_owned())
            && before.contains(&"dashboard_balances".to_owned())
    );

    let reverted = revert_all_migrations(db.connect().await).await.unwrap();
    assert_eq!(reverted.len(), total);
    assert_eq!(
        user_relations(&mut db.connect().await).await,
        Vec::<String>::new()
    );

    let applied = run_pending_migrations(db.connect().await).await.unwrap();
    assert_eq!(applied.len(), total);
    assert_eq!(user_relations(&mut db.connect().await).await, before);
}
