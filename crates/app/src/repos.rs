//! Backup repositories of the caller's project: where its clusters archive WAL and keep
//! backups (pgBackRest repositories). Any caller with access to the project may create,
//! read and delete them.
//!
//! A `posix` repository is a directory on one host of its location. Creating one prepares
//! it through the host's agent first (pgBackRest installed; the directory and its parents
//! created, owned by the database user, mode 0750; refused when it holds files), and only
//! then writes the record: a refused or failed create leaves nothing in the store. An `s3`
//! repository is a prefix in a bucket of S3-compatible storage. Creating one first checks,
//! through the agent of a ready host of the location, that pgBackRest can use it: the
//! endpoint answers over HTTPS with a certificate it trusts, the keys are accepted, the
//! bucket exists. A storage that can't be used is refused with what to fix, before anything
//! is written; the keys reach pgBackRest in its environment, never in a file or a command
//! line.
//!
//! What is persisted: the record (`RepoRecord`) and, under the owner `repo/<id>`, the
//! secrets, sealed with the master key: `cipher-pass` (generated when the repository is
//! encrypted) and for s3 `s3-key` and `s3-key-secret`. Secrets are never returned, logged,
//! put in an error or audited. A create (record, secrets, audit record) and a delete
//! (record, secrets, audit record) are one transaction each. A delete never touches the
//! repository's files.

use std::collections::BTreeMap;
use std::time::Duration;

use rand::distributions::{Alphanumeric, DistString};
use sovdb_agent::proto::{EnsurePackagesRequest, RemoveRequest, RunCommandRequest, WriteFileRequest};
use sovdb_postgres::backup::{self as br, RepoTarget, S3CheckFailure};
use sovdb_store::{HostRecord, RepoRecord, RepoSpec, StoreError, Tx};
use sovdb_types::*;

use crate::rbac::Action;
use crate::workflows::pg;
use crate::{validate, App, AppError, Ctx, Result};

/// The names of a repository's secrets.
pub(crate) const CIPHER_PASS: &str = "cipher-pass";
pub(crate) const S3_KEY: &str = "s3-key";
pub(crate) const S3_KEY_SECRET: &str = "s3-key-secret";

/// The prefix in the bucket of an s3 repository unless told otherwise.
const DEFAULT_S3_PATH: &str = "/sovdb";
/// The length of a generated cipher passphrase (letters and digits: about 380 bits).
const CIPHER_PASS_LEN: usize = 64;

/// The owner of a repository's secrets in the store.
pub(crate) fn owner(id: RepoId) -> String {
    format!("repo/{id}")
}

/// The API view of a stored repository; `clusters` are the names of the clusters that use it.
pub(crate) fn repo_view(record: RepoRecord, project: &str, clusters: Vec<String>) -> Repo {
    Repo {
        id: record.id,
        name: record.name,
        project: project.to_string(),
        location: record.location,
        kind: record.kind,
        path: record.spec.path,
        host: record.host,
        endpoint: record.spec.endpoint,
        bucket: record.spec.bucket,
        region: record.spec.region,
        uri_style: record.spec.uri_style,
        encrypted: record.encrypted,
        default: record.is_default,
        clusters,
        created_at: record.created_at,
    }
}

/// The audited form of a create: the S3 keys replaced by `<redacted>`.
fn audit_params(req: &RepoCreate) -> serde_json::Value {
    let mut v = serde_json::to_value(req).expect("serialise");
    if let Some(o) = v.as_object_mut() {
        for key in ["access_key_id", "secret_access_key"] {
            if o.get(key).is_some_and(|v| !v.is_null()) {
                o.insert(key.into(), "<redacted>".into());
            }
        }
    }
    v
}

/// How long the S3 check may run on the host before the agent kills it: far beyond what
/// pgBackRest takes with its short I/O timeout, so only a hung check meets it.
const S3_CHECK_TIMEOUT: Duration = Duration::from_secs(60);

/// Where a create is prepared or checked: a posix repository's host, or the host an s3
/// repository is checked from.
enum Via {
    Posix(HostRecord),
    S3(HostRecord),
}

