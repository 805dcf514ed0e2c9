//! `sovdb user`, `sovdb role`, `sovdb token` and `sovdb login`: who may use the API.
//!
//! Passwords are read from standard input (`--password-stdin`) or asked for on the
//! terminal without echo; they are never taken as arguments, where `ps` and shell history
//! would see them. A token's secret is printed once, when it is made.

use std::io::{BufRead as _, Read as _, Write as _};

use anyhow::{bail, Context as _};
use clap::Subcommand;
use sovdb_types::{Login, NewToken, PasswordChange, Role, RoleGrant, Token, TokenCreate, UserCreate, UserView, WhoAmI};

use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

const ROLES: [&str; 5] = ["admin", "owner", "operator", "developer", "viewer"];

#[derive(Debug, Subcommand)]
pub enum UserCmd {
    /// Create a user (admin; a project's owner for users with a role in it)
    Create {
        /// Name: a DNS label, unique in the installation
        name: String,
        /// Read the user's password (at least 12 characters) from standard input; without
        /// it the user can only use tokens
        #[arg(long)]
        password_stdin: bool,
        /// Grant this role at once, in the project of --project (default `default`);
        /// `admin` is installation-wide
        #[arg(long, value_parser = ROLES)]
        role: Option<String>,
    },
    /// List users: all of them for admins, the project's members for its owners
    List,
    /// Disable a user (admin): their tokens stop working at once and they can't log in
    Disable { name: String },
    /// Enable a disabled user again (admin)
    Enable { name: String },
    /// Delete a user (admin) with their roles and tokens; their audit records stay
    Delete { name: String },
    /// Change your password (with the current one), or set another user's (admin). Ends
    /// the user's other password logins; API tokens stay
    Passwd {
        /// Whose password [default: yours]
        name: Option<String>,
        /// Read the passwords from standard input, one per line: your current one, then the
        /// new one (for another user's: only the new one)
        #[arg(long)]
        password_stdin: bool,
    },
}

