//! `ensure_packages`: Debian packages are installed, through dpkg and apt.
//!
//! `dpkg-query` tells what is installed; only what is missing goes to `apt-get install`
//! (non-interactive, no recommends, waiting up to 10 minutes for another apt to finish).
//! `apt-get update` runs only when an install failed and the host has no package lists
//! at all (a fresh image): with lists present, a package apt does not know is an error
//! for the caller, not a reason to touch the network.
//!
//! Calls are serialized within the agent; dpkg's own lock covers other tools.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Stdio;

use axum::http::StatusCode;
use tokio::process::Command;

use crate::error::ApiError;
use crate::proto::{EnsurePackagesRequest, EnsurePackagesResponse};
use crate::sys::DEFAULT_PATH;

const APT_GET: &str = "/usr/bin/apt-get";
const DPKG_QUERY: &str = "/usr/bin/dpkg-query";
const APT_LISTS: &str = "/var/lib/apt/lists";

pub(crate) async fn ensure_packages(req: &EnsurePackagesRequest) -> Result<EnsurePackagesResponse, ApiError> {
    if req.names.is_empty() {
        return Err(ApiError::invalid("names is empty: give at least one package"));
    }
    for name in &req.names {
        check_package_name(name)?;
    }
    if !Path::new(APT_GET).exists() || !Path::new(DPKG_QUERY).exists() {
        return Err(ApiError::unsupported(format!(
            "this host has no {APT_GET} or {DPKG_QUERY}: ensure_packages works on Debian and Ubuntu hosts only"
        )));
    }

    let before = installed_versions(&req.names).await?;
    let missing: Vec<String> = req.names.iter().filter(|n| !before.contains_key(*n)).cloned().collect();
    if missing.is_empty() {
        return Ok(EnsurePackagesResponse { changed: false, versions: before, installed: Vec::new() });
    }

    tracing::info!(packages = ?missing, "installing packages");
    let mut outcome = apt_get(&install_args(&missing)).await?;
    if !outcome.status.success() && lists_missing() {
        tracing::info!("no apt package lists on this host; running apt-get update once");
        let update = apt_get(&["update".to_owned()]).await?;
        if !update.status.success() {
            return Err(command_failed("apt-get update", &update));
        }
        outcome = apt_get(&install_args(&missing)).await?;
    }
    if !outcome.status.success() {
        let unknown: Vec<&String> =
            missing.iter().filter(|n| outcome.stderr.contains(&format!("Unable to locate package {n}"))).collect();
        if !unknown.is_empty() {
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "unknown_package",
                format!(
                    "apt knows no package named {}: check the name, or add the repository that has it",
                    unknown.iter().map(|n| n.as_str()).collect::<Vec<_>>().join(", ")
                ),
            ));
        }
        return Err(command_failed("apt-get install", &outcome));
    }

    let versions = installed_versions(&req.names).await?;
    if let Some(still) = req.names.iter().find(|n| !versions.contains_key(*n)) {
        return Err(ApiError::internal(format!(
            "apt-get install succeeded but package {still} is still not installed (is it a virtual package? \
             name a real package that provides it)"
        )));
    }
    Ok(EnsurePackagesResponse { changed: true, versions, installed: missing })
}

/// Debian package names: lower-case letters, digits, `+`, `-`, `.`, starting with a
/// letter or digit; an architecture may follow a colon (`libc6:amd64`).
fn check_package_name(name: &str) -> Result<(), ApiError> {
    let (pkg, arch) = match name.split_once(':') {
        Some((p, a)) => (p, Some(a)),
        None => (name, None),
    };
    let pkg_ok = pkg.len() >= 2
        && pkg.starts_with(|c: char| c.is_ascii_lowercase() || c.is_ascii_digit())
        && pkg.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || "+-.".contains(c));
    let arch_ok = arch
        .is_none_or(|a| !a.is_empty() && a.chars().all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-'));
    if pkg_ok && arch_ok {
        Ok(())
    } else {
        Err(ApiError::invalid(format!("{name:?} is not a Debian package name")))
    }
}

fn install_args(names: &[String]) -> Vec<String> {
    let mut args: Vec<String> =
        ["install", "-y", "--no-install-recommends", "-o", "DPkg::Lock::Timeout=600"].map(str::to_owned).into();
    args.push("--".to_owned());
    args.extend(names.iter().cloned());
    args
}

/// Whether apt has never fetched package lists here.
fn lists_missing() -> bool {
    match std::fs::read_dir(APT_LISTS) {
        Ok(entries) => !entries.filter_map(|e| e.ok()).any(|e| e.file_name().to_string_lossy().contains("_Packages")),
        Err(_) => true,
    }
}

/// The installed version of each of `names` that is installed.
async fn installed_versions(names: &[String]) -> Result<BTreeMap<String, String>, ApiError> {
    let mut versions = BTreeMap::new();
    for name in names {
        let out = Command::new(DPKG_QUERY)
            .args(["-W", "-f", "${Status}\t${Version}\n", "--", name])
            .env_clear()
            .env("PATH", DEFAULT_PATH)
            .stdin(Stdio::null())
            .output()
            .await
            .map_err(|e| ApiError::internal(format!("cannot run {DPKG_QUERY}: {e}")))?;
        // Exit status 1 with "no packages found" means not installed, not a failure.
        let stdout = String::from_utf8_lossy(&out.stdout);
        let installed = stdout.lines().find_map(|line| {
            let (status, version) = line.split_once('\t')?;
            (status == "install ok installed").then(|| version.to_owned())
        });
        if let Some(version) = installed {
            versions.insert(name.clone(), version);
        } else if !out.status.success() && !String::from_utf8_lossy(&out.stderr).contains("no packages found") {
            return Err(ApiError::internal(format!(
                "{DPKG_QUERY} -W {name} failed ({}): {}",
                crate::proto::ExitStatus::from(out.status),
                String::from_utf8_lossy(&out.stderr).trim()
            )));
        }
    }
    Ok(versions)
}

struct Outcome {
    status: std::process::ExitStatus,
    stdout: String,
    stderr: String,
}

async fn apt_get(args: &[String]) -> Result<Outcome, ApiError> {
    let out = Command::new(APT_GET)
        .args(args)
        .env_clear()
        .env("PATH", DEFAULT_PATH)
        .env("DEBIAN_FRONTEND", "noninteractive")
        .env("LC_ALL", "C")
        .stdin(Stdio::null())
        .kill_on_drop(true)
        .output()
        .await
        .map_err(|e| ApiError::internal(format!("cannot run {APT_GET}: {e}")))?;
    Ok(Outcome {
        status: out.status,
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    })
}

/// A failed apt command: its name, exit status and the end of its output.
fn command_failed(what: &str, o: &Outcome) -> ApiError {
    let tail = |s: &str| {
        let lines: Vec<&str> = s.lines().collect();
        lines[lines.len().saturating_sub(15)..].join("\n")
    };
    ApiError::new(
        StatusCode::INTERNAL_SERVER_ERROR,
        "package_install_failed",
        format!(
            "{what} failed ({}):\nstderr:\n{}\nstdout:\n{}",
            crate::proto::ExitStatus::from(o.status),
            tail(&o.stderr),
            tail(&o.stdout)
        ),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn package_names_are_checked() {
        for ok in ["coreutils", "postgresql-16", "libc6:amd64", "g++", "python3.11"] {
            assert!(check_package_name(ok).is_ok(), "{ok}");
        }
        for bad in ["", "a", "Coreutils", "-o", "x y", "pkg;rm", "a:"] {
            assert!(check_package_name(bad).is_err(), "{bad}");
        }
    }
}