/// What a create checked, before anything is written.
struct Checked {
    kind: RepoType,
    spec: RepoSpec,
    encrypted: bool,
    /// The secrets to store, by name.
    secrets: Vec<(&'static str, String)>,
}

impl App {
    pub async fn repo_create(&self, ctx: &Ctx, req: RepoCreate) -> Result<Repo> {
        ctx.require(Action::RepoCreate)?;
        validate::dns_label("repository name", &req.name)?;
        let mut checked = check(&req)?;
        // Sealing needs the PKI: find out now, not after the host was changed.
        let pki = self.pki()?;

        let (location, host) = {
            let mut tx = self.store.read().await?;
            let location = match &req.location {
                Some(l) => l.clone(),
                None => default_location(tx.as_mut()).await?,
            };
            let location = tx.location_get(&location).await?.ok_or_else(|| {
                AppError::Invalid(format!(
                    "location {location:?} does not exist; pick one from `sovdb location list` (--location)"
                ))
            })?;
            if tx.repo_get(ctx.project.id, &req.name).await?.is_some() {
                return Err(taken(&req.name, &ctx.project.name));
            }
            let host = match checked.kind {
                RepoType::Posix => {
                    let host = posix_host(tx.as_mut(), &location, req.host.as_deref()).await?;
                    check_overlap(tx.as_mut(), ctx.project.id, &host, &checked.spec.path).await?;
                    Via::Posix(host)
                }
                RepoType::S3 => Via::S3(checking_host(tx.as_mut(), &location).await?),
            };
            (location, host)
        };

        // Crash safety: the directory is prepared before anything is written, and that
        // is idempotent (an empty directory is accepted), so a create that fails or dies
        // after this point leaves at most an empty directory that a retry accepts. The S3
        // check writes only the endpoint's CA certificate and removes it again: a crash in
        // between leaves that file behind, and it is public.
        let host = match host {
            Via::Posix(host) => {
                self.prepare_dir(&host, &checked.spec.path).await?;
                Some(host)
            }
            Via::S3(on) => {
                let key = |name| checked.secrets.iter().find(|(n, _)| *n == name).map(|(_, v)| v.as_str());
                let (Some(key), Some(secret)) = (key(S3_KEY), key(S3_KEY_SECRET)) else {
                    return Err(AppError::Internal(anyhow::anyhow!("the checked s3 request lost its keys")));
                };
                self.check_s3(&on, &checked.spec, key, secret).await?;
                None
            }
        };

        let id = RepoId::new();
        if checked.encrypted {
            checked.secrets.push((CIPHER_PASS, Alphanumeric.sample_string(&mut rand::thread_rng(), CIPHER_PASS_LEN)));
        }
        let record = RepoRecord {
            id,
            project_id: ctx.project.id,
            name: req.name.clone(),
            location_id: location.id,
            location: location.name.clone(),
            host_id: host.as_ref().map(|h| h.host.id),
            host: host.as_ref().map(|h| h.host.name.clone()),
            kind: checked.kind,
            spec: checked.spec,
            encrypted: checked.encrypted,
            is_default: req.default,
            created_at: crate::now(),
        };
        let mut tx = self.store.write().await?;
        let previous_default =
            if req.default { tx.repo_default(ctx.project.id, location.id).await?.map(|r| r.name) } else { None };
        match tx.repo_create(&record).await {
            Err(StoreError::Conflict(_)) => {
                // The name was taken meanwhile, or (on PostgreSQL, whose writers don't
                // queue) another create made itself the default at the same time.
                drop(tx);
                let mut tx = self.store.read().await?;
                return Err(match tx.repo_get(ctx.project.id, &req.name).await? {
                    Some(_) => taken(&req.name, &ctx.project.name),
                    None => AppError::Conflict(format!(
                        "another repository became the default of location {:?} at the same time; try again",
                        location.name
                    )),
                });
            }
            other => other?,
        }
        let owner = owner(id);
        for (name, value) in &checked.secrets {
            let sealed = pki.seal(value.as_bytes(), &pg::aad(&owner, name));
            tx.secret_put(&owner, name, &sealed, record.created_at).await?;
        }
        let mut params = audit_params(&req);
        params["id"] = id.to_string().into();
        params["location"] = location.name.clone().into();
        params["host"] = record.host.clone().into();
        params["previous_default"] = previous_default.into();
        tx.audit_append(&ctx.audit("repo.create", format!("repo/{}", req.name), params)).await?;
        tx.commit().await?;
        Ok(repo_view(record, &ctx.project.name, Vec::new()))
    }