#[derive(Debug, Subcommand)]
pub enum RoleCmd {
    /// Grant a role: admin (admins only, installation-wide) or a role in the project of
    /// --project (default `default`; admins and the project's owners)
    Grant {
        user: String,
        #[arg(value_parser = ROLES)]
        role: String,
    },
    /// Revoke a role, as granted; the last enabled admin keeps admin
    Revoke {
        user: String,
        #[arg(value_parser = ROLES)]
        role: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum TokenCmd {
    /// Create an API token and print its secret (shown only this once)
    Create {
        /// A name to tell your tokens apart
        #[arg(long)]
        name: Option<String>,
        /// How long it lives: e.g. 90s, 30m, 12h, 7d, 52w, or `never`
        #[arg(long, value_name = "DURATION", default_value = "90d")]
        expires: String,
        /// Create it for another user (admin)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// List your tokens (or, as admin, another user's): never their secrets
    List {
        /// Another user's tokens (admin)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
    /// Revoke a token by name or ID; it is refused from the next request on
    Revoke {
        /// The token's name (must pick one live token) or ID
        // Not `token`: that is the id of the global --token option.
        #[arg(value_name = "NAME|ID")]
        which: String,
        /// Whose token the name refers to (admin)
        #[arg(long, value_name = "NAME")]
        user: Option<String>,
    },
}

/// `sovdb login`'s options.
#[derive(Debug, Clone, clap::Args)]
pub struct LoginArgs {
    /// User name [default: $USER]
    #[arg(long)]
    pub user: Option<String>,
    /// Read the password from standard input instead of asking on the terminal
    #[arg(long)]
    pub password_stdin: bool,
    /// Print the new token on standard output instead of saving it in the config file
    #[arg(long)]
    pub print_token: bool,
    /// How long the token lives, e.g. 30m, 12h, 7d (at most 30d) [default: 12h]
    #[arg(long, value_name = "DURATION")]
    pub expires: Option<String>,
}

impl Tabular for UserView {
    const HEADERS: &'static [&'static str] = &["NAME", "ROLES", "PASSWORD", "DISABLED", "CREATED"];
    fn row(&self) -> Vec<String> {
        let roles: Vec<String> = self.roles.iter().map(grant_text).collect();
        vec![
            self.name.clone(),
            if roles.is_empty() { "-".into() } else { roles.join(",") },
            if self.has_password { "yes".into() } else { "no".into() },
            if self.disabled { "yes".into() } else { "no".into() },
            output::time(&self.created_at),
        ]
    }
}

/// `admin`, `viewer@p`.
fn grant_text(g: &RoleGrant) -> String {
    match &g.project {
        None => g.role.as_str().to_string(),
        Some(p) => format!("{}@{p}", g.role.as_str()),
    }
}

impl Tabular for Token {
    const HEADERS: &'static [&'static str] = &["NAME", "ID", "USER", "CREATED", "EXPIRES", "REVOKED"];
    fn row(&self) -> Vec<String> {
        vec![
            self.name.clone(),
            self.id.to_string(),
            self.user.clone(),
            output::time(&self.created_at),
            self.expires_at.as_ref().map(output::time).unwrap_or_else(|| "never".into()),
            if self.revoked { "yes".into() } else { "no".into() },
        ]
    }
}

/// A duration as the CLI takes it: a number and a unit (`s`, `m`, `h`, `d`, `w`), or
/// `never` (`None`).
pub fn parse_duration(text: &str) -> anyhow::Result<Option<u64>> {
    if text == "never" {
        return Ok(None);
    }
    let bad = || anyhow::anyhow!("{text:?} is not a duration: use a number and a unit, e.g. 90s, 30m, 12h, 7d, 52w");
    let unit_at = text.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
    let (n, unit) = text.split_at(unit_at);
    let n: u64 = n.parse().map_err(|_| bad())?;
    let secs = match unit {
        "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        "w" => 7 * 86_400,
        _ => return Err(bad()),
    };
    match n.checked_mul(secs) {
        Some(0) => bail!("{text:?}: a token must live at least a second"),
        Some(total) => Ok(Some(total)),
        None => Err(bad()),
    }
}

/// A password from standard input: all of it, less one trailing line end.
fn password_from_stdin() -> anyhow::Result<String> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read the password from standard input")?;
    let password = text.strip_suffix('\n').map(|t| t.strip_suffix('\r').unwrap_or(t)).unwrap_or(&text);
    if password.is_empty() {
        bail!("--password-stdin: standard input is empty; write the password on it");
    }
    Ok(password.to_string())
}

/// `n` passwords from standard input, one per line (the last line end is optional).
fn passwords_from_stdin(n: usize) -> anyhow::Result<Vec<String>> {
    let mut text = String::new();
    std::io::stdin().read_to_string(&mut text).context("cannot read the passwords from standard input")?;
    let lines: Vec<String> = text.lines().map(|l| l.strip_suffix('\r').unwrap_or(l).to_string()).collect();
    if lines.len() != n || lines.iter().any(String::is_empty) {
        let what = if n == 2 { "your current password, then the new one" } else { "the new password" };
        bail!("--password-stdin: write {what} on standard input, one per line ({} line(s) given)", lines.len());
    }
    Ok(lines)
}

/// Asks for a password on the terminal, without echoing it.
fn password_from_terminal(prompt: &str) -> anyhow::Result<String> {
    use std::os::fd::AsRawFd as _;
    let tty = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .open("/dev/tty")
        .context("no terminal to ask for the password on: pass --password-stdin and write it on standard input")?;
    let fd = tty.as_raw_fd();
    // SAFETY: termios is plain data; tcgetattr fills it for a descriptor we hold open.
    let mut term: libc::termios = unsafe { std::mem::zeroed() };
    if unsafe { libc::tcgetattr(fd, &mut term) } != 0 {
        bail!("cannot switch off echo on the terminal: pass --password-stdin instead");
    }
    let saved = term;
    term.c_lflag &= !libc::ECHO;
    term.c_lflag |= libc::ECHONL;
    // SAFETY: as above; the settings are restored below whatever the read does.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &term) };
    let mut line = String::new();
    let read = (&tty).write_all(prompt.as_bytes()).and_then(|()| std::io::BufReader::new(&tty).read_line(&mut line));
    // SAFETY: restores what tcgetattr read.
    unsafe { libc::tcsetattr(fd, libc::TCSANOW, &saved) };
    read.context("cannot read the password from the terminal")?;
    let password = line.trim_end_matches(['\n', '\r']).to_string();
    if password.is_empty() {
        bail!("no password given");
    }
    Ok(password)
}

/// The grant a role argument means: `admin` without a project; any other role in the
/// client's project (`default` when none is named). `explicit_project` is whether
/// --project or SOVDB_PROJECT named one, which `admin` refuses.
fn grant(client: &Client, role: &str, explicit_project: bool) -> anyhow::Result<RoleGrant> {
    let role = Role::parse(role).expect("clap checked the role");
    if role == Role::Admin {
        if explicit_project {
            bail!("admin is an installation-wide role: drop --project (and SOVDB_PROJECT)");
        }
        return Ok(RoleGrant { role, project: None });
    }
    Ok(RoleGrant { role, project: Some(client.project().unwrap_or("default").to_string()) })
}

pub async fn run_user(cmd: UserCmd, client: &Client, out: OutputFormat, explicit_project: bool) -> anyhow::Result<()> {
    match cmd {
        UserCmd::Create { name, password_stdin, role } => {
            let password = if password_stdin { Some(password_from_stdin()?) } else { None };
            let grant = role.as_deref().map(|r| grant(client, r, explicit_project)).transpose()?;
            let req = UserCreate {
                name,
                password,
                role: grant.as_ref().map(|g| g.role),
                project: grant.and_then(|g| g.project),
            };
            let user: UserView = client.post("/users", &req).await?;
            print_one(&user, out)
        }
        UserCmd::List => print_list(&client.list::<UserView>("/users", &[]).await?, out),
        UserCmd::Disable { name } => {
            let user: UserView = client.post(&format!("/users/{name}/disable"), &serde_json::json!({})).await?;
            eprintln!("user {name} disabled: their tokens are refused from now on");
            print_one(&user, out)
        }
        UserCmd::Enable { name } => {
            let user: UserView = client.post(&format!("/users/{name}/enable"), &serde_json::json!({})).await?;
            print_one(&user, out)
        }
        UserCmd::Delete { name } => {
            client.delete(&format!("/users/{name}")).await?;
            eprintln!("user {name} deleted, with their roles and tokens");
            Ok(())
        }
        UserCmd::Passwd { name, password_stdin } => {
            let me = client.get::<WhoAmI>("/whoami", &[]).await?.user;
            let name = name.unwrap_or_else(|| me.clone());
            let own = name == me;
            let (current, password) = if password_stdin {
                let mut given = passwords_from_stdin(if own { 2 } else { 1 })?;
                let password = given.pop().expect("counted");
                (given.pop(), password)
            } else {
                let current =
                    if own { Some(password_from_terminal(&format!("current password for {name}: "))?) } else { None };
                let password = password_from_terminal(&format!("new password for {name}: "))?;
                if password_from_terminal("the new password again: ")? != password {
                    bail!("the two new passwords differ: nothing was changed");
                }
                (current, password)
            };
            let req = PasswordChange { password, current_password: current };
            let user: UserView = client.put(&format!("/users/{name}/password"), &req).await?;
            eprintln!("the password of {name} is changed; their other password logins are ended (API tokens stay)");
            print_one(&user, out)
        }
    }
}

pub async fn run_role(cmd: RoleCmd, client: &Client, out: OutputFormat, explicit_project: bool) -> anyhow::Result<()> {
    match cmd {
        RoleCmd::Grant { user, role } => {
            let g = grant(client, &role, explicit_project)?;
            let view: UserView = client.post(&format!("/users/{user}/roles"), &g).await?;
            eprintln!("granted {} to {user}", grant_text(&g));
            print_one(&view, out)
        }
        RoleCmd::Revoke { user, role } => {
            let g = grant(client, &role, explicit_project)?;
            let query: Vec<(&str, String)> = g.project.iter().map(|p| ("project", p.clone())).collect();
            let view: UserView =
                client.delete_query(&format!("/users/{user}/roles/{}", g.role.as_str()), &query).await?;
            eprintln!("revoked {} from {user}", grant_text(&g));
            print_one(&view, out)
        }
    }
}

pub async fn run_token(cmd: TokenCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        TokenCmd::Create { name, expires, user } => {
            let secs = parse_duration(&expires)?;
            let req = TokenCreate { name, user, expires_in_secs: secs, never_expires: secs.is_none() };
            let created: NewToken = client.post("/tokens", &req).await?;
            print_new_token(&created, out)
        }
        TokenCmd::List { user } => {
            let query: Vec<(&str, String)> = user.into_iter().map(|u| ("user", u)).collect();
            print_list(&client.list::<Token>("/tokens", &query).await?, out)
        }
        TokenCmd::Revoke { which, user } => {
            let query: Vec<(&str, String)> = user.into_iter().map(|u| ("user", u)).collect();
            let revoked: Token = client.delete_query(&format!("/tokens/{which}"), &query).await?;
            eprintln!("token {} ({}) of {} revoked", revoked.name, revoked.id, revoked.user);
            if out != OutputFormat::Table {
                print_one(&revoked, out)?;
            }
            Ok(())
        }
    }
}

