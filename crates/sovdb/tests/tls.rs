//! TLS on the API: `sovdb serve` speaks HTTPS by default with a certificate from the
//! installation CA (published as `<data-dir>/ca.crt`), the CLI trusts it by itself on this
//! machine and through `--ca-file`/`SOVDB_CA_FILE` elsewhere, a short-lived certificate is
//! renewed under traffic, and plain HTTP needs `--insecure-http`.

use std::os::unix::fs::PermissionsExt as _;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use sovdb_pki::{Ca, CertRequest, CertUsage};
use sovdb_test_utils::cli::{ok, refused};
use sovdb_test_utils::server::TestServer;

const BIN: &str = env!("CARGO_BIN_EXE_sovdb");

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap()
}

/// The serial (hex) and end of validity of the certificate the server presented.
fn presented(resp: &reqwest::Response) -> (String, i64) {
    let info = resp.extensions().get::<reqwest::tls::TlsInfo>().expect("tls_info(true) on the client");
    let der = info.peer_certificate().expect("the server presents a certificate");
    let (_, cert) = x509_parser::parse_x509_certificate(der).unwrap();
    (cert.raw_serial_as_string(), cert.validity().not_after.timestamp())
}

/// `sovdb` on a machine that does not run the server: an empty data directory of its
/// own, the server and token given by the environment.
fn remote_cli(server: &TestServer, elsewhere: &Path, args: &[&str]) -> Command {
    let mut c = Command::new(BIN);
    c.env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("HOME", elsewhere)
        .env("SOVDB_DATA_DIR", elsewhere.join("data"))
        .env("SOVDB_SERVER", &server.url)
        .env("SOVDB_TOKEN", &server.token)
        .args(args);
    c
}

fn run(mut c: Command) -> (bool, String) {
    let out = c.output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stderr).into_owned())
}

/// A CA of someone else's, and a server certificate it signed for this machine.
fn foreign_ca(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf, std::path::PathBuf) {
    let ca = Ca::generate("someone else's CA").unwrap();
    let leaf = ca
        .issue(&CertRequest {
            common_name: "operator's certificate".into(),
            dns_names: vec!["localhost".into()],
            ip_addresses: vec!["127.0.0.1".parse().unwrap()],
            usage: CertUsage::Server,
            validity_days: 2,
        })
        .unwrap();
    let (ca_file, cert, key) = (dir.join("other-ca.crt"), dir.join("server.crt"), dir.join("server.key"));
    std::fs::write(&ca_file, ca.cert_pem()).unwrap();
    std::fs::write(&cert, &leaf.cert_pem).unwrap();
    std::fs::write(&key, &leaf.key_pem).unwrap();
    (ca_file, cert, key)
}

#[test]
fn the_default_server_speaks_https_with_a_certificate_from_the_installation_ca() {
    let mut server = TestServer::start(Path::new(BIN));
    assert!(server.url.starts_with("https://127.0.0.1:"), "{}", server.url);
    let mode = std::fs::metadata(server.ca_path()).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o644, "ca.crt is public");

    // A client that trusts only ca.crt verifies the certificate for 127.0.0.1.
    let client = server.http_client_builder().tls_info(true).build().unwrap();
    let rt = rt();
    let resp = rt.block_on(client.get(format!("{}/healthz", server.url)).send()).expect("HTTPS verifies");
    assert!(resp.status().is_success());
    let (serial, _) = presented(&resp);
    // ...by name too: localhost is in it.
    let by_name = server.url.replace("127.0.0.1", "localhost");
    rt.block_on(client.get(format!("{by_name}/healthz")).send()).expect("localhost is in the certificate");

    // Plain HTTP to it fails.
    let plain = server.url.replace("https://", "http://");
    assert!(rt.block_on(reqwest::Client::new().get(format!("{plain}/healthz")).send()).is_err());

    let mut c = server.cli();
    c.args(["location", "list", "--server", &plain, "--token", &server.token]);
    let (passed, err) = run(c);
    assert!(!passed && err.contains("try https://"), "{err}");

    // The CLI needs no flag on this machine.
    ok(&server, &["location", "list"]);

    // A restart serves the stored certificate (not yet due for renewal).
    assert!(server.stop().success());
    server.launch();
    let client = server.http_client_builder().tls_info(true).build().unwrap();
    let resp = rt.block_on(client.get(format!("{}/healthz", server.url)).send()).unwrap();
    assert_eq!(presented(&resp).0, serial, "a restart keeps the API certificate");
    let issued = sovdb_test_utils::cli::json(&server, &["audit", "list", "--target", "pki/api-cert/"]);
    assert_eq!(issued.as_array().unwrap().len(), 1, "{issued:#}");
    assert_eq!(issued[0]["action"], "pki.api-cert.issue");
    assert!(!server.log().contains("PRIVATE KEY"), "no key in the log");
}

#[test]
fn the_cli_trusts_a_ca_file_for_a_server_it_does_not_know_and_says_what_to_do_without_one() {
    let server = TestServer::start(Path::new(BIN));
    let elsewhere = tempfile::tempdir().unwrap();
    let ca = server.ca_path();
    let ca = ca.to_str().unwrap();

    let (passed, err) = run(remote_cli(&server, elsewhere.path(), &["location", "list"]));
    assert!(!passed);
    assert!(err.contains("pass --ca-file <data-dir>/ca.crt or set SOVDB_CA_FILE"), "{err}");

    let (passed, err) = run(remote_cli(&server, elsewhere.path(), &["location", "list", "--ca-file", ca]));
    assert!(passed, "{err}");
    let mut env = remote_cli(&server, elsewhere.path(), &["location", "list"]);
    env.env("SOVDB_CA_FILE", ca);
    let (passed, err) = run(env);
    assert!(passed, "{err}");

    // Another CA: refused, and the message says which CA was tried and what to do.
    let (other_ca, _, _) = foreign_ca(elsewhere.path());
    let mut wrong = remote_cli(&server, elsewhere.path(), &["location", "list"]);
    wrong.env("SOVDB_CA_FILE", &other_ca);
    let (passed, err) = run(wrong);
    assert!(!passed);
    assert!(err.contains("no CA this CLI trusts") && err.contains(other_ca.to_str().unwrap()), "{err}");
    assert!(err.contains("--ca-file") && !err.contains("panicked"), "{err}");
    assert_eq!(err.trim_end().lines().count(), 1, "{err}");
}