    pub async fn repo_list(&self, ctx: &Ctx, page: &PageParams) -> Result<Page<Repo>> {
        ctx.require(Action::RepoRead)?;
        let page = page.resolve().map_err(|e| AppError::Invalid(e.to_string()))?;
        let mut tx = self.store.read().await?;
        let page = tx.repo_list(ctx.project.id, &page).await?;
        let mut users = users_by_repo(tx.as_mut(), ctx.project.id).await?;
        let items = page
            .items
            .into_iter()
            .map(|r| {
                let clusters = users.remove(&r.id).unwrap_or_default();
                repo_view(r, &ctx.project.name, clusters)
            })
            .collect();
        Ok(Page { items, next_page_token: page.next_page_token })
    }

    pub async fn repo_get(&self, ctx: &Ctx, name: &str) -> Result<Repo> {
        ctx.require(Action::RepoRead)?;
        let mut tx = self.store.read().await?;
        let record = tx.repo_get(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("repository", name))?;
        let clusters = users_by_repo(tx.as_mut(), ctx.project.id).await?.remove(&record.id).unwrap_or_default();
        Ok(repo_view(record, &ctx.project.name, clusters))
    }

    /// Forgets the repository and its secrets; refused while a cluster uses it. Its files
    /// stay where they are.
    pub async fn repo_delete(&self, ctx: &Ctx, name: &str) -> Result<()> {
        ctx.require(Action::RepoDelete)?;
        let mut tx = self.store.write().await?;
        let record = tx.repo_get(ctx.project.id, name).await?.ok_or_else(|| AppError::not_found("repository", name))?;
        let clusters = users_by_repo(tx.as_mut(), ctx.project.id).await?.remove(&record.id).unwrap_or_default();
        if !clusters.is_empty() {
            return Err(AppError::Conflict(format!(
                "repository {name:?} is used by cluster(s) {}; delete them, or move them to another repository, first",
                clusters.join(", ")
            )));
        }
        let kept = tx.retained_count_in_repo(record.id).await?;
        if kept > 0 {
            return Err(AppError::Conflict(format!(
                "repository {name:?} keeps the backups of {kept} deleted cluster(s); see `sovdb backup retained`, \
                 and delete them with `sovdb backup purge NAME` first"
            )));
        }
        tx.repo_delete(record.id).await?;
        tx.secret_delete(&owner(record.id)).await?;
        tx.audit_append(&ctx.audit(
            "repo.delete",
            format!("repo/{name}"),
            serde_json::json!({"id": record.id.to_string(), "files_kept": where_files_are(&record)}),
        ))
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Checks that pgBackRest on `host` can use the S3 repository `spec` with the keys
    /// (see [`br::s3_check_argv`]), and says what to fix when it can't. Quick: a refused
    /// connection is known within about 10 s, a silent endpoint within about 15 s.
    ///
    /// The keys go to pgBackRest in its environment. The only file is the endpoint's CA
    /// certificate (public), written for the check under the host's base directory and
    /// removed after it, whatever the outcome. No message holds a key: pgBackRest never
    /// prints them, and its words are scrubbed of them all the same.
    async fn check_s3(&self, host: &HostRecord, spec: &RepoSpec, key: &str, secret: &str) -> Result<()> {
        let name = &host.host.name;
        let endpoint = spec.endpoint.as_deref().unwrap_or_default();
        let url = format!("https://{endpoint}");
        let bucket = spec.bucket.as_deref().unwrap_or_default();
        let host_trouble = |e: sovdb_agent::AgentError| {
            AppError::Unavailable(format!(
                "cannot check the S3 storage from host {name:?}: {}; check the host with `sovdb host show {name}`",
                sovdb_types::error_chain(&e)
            ))
        };
        let client = self.agent_client(&host.host, Duration::from_secs(90)).await?;
        client
            .ensure_packages(&EnsurePackagesRequest {
                names: sovdb_postgres::packages(sovdb_postgres::Role::Backup, sovdb_postgres::DEFAULT_VERSION),
            })
            .await
            .map_err(host_trouble)?;
        let ca_file = match &spec.ca_pem {
            Some(pem) => {
                let nonce = Alphanumeric.sample_string(&mut rand::thread_rng(), 12);
                let path = format!("{}/tmp/s3-check-{nonce}.crt", host.host.base_dir);
                let write = WriteFileRequest {
                    path: path.clone().into(),
                    content: pem.clone().into_bytes(),
                    mode: 0o644,
                    owner: None,
                    group: None,
                };
                client.write_file(&write).await.map_err(host_trouble)?;
                Some(path)
            }
            None => None,
        };
        let target = RepoTarget::S3 {
            endpoint: endpoint.to_string(),
            bucket: bucket.to_string(),
            region: spec.region.clone().unwrap_or_default(),
            uri_style: spec.uri_style.unwrap_or_default(),
            path: spec.path.clone(),
            ca_file: ca_file.clone(),
        };
        let req = RunCommandRequest {
            user: Some(sovdb_postgres::OS_USER.into()),
            env: br::s3_check_env(key, secret),
            timeout_secs: S3_CHECK_TIMEOUT.as_secs(),
            ..RunCommandRequest::new(br::s3_check_argv(&target))
        };
        let ran = client.run_command(&req).await;
        if let Some(path) = ca_file {
            if let Err(e) = client.remove(&RemoveRequest { path: path.clone().into(), recursive: false }).await {
                let error = sovdb_types::error_chain(&e);
                tracing::warn!(host = %name, %path, %error, "cannot remove the S3 check's CA file");
            }
        }
        let out = ran.map_err(host_trouble)?;
        if out.status.code == Some(0) && !out.timed_out {
            return Ok(());
        }
        if out.timed_out {
            return Err(AppError::Unavailable(format!(
                "the S3 endpoint {url} did not answer host {name:?} within {} s: check --endpoint and that the \
                 storage is up",
                S3_CHECK_TIMEOUT.as_secs()
            )));
        }
        let scrub = |text: String| text.replace(secret, "<redacted>").replace(key, "<redacted>");
        Err(match br::s3_check_failure(out.status.code, &out.stderr) {
            S3CheckFailure::Unreachable { detail } => AppError::Unavailable(format!(
                "cannot reach the S3 endpoint {url} from host {name:?} ({}): check --endpoint and that the storage \
                 is up",
                scrub(detail)
            )),
            S3CheckFailure::AccessDenied => AppError::Invalid(format!(
                "the S3 storage at {url} refused the access key: check --access-key-id and the secret (and that the \
                 key may list and write bucket {bucket:?})"
            )),
            S3CheckFailure::NoBucket => AppError::Invalid(format!(
                "the S3 storage at {url} has no bucket {bucket:?}: check --bucket (sovdb does not create buckets)"
            )),
            S3CheckFailure::Http { status } => AppError::Invalid(format!(
                "the S3 storage at {url} refused to list bucket {bucket:?} with HTTP {}: check --region and \
                 --uri-style",
                scrub(status)
            )),
            S3CheckFailure::Certificate { detail } => AppError::Invalid(format!(
                "host {name:?} does not trust the certificate of the S3 endpoint {url} ({}): give the CA that signed \
                 it with --s3-ca-file{}",
                scrub(detail),
                if spec.ca_pem.is_some() { " (the one given did not)" } else { "" }
            )),
            S3CheckFailure::Other { detail } => AppError::Unavailable(format!(
                "cannot use the S3 storage at {url} from host {name:?} ({}): check --endpoint (an HTTPS endpoint) \
                 and that the storage is up",
                scrub(detail)
            )),
        })
    }

    /// Makes `path` on `host` ready to be a repository: pgBackRest installed, the
    /// directory (and its parents) there, owned by the database user, mode 0750, empty.
    /// Idempotent.
    async fn prepare_dir(&self, host: &HostRecord, path: &str) -> Result<()> {
        let name = &host.host.name;
        let host_trouble = |e: sovdb_agent::AgentError| {
            AppError::Conflict(format!(
                "cannot prepare {path} on host {name:?}: {}; check the host with `sovdb host show {name}`",
                sovdb_types::error_chain(&e)
            ))
        };
        let client = self.agent_client(&host.host, Duration::from_secs(90)).await?;
        client
            .ensure_packages(&EnsurePackagesRequest {
                names: sovdb_postgres::packages(sovdb_postgres::Role::Backup, sovdb_postgres::DEFAULT_VERSION),
            })
            .await
            .map_err(host_trouble)?;
        let user = sovdb_postgres::OS_USER;
        // The path and the user are arguments, never part of the script's text.
        const SCRIPT: &str = r#"set -eu
dir=$1 user=$2
if [ -e "$dir" ] && [ ! -d "$dir" ]; then exit 3; fi
if [ -d "$dir" ] && [ -n "$(ls -A -- "$dir")" ]; then exit 4; fi
install -d -m 0750 -o "$user" -g "$user" -- "$dir"
chown -- "$user:$user" "$dir"
chmod 0750 -- "$dir""#;
        let argv = ["sh", "-c", SCRIPT, "sh", path, user];
        let out = client
            .run_command(&RunCommandRequest { timeout_secs: 60, ..RunCommandRequest::new(argv) })
            .await
            .map_err(host_trouble)?;
        match out.status.code {
            Some(0) if !out.timed_out => {}
            Some(3) => {
                return Err(AppError::Invalid(format!(
                    "--path {path} on host {name:?} is a file, not a directory: give an empty or new directory"
                )))
            }
            Some(4) => {
                return Err(AppError::Invalid(format!(
                    "--path {path} on host {name:?} holds files already: give an empty or new directory"
                )))
            }
            _ => {
                return Err(AppError::Conflict(format!(
                    "cannot create {path} on host {name:?}: `install -d -m 0750 -o {user} -g {user} {path}` ended with {}: {}",
                    if out.timed_out { "a timeout".to_string() } else { out.status.to_string() },
                    out.stderr.trim()
                )))
            }
        }
        // pgBackRest runs as the database user: it must get through every directory above.
        let reach = RunCommandRequest {
            user: Some(user.into()),
            timeout_secs: 30,
            ..RunCommandRequest::new(["test", "-w", path])
        };
        let out = client.run_command(&reach).await.map_err(host_trouble)?;
        if out.status.code != Some(0) {
            return Err(AppError::Invalid(format!(
                "the system user {user} cannot reach {path} on host {name:?}: give the directories above it search \
                 permission (chmod o+x), or give another --path"
            )));
        }
        Ok(())
    }
}

/// The checks of a create that need nothing but the request.
fn check(req: &RepoCreate) -> Result<Checked> {
    let kind = req.kind.ok_or_else(|| {
        AppError::Invalid(
            "the repository's type is missing: give --type posix (a directory on a host of the location) or \
             --type s3 (a bucket of S3-compatible storage)"
                .into(),
        )
    })?;
    let encrypted = req.encrypt.unwrap_or(true);
    let s3_only = [
        ("--endpoint", req.endpoint.is_some()),
        ("--bucket", req.bucket.is_some()),
        ("--region", req.region.is_some()),
        ("--uri-style", req.uri_style.is_some()),
        ("--s3-ca-file", req.ca_pem.is_some()),
        ("--access-key-id", req.access_key_id.is_some()),
        ("--secret-access-key-stdin", req.secret_access_key.is_some()),
    ];
    match kind {
        RepoType::Posix => {
            if let Some((flag, _)) = s3_only.iter().find(|(_, given)| *given) {
                return Err(AppError::Invalid(format!(
                    "{flag} is for s3 repositories; a posix repository is a directory (--path) on a host (--host)"
                )));
            }
            let path = req.path.clone().ok_or_else(|| {
                AppError::Invalid(
                    "a posix repository needs --path: the directory on the host that keeps the backups \
                     (empty or new, e.g. /srv/backups/db)"
                        .into(),
                )
            })?;
            validate::plain_path("--path", &path)?;
            Ok(Checked { kind, spec: RepoSpec { path, ..Default::default() }, encrypted, secrets: Vec::new() })
        }
        RepoType::S3 => {
            if req.host.is_some() {
                return Err(AppError::Invalid(
                    "--host is for posix repositories; an s3 repository is reached at its --endpoint".into(),
                ));
            }
            let required = |flag: &str, value: &Option<String>, what: &str| {
                value
                    .clone()
                    .filter(|v| !v.is_empty())
                    .ok_or_else(|| AppError::Invalid(format!("an s3 repository needs {flag}: {what}")))
            };
            let endpoint = required("--endpoint", &req.endpoint, "the S3 server's host or host:port (HTTPS)")?;
            let bucket = required("--bucket", &req.bucket, "the bucket that keeps the backups")?;
            let region = required("--region", &req.region, "the bucket's region (e.g. us-east-1)")?;
            let key = required("--access-key-id", &req.access_key_id, "the access key sovdb signs requests with")?;
            let secret = required(
                "--secret-access-key-stdin",
                &req.secret_access_key,
                "the secret access key, written on standard input",
            )?;
            check_endpoint(&endpoint)?;
            check_bucket(&bucket)?;
            if region.len() > 63 || !region.chars().all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_') {
                return Err(AppError::Invalid(format!(
                    "--region {region:?} is not a region name: letters, digits, '-' and '_' (e.g. us-east-1)"
                )));
            }
            if key.len() > 128 || !key.chars().all(|c| c.is_ascii_graphic()) {
                return Err(AppError::Invalid(
                    "--access-key-id must be 1 to 128 printable characters without spaces".into(),
                ));
            }
            if secret.len() > 256 || secret.chars().any(char::is_control) {
                return Err(AppError::Invalid(
                    "the secret access key must be 1 to 256 characters on one line (no control characters)".into(),
                ));
            }
            if let Some(ca) = &req.ca_pem {
                if ca.len() > 64 * 1024 || !ca.contains("-----BEGIN CERTIFICATE-----") {
                    return Err(AppError::Invalid(
                        "--s3-ca-file is not a PEM certificate (expected `-----BEGIN CERTIFICATE-----`, at most 64 KiB)"
                            .into(),
                    ));
                }
            }
            let path = req.path.clone().unwrap_or_else(|| DEFAULT_S3_PATH.into());
            validate::plain_path("--path", &path)?;
            let spec = RepoSpec {
                path,
                endpoint: Some(endpoint),
                bucket: Some(bucket),
                region: Some(region),
                uri_style: Some(req.uri_style.unwrap_or_default()),
                ca_pem: req.ca_pem.clone(),
            };
            Ok(Checked { kind, spec, encrypted, secrets: vec![(S3_KEY, key), (S3_KEY_SECRET, secret)] })
        }
    }
}

/// `host` or `host:port` (an IPv6 address in brackets), without a scheme.
fn check_endpoint(endpoint: &str) -> Result<()> {
    let bad = |why: &str| {
        Err(AppError::Invalid(format!(
            "--endpoint {endpoint:?} {why}: give host or host:port, e.g. s3.example.com:9000"
        )))
    };
    if endpoint.contains("://") {
        return bad("has a scheme (S3 is always reached over HTTPS)");
    }
    let (host, port) = match endpoint.strip_prefix('[') {
        Some(rest) => match rest.split_once(']') {
            Some((v6, "")) => (v6, None),
            Some((v6, port)) => match port.strip_prefix(':') {
                Some(p) => (v6, Some(p)),
                None => return bad("is not an address"),
            },
            None => return bad("is not an address"),
        },
        None => match endpoint.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (endpoint, None),
        },
    };
    if let Some(port) = port {
        if !port.parse::<u16>().is_ok_and(|p| p > 0) {
            return bad("has no valid port (1-65535)");
        }
    }
    if !validate::is_host_name(host) {
        return bad("is not an IP address or DNS name");
    }
    Ok(())
}

