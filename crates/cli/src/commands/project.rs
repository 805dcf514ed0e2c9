use clap::Subcommand;
use sovdb_types::{Project, ProjectCreate, WhoAmI};

use crate::client::Client;
use crate::output::{self, print_list, print_one, OutputFormat, Tabular};

#[derive(Debug, Subcommand)]
pub enum ProjectCmd {
    /// Create a project (admin)
    Create {
        /// Name: a DNS label, unique in the installation
        name: String,
    },
    /// List the projects you can see
    List,
}

impl Tabular for Project {
    const HEADERS: &'static [&'static str] = &["NAME", "ID", "CREATED"];
    fn row(&self) -> Vec<String> {
        vec![self.name.clone(), self.id.to_string(), output::time(&self.created_at)]
    }
}

impl Tabular for WhoAmI {
    const HEADERS: &'static [&'static str] = &["USER", "PROJECT", "ROLES"];
    fn row(&self) -> Vec<String> {
        let roles = self.roles.iter().map(|b| b.role.as_str()).collect::<Vec<_>>().join(",");
        vec![self.user.clone(), self.project.clone(), roles]
    }
}

pub async fn run(cmd: ProjectCmd, client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    match cmd {
        ProjectCmd::Create { name } => {
            let created: Project = client.post("/projects", &ProjectCreate { name }).await?;
            print_one(&created, out)
        }
        ProjectCmd::List => print_list(&client.list::<Project>("/projects", &[]).await?, out),
    }
}

pub async fn whoami(client: &Client, out: OutputFormat) -> anyhow::Result<()> {
    print_one(&client.get::<WhoAmI>("/whoami", &[]).await?, out)
}
