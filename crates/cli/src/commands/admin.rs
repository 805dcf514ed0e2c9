//! `sovdb admin`: installation administration (admin role).

use anyhow::{bail, Context as _};
use clap::Subcommand;
use sovdb_types::{LdapRoleMap, LdapSettings, MasterKeyRotation, Role};

use crate::client::Client;
use crate::output::{print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum AdminCmd {
    /// Replace the server's master key with a new one and re-seal every stored secret
    /// under it, in one transaction; the old key is kept as master.key.old
    RotateMasterKey,
    /// Directory logins: users without a local password log in against an LDAP directory,
    /// whose groups give their roles
    Ldap {
        #[command(subcommand)]
        cmd: LdapCmd,
    },
}

#[derive(Debug, Subcommand)]
pub enum LdapCmd {
    /// Set the directory (checked, not contacted: it is asked at each login)
    Set {
        /// ldaps://host[:port], or ldap://host[:port] on a loopback address (or with --allow-plaintext)
        #[arg(long)]
        url: String,
        /// The users' DN with {user} where the login name goes, e.g. uid={user},ou=people,dc=example,dc=org
        #[arg(long)]
        user_dn: String,
        /// Where the groups (groupOfNames) are, e.g. ou=groups,dc=example,dc=org
        #[arg(long)]
        group_base: String,
        /// A group's cn and the role its members get: GROUP=admin or GROUP=ROLE@PROJECT; repeat for more
        #[arg(long = "map", value_name = "GROUP=ROLE[@PROJECT]", required = true)]
        maps: Vec<String>,
        /// PEM file with the CA that signed the directory's certificate [default: the system's CAs]
        #[arg(long = "ldap-ca-file", id = "ldap_ca_file", value_name = "FILE")]
        ca_file: Option<std::path::PathBuf>,
        /// Accept ldap:// to a non-loopback address: passwords cross the network in clear
        #[arg(long)]
        allow_plaintext: bool,
    },
    /// Show the directory settings
    Show,
    /// Turn directory logins off (users it created keep their roles and tokens)
    Clear,
}

impl Tabular for LdapSettings {
    const HEADERS: &'static [&'static str] = &["URL", "USER DN", "GROUP BASE", "ROLES"];
    fn row(&self) -> Vec<String> {
        let roles: Vec<String> = self
            .roles
            .iter()
            .map(|m| match &m.project {
                Some(p) => format!("{}={}@{p}", m.group, m.role.as_str()),
                None => format!("{}={}", m.group, m.role.as_str()),
            })
            .collect();
        vec![self.url.clone(), self.user_dn.clone(), self.group_base.clone(), roles.join(" ")]
    }
}

/// `GROUP=ROLE[@PROJECT]`.
fn parse_map(s: &str) -> anyhow::Result<LdapRoleMap> {
    let Some((group, grant)) = s.rsplit_once('=') else {
        bail!("--map {s:?}: give GROUP=ROLE or GROUP=ROLE@PROJECT, e.g. dbas=operator@payments");
    };
    let (role, project) = match grant.split_once('@') {
        Some((r, p)) => (r, Some(p.to_string())),
        None => (grant, None),
    };
    let Some(role) = Role::parse(role) else {
        bail!("--map {s:?}: {role:?} is not a role (admin, owner, operator, developer, viewer)");
    };
    Ok(LdapRoleMap { group: group.to_string(), role, project })
}

impl Tabular for MasterKeyRotation {
    const HEADERS: &'static [&'static str] =
        &["KEY ID", "PREVIOUS KEY ID", "SECRETS", "HOST KEYS", "CA KEY", "PREVIOUS KEY FILE"];
    fn row(&self) -> Vec<String> {
        vec![
            self.key_id.clone(),
            self.previous_key_id.clone(),
            self.secrets.to_string(),
            self.host_keys.to_string(),
            if self.ca_key { "re-sealed".into() } else { "-".into() },
            self.previous_key_file.clone(),
        ]
    }
}

pub async fn run(cmd: AdminCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        AdminCmd::RotateMasterKey => print_one(
            &client.post::<_, MasterKeyRotation>("/admin/master-key/rotate", &serde_json::json!({})).await?,
            out,
        ),
        AdminCmd::Ldap { cmd: LdapCmd::Set { url, user_dn, group_base, maps, ca_file, allow_plaintext } } => {
            let roles = maps.iter().map(|m| parse_map(m)).collect::<anyhow::Result<Vec<_>>>()?;
            let ca_pem = match ca_file {
                Some(f) => Some(
                    std::fs::read_to_string(&f)
                        .with_context(|| format!("cannot read --ldap-ca-file {}", f.display()))?,
                ),
                None => None,
            };
            let settings = LdapSettings { url, user_dn, group_base, roles, ca_pem, allow_plaintext };
            print_one(&client.put::<_, LdapSettings>("/auth/ldap", &settings).await?, out)
        }
        AdminCmd::Ldap { cmd: LdapCmd::Show } => print_one(&client.get::<LdapSettings>("/auth/ldap", &[]).await?, out),
        AdminCmd::Ldap { cmd: LdapCmd::Clear } => {
            client.delete("/auth/ldap").await?;
            eprintln!("directory logins are off; users it created keep their roles and tokens");
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_map_names_a_group_a_role_and_maybe_a_project() {
        let m = parse_map("dbas=operator@payments").unwrap();
        assert_eq!((m.group.as_str(), m.role, m.project.as_deref()), ("dbas", Role::Operator, Some("payments")));
        let m = parse_map("root=admin").unwrap();
        assert_eq!((m.role, m.project), (Role::Admin, None));
        assert!(parse_map("dbas").unwrap_err().to_string().contains("GROUP=ROLE"));
        assert!(parse_map("dbas=king@p").unwrap_err().to_string().contains("not a role"));
    }
}