/// S3's bucket naming rules.
fn check_bucket(bucket: &str) -> Result<()> {
    let ok = (3..=63).contains(&bucket.len())
        && bucket.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && bucket.ends_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && bucket.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '.' || c == '-');
    if ok {
        Ok(())
    } else {
        Err(AppError::Invalid(format!(
            "--bucket {bucket:?} is not a bucket name: 3 to 63 lower-case letters, digits, '.' or '-', starting and \
             ending with a letter or digit"
        )))
    }
}

fn taken(name: &str, project: &str) -> AppError {
    AppError::Conflict(format!(
        "repository {name:?} already exists in project {project:?}; pick another name or delete it first"
    ))
}

/// The installation's default location.
async fn default_location(tx: &mut dyn Tx) -> Result<String> {
    Ok(tx.meta_get(crate::clusters::DEFAULT_LOCATION_META).await?.unwrap_or_else(|| crate::LOCAL_LOCATION.into()))
}

/// The host of a posix repository: the one named, or the location's only host; it must be
/// in the location and ready (its agent prepares the directory).
async fn posix_host(tx: &mut dyn Tx, location: &Location, name: Option<&str>) -> Result<HostRecord> {
    let l = &location.name;
    let host = match name {
        Some(name) => {
            let host = tx.host_get(name).await?.ok_or_else(|| {
                AppError::Invalid(format!("host {name:?} does not exist; see `sovdb host list --location {l}`"))
            })?;
            if host.location_id != location.id {
                return Err(AppError::Invalid(format!(
                    "host {name:?} is in location {:?}, not {l:?}: give a host of {l} (`sovdb host list --location {l}`) \
                     or --location {}",
                    host.host.location, host.host.location
                )));
            }
            host
        }
        None => {
            let mut hosts = tx.host_list(Some(location.id), &PageRequest::first(2)).await?.items;
            match hosts.len() {
                0 => {
                    return Err(AppError::Invalid(format!(
                        "location {l:?} has no host to keep a posix repository on: add one (`sovdb host add`), or \
                         use --type s3"
                    )))
                }
                1 => hosts.remove(0),
                _ => {
                    return Err(AppError::Invalid(format!(
                        "location {l:?} has several hosts: say which one keeps the repository with --host \
                         (`sovdb host list --location {l}`)"
                    )))
                }
            }
        }
    };
    if host.host.status != HostStatus::Ready {
        let name = &host.host.name;
        return Err(AppError::Conflict(format!(
            "host {name:?} is {}, not ready: its agent prepares the repository's directory; wait until it is ready \
             (`sovdb host show {name}`) or give another --host",
            host.host.status.as_str()
        )));
    }
    Ok(host)
}