#[test]
fn insecure_http_serves_plain_http() {
    let mut server = TestServer::new(Path::new(BIN), None);
    server.add_args(&["--insecure-http"]);
    server.launch();
    assert!(server.url.starts_with("http://127.0.0.1:"), "{}", server.url);
    ok(&server, &["location", "list"]);
    let resp = rt().block_on(reqwest::Client::new().get(format!("{}/healthz", server.url)).send()).unwrap();
    assert!(resp.status().is_success());
    assert!(server.log().contains("serving plain HTTP (--insecure-http)"), "a warning is logged");
}

#[test]
fn an_operators_certificate_and_key_are_served() {
    let files = tempfile::tempdir().unwrap();
    let (other_ca, cert, key) = foreign_ca(files.path());
    let mut server = TestServer::new(Path::new(BIN), None);
    server.add_args(&["--tls-cert", cert.to_str().unwrap(), "--tls-key", key.to_str().unwrap()]);
    server.launch();
    assert!(server.url.starts_with("https://"));

    let rt = rt();
    let trusting = |ca: &Path| {
        let pem = std::fs::read(ca).unwrap();
        reqwest::Client::builder()
            .use_rustls_tls()
            .tls_built_in_root_certs(false)
            .add_root_certificate(reqwest::Certificate::from_pem(&pem).unwrap())
            .build()
            .unwrap()
    };
    let url = format!("{}/healthz", server.url);
    rt.block_on(trusting(&other_ca).get(&url).send()).expect("the operator's certificate is served");
    assert!(rt.block_on(trusting(&server.ca_path()).get(&url).send()).is_err(), "not one from the installation CA");

    // The CLI here trusts the installation CA by itself, so it needs the operator's CA.
    refused(&server, &["location", "list"], "--ca-file");
    ok(&server, &["location", "list", "--ca-file", other_ca.to_str().unwrap()]);

    // A key that is not the certificate's is refused before anything starts.
    let second = files.path().join("second");
    std::fs::create_dir(&second).unwrap();
    let (_, _, other_key) = foreign_ca(&second);
    let out = server
        .cli()
        .args(["serve", "--listen", "127.0.0.1:0", "--tls-cert", cert.to_str().unwrap()])
        .args(["--tls-key", other_key.to_str().unwrap()])
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success() && err.contains("do not fit together"), "{err}");
}

#[test]
fn a_short_lived_certificate_is_renewed_under_continuous_requests() {
    let mut server = TestServer::new(Path::new(BIN), None);
    // Renewed when a third (4 s) is left, checked every 1.2 s.
    server.set_env("SOVDB_API_CERT_VALIDITY_SECS", Some("12"));
    server.launch();
    let rt = rt();
    // One client keeps its connection; a new client per request makes a full handshake
    // (no session to resume) and so sees each certificate the server presents.
    let kept = server.http_client();
    let fresh = || server.http_client_builder().tls_info(true).build().unwrap();
    let (health, whoami) = (format!("{}/healthz", server.url), format!("{}/api/v1/whoami", server.url));

    let mut seen: Vec<(String, i64)> = Vec::new();
    let mut requests = 0;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(22) {
        let resp = rt.block_on(fresh().get(&health).send()).unwrap_or_else(|e| {
            panic!("request {requests} failed: {e:?}\n{}", sovdb_test_utils::tail(&server.log_path(), 30))
        });
        assert!(resp.status().is_success());
        let cert = presented(&resp);
        if seen.last() != Some(&cert) {
            seen.push(cert);
        }
        let resp = rt.block_on(kept.get(&whoami).bearer_auth(&server.token).send()).expect("the kept connection");
        assert!(resp.status().is_success(), "{}", resp.status());
        requests += 2;
        std::thread::sleep(Duration::from_millis(50));
    }
    assert!(seen.len() >= 3, "at least two renewals in 22 s of a 12 s certificate: {seen:?}");
    for pair in seen.windows(2) {
        assert_ne!(pair[0].0, pair[1].0, "a new serial");
        assert!(pair[1].1 > pair[0].1, "a later end of validity: {seen:?}");
    }
    assert!(requests > 100, "{requests}");
    ok(&server, &["location", "list"]);
}

#[test]
fn a_tls_name_is_in_the_certificate() {
    let mut server = TestServer::new(Path::new(BIN), None);
    server.add_args(&["--tls-name", "sovdb.test.internal"]);
    server.launch();
    let addr: std::net::SocketAddr = server.url.trim_start_matches("https://").parse().unwrap();
    let rt = rt();
    let by_name = |name: &str| {
        let client = server.http_client_builder().resolve(name, addr).build().unwrap();
        rt.block_on(client.get(format!("https://{name}:{}/healthz", addr.port())).send())
    };
    by_name("sovdb.test.internal").expect("the --tls-name is in the certificate");
    assert!(by_name("other.test.internal").is_err(), "a name not given is not");
}
