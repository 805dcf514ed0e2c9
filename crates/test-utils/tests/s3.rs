//! The S3 fixture is the real thing pgBackRest needs: pgBackRest lists its bucket over
//! HTTPS, trusting only the fixture's CA, with the fixture's keys; other keys are refused;
//! two fixtures run side by side; nothing listens once one is dropped.

use std::net::TcpStream;
use std::process::{Command, Output};

use sovdb_test_utils::s3::S3Server;

/// `pgbackrest repo-ls` of the bucket, signed with `secret`.
fn repo_ls(s3: &S3Server, secret: &str) -> Output {
    Command::new("pgbackrest")
        .env_clear()
        .env("PATH", "/usr/bin:/bin")
        .env("PGBACKREST_REPO1_S3_KEY", s3.access_key())
        .env("PGBACKREST_REPO1_S3_KEY_SECRET", secret)
        .args(["--no-config", "--io-timeout=2", "--repo1-type=s3", "--repo1-path=/fixture"])
        .args(["--repo1-s3-endpoint=127.0.0.1", &format!("--repo1-storage-port={}", s3.port())])
        .args([&format!("--repo1-s3-bucket={}", s3.bucket()), &format!("--repo1-s3-region={}", s3.region())])
        .arg("--repo1-s3-uri-style=path")
        .arg(format!("--repo1-storage-ca-file={}", s3.ca_file().display()))
        .args(["--log-level-console=off", "--log-level-stderr=error", "--log-level-file=off", "--output=json"])
        .arg("repo-ls")
        .output()
        .expect("run pgbackrest")
}

#[test]
fn pgbackrest_lists_the_bucket_over_https_with_the_fixtures_ca_and_keys() {
    let a = S3Server::start();
    let b = S3Server::start();
    assert_ne!(a.port(), b.port());
    assert!(a.url().starts_with("https://127.0.0.1:"), "{}", a.url());
    assert!(a.ca_pem().starts_with("-----BEGIN CERTIFICATE-----"));
    assert_ne!(a.ca_pem(), b.ca_pem(), "a CA of its own");
    assert!(a.bucket_dir().is_dir());

    for s3 in [&a, &b] {
        let out = repo_ls(s3, s3.secret_key());
        let said = String::from_utf8_lossy(&out.stderr);
        assert!(out.status.success(), "{}: {said}", out.status);
        assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), r#"{".":{"type":"path"}}"#);
    }
    // Another fixture's secret: 403, pgBackRest's error 39.
    let out = repo_ls(&a, b.secret_key());
    assert_eq!(out.status.code(), Some(39), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("403"));

    let port = a.port();
    drop(a);
    assert!(TcpStream::connect(("127.0.0.1", port)).is_err(), "nothing listens after drop");
}