/// The host an s3 repository is checked from: the location's first ready host by name.
/// Its clusters' members reach the storage from the location's hosts, so one of them must.
async fn checking_host(tx: &mut dyn Tx, location: &Location) -> Result<HostRecord> {
    let l = &location.name;
    let mut hosts =
        tx.host_list(Some(location.id), &PageRequest::first(sovdb_types::page::MAX_PAGE_LIMIT)).await?.items;
    hosts.retain(|h| h.host.status == HostStatus::Ready);
    hosts.sort_by(|a, b| a.host.name.cmp(&b.host.name));
    hosts.into_iter().next().ok_or_else(|| {
        AppError::Unavailable(format!(
            "location {l:?} has no ready host to check the S3 storage from (sovdb checks that pgBackRest can use it \
             before recording it): add a host (`sovdb host add`) or wait until one is ready \
             (`sovdb host list --location {l}`)"
        ))
    })
}

/// Refuses a directory that is, holds or lies inside another repository's on the same
/// host: each repository has a passphrase of its own, and pgBackRest must not mix them.
async fn check_overlap(tx: &mut dyn Tx, project: ProjectId, host: &HostRecord, path: &str) -> Result<()> {
    let within = |outer: &str, inner: &str| inner == outer || inner.starts_with(&format!("{outer}/"));
    for other in tx.repo_list_on_host(host.host.id).await? {
        let theirs = &other.spec.path;
        if within(theirs, path) || within(path, theirs) {
            let who = if other.project_id == project {
                format!("repository {:?}", other.name)
            } else {
                "a repository of another project".to_string()
            };
            return Err(AppError::Conflict(format!(
                "{who} keeps its files in {theirs} on host {:?}; give a directory outside it (and not above it)",
                host.host.name
            )));
        }
    }
    Ok(())
}

