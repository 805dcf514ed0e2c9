//! The store conformance suite on a real PostgreSQL server, started for this test in a
//! temporary directory, on a free port, as an unprivileged user.

use sovdb_store::{conformance, open, OpenError};
use sovdb_test_utils::postgres::TestPostgres;

#[tokio::test]
async fn postgres_passes_the_conformance_suite() {
    let pg = TestPostgres::start().await;
    conformance::run(|name| {
        let pg = &pg;
        async move { pg.create_database(name).await }
    })
    .await;
}

#[tokio::test]
async fn an_unreachable_server_is_named_without_its_password() {
    let port = sovdb_test_utils::free_port();
    let url = format!("postgres://sovdb:s3cret-pw@127.0.0.1:{port}/sovdb");
    let err = open(&url).await.err().expect("connected to nothing");
    assert!(matches!(err, OpenError::Unreachable { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(!msg.contains("s3cret-pw"), "password leaked: {msg}");
    assert!(msg.contains(&format!("127.0.0.1:{port}")), "{msg}");
}
