//! The store conformance suite on SQLite, plus what only SQLite files can get wrong.

use std::sync::Mutex;

use sovdb_store::{conformance, open, OpenError};

#[tokio::test]
async fn sqlite_passes_the_conformance_suite() {
    let dir = tempfile::tempdir().unwrap();
    let root = dir.path().to_path_buf();
    let counter = Mutex::new(0);
    conformance::run(|name| {
        let mut n = counter.lock().unwrap();
        *n += 1;
        let url = format!("sqlite://{}/{n}-{name}.db", root.display());
        async move { url }
    })
    .await;
}

#[tokio::test]
async fn a_file_that_is_not_a_database_is_refused_and_left_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sovdb.db");
    let garbage = b"this is not a database, it is a shopping list\n".repeat(200);
    std::fs::write(&path, &garbage).unwrap();
    let err = open(&format!("sqlite://{}", path.display())).await.err().expect("opened garbage");
    assert!(matches!(err, OpenError::CorruptFile { .. }), "{err:?}");
    assert!(err.to_string().contains("restore it from a backup"), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), garbage, "the file was changed");
}

#[tokio::test]
async fn a_bad_url_is_named() {
    for url in ["mysql://x", "sqlite://", "nonsense"] {
        let err = open(url).await.err().expect("opened a bad URL");
        assert!(matches!(err, OpenError::BadUrl(_)), "{url}: {err:?}");
    }
}