/// The secret alone on standard output (so `TOKEN=$(sovdb token create)` works), the rest
/// on standard error; `-o json|yaml` prints the whole answer.
fn print_new_token(created: &NewToken, out: OutputFormat) -> anyhow::Result<()> {
    if out != OutputFormat::Table {
        return print_one(&NewTokenOut(created), out);
    }
    let t = &created.token;
    let expires = t.expires_at.as_ref().map(output::time).unwrap_or_else(|| "never".into());
    eprintln!(
        "token {} ({}) for {}, expires {expires}; this is the only time its secret is shown:",
        t.name, t.id, t.user
    );
    println!("{}", created.secret);
    Ok(())
}

/// A new token for structured output.
struct NewTokenOut<'a>(&'a NewToken);

impl serde::Serialize for NewTokenOut<'_> {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        self.0.serialize(s)
    }
}

impl Tabular for NewTokenOut<'_> {
    const HEADERS: &'static [&'static str] = Token::HEADERS;
    fn row(&self) -> Vec<String> {
        self.0.token.row()
    }
}

/// `sovdb login`: a password for a token, saved in the config file unless `--print-token`.
/// `server_named` and `project_named`: given by flags or the environment, saved with the
/// token, so later commands go to the same server and project; `token_given`: whether
/// --token or SOVDB_TOKEN is set (and would win over the saved token).
pub async fn login(
    args: LoginArgs,
    client: &Client,
    server_named: Option<&str>,
    project_named: Option<&str>,
    token_given: bool,
    out: OutputFormat,
) -> anyhow::Result<()> {
    let user = match args.user.or_else(|| std::env::var("USER").ok().filter(|u| !u.is_empty())) {
        Some(u) => u,
        None => bail!("whose login? pass --user NAME"),
    };
    let expires_in_secs = match args.expires.as_deref().map(parse_duration).transpose()? {
        Some(None) => bail!(
            "--expires never: a login token always expires (at most 30d); use `sovdb token create --expires never`"
        ),
        Some(Some(secs)) => Some(secs),
        None => None,
    };
    let password = if args.password_stdin {
        password_from_stdin()?
    } else {
        password_from_terminal(&format!("password for {user} at {}: ", client.base()))?
    };
    let created: NewToken = client.post("/login", &Login { user, password, expires_in_secs }).await?;
    if args.print_token {
        return print_new_token(&created, out);
    }
    let path = crate::config::save_token(server_named, project_named, &created.secret)?;
    let t = &created.token;
    let expires = t.expires_at.as_ref().map(output::time).unwrap_or_else(|| "never".into());
    eprintln!("logged in as {} (token {}, expires {expires}); saved in {}", t.user, t.id, path.display());
    if token_given {
        eprintln!("note: --token or SOVDB_TOKEN is set and wins over the saved token; drop it to use this login");
    }
    if out != OutputFormat::Table {
        print_one(&created.token, out)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations_take_a_unit_or_never() {
        assert_eq!(parse_duration("90s").unwrap(), Some(90));
        assert_eq!(parse_duration("30m").unwrap(), Some(1800));
        assert_eq!(parse_duration("12h").unwrap(), Some(43_200));
        assert_eq!(parse_duration("7d").unwrap(), Some(604_800));
        assert_eq!(parse_duration("2w").unwrap(), Some(1_209_600));
        assert_eq!(parse_duration("never").unwrap(), None);
        for bad in ["", "12", "h", "1.5h", "-1h", "12hours", "0s", "99999999999999999999d"] {
            assert!(parse_duration(bad).is_err(), "{bad:?} was taken");
        }
    }
}