/// The names of the project's clusters, by the repository their spec names.
async fn users_by_repo(tx: &mut dyn Tx, project: ProjectId) -> Result<BTreeMap<RepoId, Vec<String>>> {
    const BATCH: i64 = 500;
    let mut users: BTreeMap<RepoId, Vec<String>> = BTreeMap::new();
    let mut after = None;
    loop {
        let batch = tx.cluster_records_all(after, BATCH).await?;
        for c in batch.iter().filter(|c| c.project_id == project) {
            let spec: ClusterSpec = serde_json::from_value(c.spec.clone()).map_err(|e| {
                AppError::Internal(
                    anyhow::anyhow!(e).context(format!("cluster {}'s stored spec is unreadable", c.name)),
                )
            })?;
            if let Some(repo) = spec.backup_repo {
                users.entry(repo).or_default().push(c.name.clone());
            }
        }
        match batch.last() {
            Some(last) if batch.len() as i64 == BATCH => after = Some(last.id),
            _ => break,
        }
    }
    for names in users.values_mut() {
        names.sort();
    }
    Ok(users)
}

/// Where a repository's files are, for people: `/path on host h` or `s3://bucket/path at endpoint`.
pub(crate) fn where_files_are(r: &RepoRecord) -> String {
    match (r.kind, &r.host) {
        (RepoType::Posix, Some(host)) => format!("{} on host {host}", r.spec.path),
        _ => format!(
            "s3://{}{} at {}",
            r.spec.bucket.as_deref().unwrap_or("?"),
            r.spec.path,
            r.spec.endpoint.as_deref().unwrap_or("?")
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s3() -> RepoCreate {
        RepoCreate {
            name: "r".into(),
            kind: Some(RepoType::S3),
            endpoint: Some("s3.example.com".into()),
            bucket: Some("backups".into()),
            region: Some("eu-central-1".into()),
            access_key_id: Some("AKIAEXAMPLE".into()),
            secret_access_key: Some("wJalrXUtnFEMI/K7MDENG".into()),
            ..Default::default()
        }
    }

    fn refused(req: &RepoCreate) -> String {
        match check(req) {
            Err(AppError::Invalid(m)) => m,
            Err(other) => panic!("{other:?}"),
            Ok(_) => panic!("accepted {req:?}"),
        }
    }

    #[test]
    fn s3_defaults_and_secrets() {
        let c = check(&s3()).unwrap();
        assert_eq!((c.kind, c.encrypted, c.spec.path.as_str()), (RepoType::S3, true, "/sovdb"));
        assert_eq!(c.spec.uri_style, Some(UriStyle::Host));
        assert_eq!(c.secrets.iter().map(|s| s.0).collect::<Vec<_>>(), [S3_KEY, S3_KEY_SECRET]);
        let c = check(&RepoCreate { encrypt: Some(false), path: Some("/x/y".into()), ..s3() }).unwrap();
        assert_eq!((c.encrypted, c.spec.path.as_str()), (false, "/x/y"));
    }

    #[test]
    fn refusals_say_what_is_wrong() {
        assert!(refused(&RepoCreate { kind: None, ..s3() }).contains("--type posix"));
        let posix = RepoCreate { name: "r".into(), kind: Some(RepoType::Posix), ..Default::default() };
        assert!(refused(&posix).contains("needs --path"));
        let with_endpoint = RepoCreate { path: Some("/srv/b".into()), endpoint: Some("x".into()), ..posix.clone() };
        assert!(refused(&with_endpoint).starts_with("--endpoint is for s3 repositories"));
        assert!(refused(&RepoCreate { path: Some("/srv/../etc".into()), ..posix }).contains("plain absolute path"));
        assert!(refused(&RepoCreate { host: Some("h".into()), ..s3() }).starts_with("--host is for posix"));
        assert!(refused(&RepoCreate { bucket: None, ..s3() }).contains("needs --bucket"));
        assert!(refused(&RepoCreate { secret_access_key: None, ..s3() }).contains("--secret-access-key-stdin"));
        assert!(refused(&RepoCreate { bucket: Some("No_Such".into()), ..s3() }).contains("not a bucket name"));
        assert!(refused(&RepoCreate { region: Some("eu central".into()), ..s3() }).contains("not a region"));
        assert!(refused(&RepoCreate { ca_pem: Some("hello".into()), ..s3() }).contains("PEM certificate"));
        let secret = "line1\nline2-s3cr3t";
        let m = refused(&RepoCreate { secret_access_key: Some(secret.into()), ..s3() });
        assert!(m.contains("one line") && !m.contains("s3cr3t"), "{m}");
        let m = refused(&RepoCreate { access_key_id: Some("AKIA s3cr3t".into()), ..s3() });
        assert!(!m.contains("s3cr3t"), "{m}");
    }

    #[test]
    fn endpoints() {
        for ok in ["s3.example.com", "s3.example.com:9000", "10.0.0.1:443", "[::1]:9000", "[fd00::1]", "minio"] {
            assert!(check_endpoint(ok).is_ok(), "{ok}");
        }
        for (bad, why) in [
            ("https://s3.example.com", "scheme"),
            ("s3.example.com:0", "port"),
            ("s3.example.com:http", "port"),
            ("s3 example", "IP address or DNS name"),
            ("[::1", "not an address"),
            ("", "IP address or DNS name"),
        ] {
            let err = check_endpoint(bad).unwrap_err().to_string();
            assert!(err.contains(why), "{bad}: {err}");
        }
    }

    #[test]
    fn audit_params_hide_the_keys() {
        let v = audit_params(&s3());
        let text = v.to_string();
        assert!(!text.contains("AKIAEXAMPLE") && !text.contains("wJalrXUtnFEMI"), "{text}");
        assert_eq!(v["secret_access_key"], "<redacted>");
        assert_eq!(v["bucket"], "backups");
    }
}
