//! A real LDAP directory for tests: Debian's OpenLDAP `slapd` on a free loopback port,
//! with an `mdb` database of its own in a temporary directory (suffix
//! `dc=example,dc=org`), and `ldapadd`/`ldapmodify` (ldap-utils) as its administrator to
//! fill and change it. Killed on drop; the directory (with slapd's output) is kept when
//! the test failed.

use std::io::Write as _;
use std::net::TcpStream;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::{finish_dir, free_port};

pub const SUFFIX: &str = "dc=example,dc=org";
const ROOT_DN: &str = "cn=admin,dc=example,dc=org";
const ROOT_PW: &str = "root-secret-of-the-test-directory";

pub struct TestLdap {
    dir: Option<tempfile::TempDir>,
    child: Option<Child>,
    port: u16,
}

impl TestLdap {
    /// Starts slapd with the base entries (`ou=people`, `ou=groups`) in place.
    pub fn start() -> TestLdap {
        let dir = tempfile::Builder::new().prefix("sovdb-test-ldap-").tempdir().expect("temp dir");
        let db = dir.path().join("db");
        std::fs::create_dir(&db).expect("db dir");
        let conf = dir.path().join("slapd.conf");
        std::fs::write(
            &conf,
            format!(
                "include /etc/ldap/schema/core.schema\ninclude /etc/ldap/schema/cosine.schema\n\
                 include /etc/ldap/schema/inetorgperson.schema\nmodulepath /usr/lib/ldap\nmoduleload back_mdb\n\
                 pidfile {dir}/slapd.pid\ndatabase mdb\nmaxsize 10485760\nsuffix \"{SUFFIX}\"\n\
                 rootdn \"{ROOT_DN}\"\nrootpw {ROOT_PW}\ndirectory {db}\n",
                dir = dir.path().display(),
                db = db.display()
            ),
        )
        .expect("slapd.conf");
        let mut dir = Some(dir);
        for _ in 0..5 {
            let port = free_port();
            let d = dir.take().expect("dir");
            let log = std::fs::File::create(d.path().join("slapd.log")).expect("log");
            // -d: in the foreground (a child this harness can kill), logging to stderr.
            let child = Command::new("/usr/sbin/slapd")
                .args(["-f", conf.to_str().unwrap(), "-h", &format!("ldap://127.0.0.1:{port}/"), "-d", "256"])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(log)
                .spawn()
                .expect("start /usr/sbin/slapd (Debian's slapd package; scripts/install-deps.sh installs it)");
            let mut ldap = TestLdap { dir: Some(d), child: Some(child), port };
            if ldap.wait_listening() {
                ldap.add(&format!(
                    "dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n\n\
                     dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n\n\
                     dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n"
                ));
                return ldap;
            }
            // The port was taken meanwhile (or slapd failed): try another.
            ldap.stop();
            dir = ldap.dir.take();
        }
        let log = std::fs::read_to_string(dir.expect("dir").path().join("slapd.log")).unwrap_or_default();
        panic!("slapd did not listen: {log}");
    }

    fn wait_listening(&mut self) -> bool {
        let deadline = Instant::now() + Duration::from_secs(20);
        while Instant::now() < deadline {
            if TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
                return true;
            }
            if let Some(Ok(Some(_))) = self.child.as_mut().map(|c| c.try_wait()) {
                return false;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        false
    }

    /// `ldap://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("ldap://127.0.0.1:{}", self.port)
    }

    /// `ldapadd` of the LDIF, as the directory's administrator.
    pub fn add(&self, ldif: &str) {
        self.ldap_tool("/usr/bin/ldapadd", ldif);
    }

    /// `ldapmodify` with the LDIF, as the directory's administrator.
    pub fn modify(&self, ldif: &str) {
        self.ldap_tool("/usr/bin/ldapmodify", ldif);
    }

    /// A person `uid=NAME,ou=people` with a password.
    pub fn add_user(&self, name: &str, password: &str) {
        self.add(&format!(
            "dn: uid={name},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {name}\ncn: {name}\nsn: {name}\nuserPassword: {password}\n"
        ));
    }

    /// A group `cn=NAME,ou=groups` with these users (by uid) as members.
    pub fn add_group(&self, name: &str, members: &[&str]) {
        let mut ldif = format!("dn: cn={name},ou=groups,{SUFFIX}\nobjectClass: groupOfNames\ncn: {name}\n");
        for m in members {
            ldif.push_str(&format!("member: uid={m},ou=people,{SUFFIX}\n"));
        }
        self.add(&ldif);
    }

    fn ldap_tool(&self, tool: &str, ldif: &str) {
        let mut child = Command::new(tool)
            .args(["-x", "-H", &self.url(), "-D", ROOT_DN, "-w", ROOT_PW])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("run {tool} (Debian's ldap-utils): {e}"));
        child.stdin.take().expect("stdin").write_all(ldif.as_bytes()).expect("write ldif");
        let out = child.wait_with_output().expect("wait");
        assert!(out.status.success(), "{tool} failed: {}\n{ldif}", String::from_utf8_lossy(&out.stderr));
    }

    /// Kills slapd (a directory that went away).
    pub fn stop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    pub fn dir(&self) -> &Path {
        self.dir.as_ref().expect("dir").path()
    }
}

impl Drop for TestLdap {
    fn drop(&mut self) {
        self.stop();
        if let Some(dir) = self.dir.take() {
            finish_dir(dir, "test LDAP directory");
        }
    }
}
