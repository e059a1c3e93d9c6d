//! A real PostgreSQL server for tests (cargo feature `testing`): Debian's
//! `postgresql` package binaries (`/usr/lib/postgresql/*/bin`, the newest;
//! or `CI_SLO_PG_BIN`), a cluster `initdb`ed in a temporary directory, the
//! server listening on 127.0.0.1 on a free port with its unix socket inside
//! that directory, and a database per test.
//!
//! PostgreSQL refuses to run as root: as root (CI), the cluster belongs to
//! the `postgres` system user the package creates and its programs run
//! through `runuser -u postgres --`.
//!
//! The server is stopped and its directory removed when the [`TestServer`]
//! is dropped, or, for the one [`TestServer::shared`] by every test of a
//! test binary (a static, never dropped), when the test process exits: the
//! server runs under a small shell script that waits on a pipe from this
//! process and, once the pipe closes (drop or exit, even a crash), stops
//! the server (`pg_ctl stop -m fast`) and removes the directory.
//!
//! Connections over TCP need the password ([`TestServer::password`],
//! SCRAM), as a real deployment would; `initdb` sets it for the superuser
//! [`TestServer::USER`].

use crate::connect::ConnectConfig;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

/// The script that owns the server: start it, wait for the pipe from the
/// test process to close, stop it, remove the directory (kept when the
/// file `retry` is there: the start failed and is tried again). Arguments: the
/// directory, the binaries' directory, the port, then `-c name=value`
/// settings.
const SUPERVISOR: &str = r#"
trap '' INT TERM HUP
dir=$1; bin=$2; port=$3; shift 3
( "$bin/postgres" -D "$dir/data" -p "$port" -k "$dir" -c listen_addresses=127.0.0.1 "$@" >"$dir/log" 2>&1
  echo $? >"$dir/exited" ) &
read -r _ || true
"$bin/pg_ctl" stop -D "$dir/data" -m fast -w >/dev/null 2>&1 || true
wait
[ -e "$dir/retry" ] || rm -rf "$dir"
"#;

/// What runs after `initdb`, given the server's directory: more
/// `postgresql.conf` settings (name, value).
type Prepare<'a> = dyn Fn(&Path) -> io::Result<Vec<(String, String)>> + 'a;

/// A running PostgreSQL server of one test process.
pub struct TestServer {
    dir: PathBuf,
    port: u16,
    password: String,
    supervisor: Child,
    /// Closing it stops the server.
    pipe: Option<ChildStdin>,
    startup: Duration,
}

/// One database of a [`TestServer`], dropped (with its connections) when
/// this is dropped.
pub struct TestDatabase {
    name: String,
    config: postgres::Config,
    admin: postgres::Config,
}

impl TestDatabase {
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where to connect, password included.
    pub fn config(&self) -> postgres::Config {
        self.config.clone()
    }

    /// A new connection (TLS when the server offers it, the certificate
    /// not checked: `sslmode=prefer`).
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        ConnectConfig::from(&self.config).connect()
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        if let Ok(mut admin) = ConnectConfig::from(&self.admin).connect() {
            let _ = admin.batch_execute(&format!(
                "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
                self.name
            ));
        }
    }
}

/// The directory of PostgreSQL's programs: `CI_SLO_PG_BIN`, else the newest
/// `/usr/lib/postgresql/<version>/bin` with an `initdb` (Debian's layout).
pub fn pg_bin_dir() -> io::Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CI_SLO_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut found: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| {
            let version = e.file_name().to_str()?.parse::<u32>().ok()?;
            let bin = e.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    found.sort();
    found.pop().map(|(_, bin)| bin).ok_or_else(|| {
        io::Error::new(
            io::ErrorKind::NotFound,
            "PostgreSQL is not installed: no /usr/lib/postgresql/*/bin/initdb \
             (install Debian's `postgresql` package, as scripts/test does, or set CI_SLO_PG_BIN)",
        )
    })
}

fn is_root() -> bool {
    std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0)
}

/// `id -u NAME` / `id -g NAME`.
fn id_of(flag: &str, user: &str) -> io::Result<u32> {
    let out = Command::new("id").args([flag, user]).output()?;
    String::from_utf8_lossy(&out.stdout)
        .trim()
        .parse()
        .map_err(|_| {
            io::Error::other(format!(
                "running as root, PostgreSQL needs the system user {user:?} (Debian's postgresql package creates it)"
            ))
        })
}

/// A command running `program` as the cluster's owner: `runuser -u
/// postgres --` when this process is root, directly otherwise.
fn as_owner(program: &Path) -> Command {
    if is_root() {
        let mut c = Command::new("runuser");
        c.args(["-u", "postgres", "--"]).arg(program);
        c
    } else {
        Command::new(program)
    }
}

fn free_port() -> io::Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

static DATABASES: AtomicU64 = AtomicU64::new(0);

impl TestServer {
    /// The superuser, who owns every test database.
    pub const USER: &'static str = "ci_slo";

    /// The server every test of this process shares (started on first use).
    pub fn shared() -> &'static TestServer {
        static SHARED: OnceLock<TestServer> = OnceLock::new();
        SHARED.get_or_init(|| TestServer::start().expect("start the test PostgreSQL server"))
    }

    /// Start a server of its own (fsync off: tests need no durability).
    pub fn start() -> io::Result<TestServer> {
        TestServer::start_with(&[("fsync", "off"), ("full_page_writes", "off")])
    }

    /// Start a server with these `postgresql.conf` settings.
    pub fn start_with(settings: &[(&str, &str)]) -> io::Result<TestServer> {
        TestServer::start_prepared(settings, &|_| Ok(Vec::new()))
    }

    /// Start a server with TLS on (`ssl=on`), presenting the certificate
    /// chain `cert_pem` (PEM, the server's first) with the private key
    /// `key_pem`. With `require_tls`, TCP connections without TLS are
    /// refused (`hostssl` in `pg_hba.conf`); otherwise both are accepted.
    pub fn start_tls(cert_pem: &str, key_pem: &str, require_tls: bool) -> io::Result<TestServer> {
        TestServer::start_tls_for(cert_pem, key_pem, require_tls, None)
    }

    /// Start a server as [`TestServer::start_tls`] with TLS required, which
    /// also authenticates the role `cert_user` by a client certificate
    /// signed by `certs`' CA (`hostssl all USER 127.0.0.1/32 cert` before
    /// the other lines; `ssl_ca_file` the CA). The role is not created:
    /// create it as [`TestServer::USER`].
    pub fn start_tls_cert_auth(certs: &TestCerts, cert_user: &str) -> io::Result<TestServer> {
        TestServer::start_tls_for(
            &certs.server_cert_pem,
            &certs.server_key_pem,
            true,
            Some((&certs.ca_pem, cert_user)),
        )
    }

    fn start_tls_for(
        cert_pem: &str,
        key_pem: &str,
        require_tls: bool,
        cert_auth: Option<(&str, &str)>,
    ) -> io::Result<TestServer> {
        let prepare = |dir: &Path| -> io::Result<Vec<(String, String)>> {
            let cert = dir.join("server.crt");
            let key = dir.join("server.key");
            std::fs::write(&cert, cert_pem)?;
            std::fs::write(&key, key_pem)?;
            // The server refuses a key others can read.
            std::fs::set_permissions(&key, std::os::unix::fs::PermissionsExt::from_mode(0o600))?;
            if is_root() {
                let (uid, gid) = (id_of("-u", "postgres")?, id_of("-g", "postgres")?);
                for f in [&cert, &key] {
                    std::os::unix::fs::chown(f, Some(uid), Some(gid))?;
                }
            }
            if require_tls {
                let hba = dir.join("data").join("pg_hba.conf");
                let text = std::fs::read_to_string(&hba)?;
                let mut text: String = text
                    .lines()
                    .map(|l| match l.strip_prefix("host ") {
                        Some(rest) => format!("hostssl {rest}\n"),
                        None => format!("{l}\n"),
                    })
                    .collect();
                if let Some((_, user)) = cert_auth {
                    // The first matching line decides: this one before the rest.
                    text = format!("hostssl all {user} 127.0.0.1/32 cert\n{text}");
                }
                std::fs::write(&hba, text)?;
            }
            let mut settings = vec![
                ("ssl".into(), "on".into()),
                ("ssl_cert_file".into(), cert.display().to_string()),
                ("ssl_key_file".into(), key.display().to_string()),
                ("fsync".into(), "off".into()),
            ];
            if let Some((ca_pem, _)) = cert_auth {
                let ca = dir.join("client-ca.crt");
                std::fs::write(&ca, ca_pem)?;
                if is_root() {
                    let (uid, gid) = (id_of("-u", "postgres")?, id_of("-g", "postgres")?);
                    std::os::unix::fs::chown(&ca, Some(uid), Some(gid))?;
                }
                settings.push(("ssl_ca_file".into(), ca.display().to_string()));
            }
            Ok(settings)
        };
        TestServer::start_prepared(&[], &prepare)
    }

    /// Start a server: `prepare` runs after `initdb` (given the directory)
    /// and returns more settings.
    fn start_prepared(settings: &[(&str, &str)], prepare: &Prepare<'_>) -> io::Result<TestServer> {
        let began = Instant::now();
        let bin = pg_bin_dir()?;
        let dir = tempfile::Builder::new()
            .prefix("ci-slo-pg-")
            .tempdir()?
            .keep();
        let password = format!("pw-{:016x}", fastrand_u64());
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, format!("{password}\n"))?;
        if is_root() {
            let (uid, gid) = (id_of("-u", "postgres")?, id_of("-g", "postgres")?);
            std::os::unix::fs::chown(&dir, Some(uid), Some(gid))?;
            std::os::unix::fs::chown(&pwfile, Some(uid), Some(gid))?;
        }
        let out = as_owner(&bin.join("initdb"))
            .arg("-D")
            .arg(dir.join("data"))
            .args([
                "-U",
                TestServer::USER,
                "-E",
                "UTF8",
                "--locale=C",
                "--no-sync",
            ])
            .args(["--auth-local=trust", "--auth-host=scram-sha-256"])
            .arg(format!("--pwfile={}", pwfile.display()))
            .output()?;
        if !out.status.success() {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(io::Error::other(format!(
                "initdb failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        let extra = match prepare(&dir) {
            Ok(extra) => extra,
            Err(e) => {
                let _ = std::fs::remove_dir_all(&dir);
                return Err(e);
            }
        };
        let mut last_error = String::new();
        // A free port may be taken between asking and binding: try again.
        for _ in 0..3 {
            let port = free_port()?;
            let mut cmd = as_owner(Path::new("/bin/sh"));
            cmd.args(["-c", SUPERVISOR, "sh"])
                .arg(&dir)
                .arg(&bin)
                .arg(port.to_string());
            for (k, v) in settings {
                cmd.arg("-c").arg(format!("{k}={v}"));
            }
            for (k, v) in &extra {
                cmd.arg("-c").arg(format!("{k}={v}"));
            }
            let mut supervisor = cmd
                .stdin(Stdio::piped())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .spawn()?;
            let pipe = supervisor.stdin.take();
            let mut server = TestServer {
                dir: dir.clone(),
                port,
                password: password.clone(),
                supervisor,
                pipe,
                startup: Duration::ZERO,
            };
            match server.wait_ready() {
                Ok(()) => {
                    server.startup = began.elapsed();
                    return Ok(server);
                }
                Err(e) => {
                    last_error = e.to_string();
                    // Stop what runs; keep the cluster for the next try.
                    let _ = std::fs::write(dir.join("retry"), "");
                    server.stop(false);
                    let _ = std::fs::remove_file(dir.join("retry"));
                    let _ = std::fs::remove_file(dir.join("exited"));
                }
            }
        }
        let _ = std::fs::remove_dir_all(&dir);
        Err(io::Error::other(format!(
            "PostgreSQL did not start: {last_error}"
        )))
    }

    fn wait_ready(&mut self) -> io::Result<()> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if self.dir.join("exited").exists() {
                return Err(io::Error::other(format!(
                    "the server exited: {}",
                    self.log_tail()
                )));
            }
            match ConnectConfig::from(self.admin_config()).connect() {
                Ok(_) => return Ok(()),
                Err(e) if Instant::now() > deadline => {
                    return Err(io::Error::other(format!(
                        "not ready after 60 s ({e}): {}",
                        self.log_tail()
                    )));
                }
                Err(_) => std::thread::sleep(Duration::from_millis(20)),
            }
        }
    }

    fn log_tail(&self) -> String {
        let log = std::fs::read_to_string(self.dir.join("log")).unwrap_or_default();
        let lines: Vec<&str> = log.lines().collect();
        lines[lines.len().saturating_sub(10)..].join("\n")
    }

    /// Close the pipe (the supervisor stops the server and removes the
    /// directory) and wait for it; `remove` removes the directory here too,
    /// in case the supervisor could not.
    fn stop(&mut self, remove: bool) {
        if let Some(pipe) = self.pipe.take() {
            drop(pipe);
            let _ = self.supervisor.wait();
        }
        if remove {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }

    /// Stop the server (`pg_ctl stop -m fast`: its connections end, new
    /// ones are refused) until [`TestServer::resume`], as a restart or a
    /// failover of a real one does. For a server of a test's own
    /// ([`TestServer::start`]), not the shared one.
    pub fn pause(&self) -> io::Result<()> {
        let bin = pg_bin_dir()?;
        let out = as_owner(&bin.join("pg_ctl"))
            .arg("stop")
            .arg("-D")
            .arg(self.dir.join("data"))
            .args(["-m", "fast", "-w"])
            .output()?;
        if !out.status.success() {
            return Err(io::Error::other(format!(
                "pg_ctl stop failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            )));
        }
        Ok(())
    }

    /// Start the server [`TestServer::pause`] stopped, on the same port and
    /// directory (settings given at start are not given again), and wait
    /// until it accepts connections. Stopped as before when this is
    /// dropped.
    pub fn resume(&self) -> io::Result<()> {
        let bin = pg_bin_dir()?;
        let options = format!(
            "-p {} -k {} -c listen_addresses=127.0.0.1",
            self.port,
            self.dir.display()
        );
        let out = as_owner(&bin.join("pg_ctl"))
            .arg("start")
            .arg("-D")
            .arg(self.dir.join("data"))
            .arg("-o")
            .arg(options)
            .arg("-l")
            .arg(self.dir.join("log"))
            .arg("-w")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()?;
        if !out.success() {
            return Err(io::Error::other(format!(
                "pg_ctl start failed ({out}): {}",
                self.log_tail()
            )));
        }
        Ok(())
    }

    /// The temporary directory: the cluster (`data`), the socket, the log.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The superuser's password (TCP connections need it).
    pub fn password(&self) -> &str {
        &self.password
    }

    /// How long starting took: initdb, the server, until it accepted a
    /// connection.
    pub fn startup(&self) -> Duration {
        self.startup
    }

    /// `postgres://ci_slo@127.0.0.1:PORT/DATABASE`, without the password.
    pub fn url(&self, database: &str) -> String {
        format!(
            "postgres://{}@127.0.0.1:{}/{database}",
            TestServer::USER,
            self.port
        )
    }

    /// The maintenance database `postgres`, as the superuser.
    pub fn admin_config(&self) -> postgres::Config {
        self.config_for("postgres")
    }

    fn config_for(&self, database: &str) -> postgres::Config {
        let mut c = postgres::Config::new();
        c.host("127.0.0.1")
            .port(self.port)
            .user(TestServer::USER)
            .password(&self.password)
            .dbname(database)
            .connect_timeout(Duration::from_secs(10));
        c
    }

    /// A new, empty database (named after `hint` and unique in this server).
    pub fn database(&self, hint: &str) -> Result<TestDatabase, postgres::Error> {
        let n = DATABASES.fetch_add(1, Ordering::Relaxed);
        let clean: String = hint
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() {
                    c.to_ascii_lowercase()
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let name = format!("t{}_{n}_{clean}", std::process::id());
        let admin = self.admin_config();
        ConnectConfig::from(&admin)
            .connect()?
            .batch_execute(&format!("CREATE DATABASE \"{name}\""))?;
        Ok(TestDatabase {
            config: self.config_for(&name),
            name,
            admin,
        })
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop(true);
    }
}

/// A certificate authority made for a test, and a server certificate it
/// signed (rcgen, ECDSA P-256), all PEM.
pub struct TestCerts {
    /// The CA's certificate: what `sslrootcert` names.
    pub ca_pem: String,
    pub server_cert_pem: String,
    pub server_key_pem: String,
    /// The CA, to sign clients' certificates.
    issuer: rcgen::Issuer<'static, rcgen::KeyPair>,
}

impl TestCerts {
    /// A new CA, and a certificate for `names` (DNS names or IP
    /// addresses, e.g. `127.0.0.1`) signed by it.
    pub fn new(names: &[&str]) -> TestCerts {
        use rcgen::{
            BasicConstraints, CertificateParams, DnType, ExtendedKeyUsagePurpose, IsCa, Issuer,
            KeyPair, KeyUsagePurpose,
        };
        let ca_key = KeyPair::generate().expect("a CA key");
        let mut ca = CertificateParams::new(Vec::<String>::new()).expect("CA parameters");
        ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        // A name of its own: two test CAs are two issuers.
        static CAS: AtomicU64 = AtomicU64::new(0);
        ca.distinguished_name.push(
            DnType::CommonName,
            format!(
                "ci-slo-exporter test CA {} {}",
                std::process::id(),
                CAS.fetch_add(1, Ordering::Relaxed)
            ),
        );
        ca.key_usages = vec![
            KeyUsagePurpose::KeyCertSign,
            KeyUsagePurpose::CrlSign,
            KeyUsagePurpose::DigitalSignature,
        ];
        let ca_pem = ca.self_signed(&ca_key).expect("the CA certificate").pem();
        let issuer = Issuer::new(ca, ca_key);
        let key = KeyPair::generate().expect("a server key");
        let names: Vec<String> = names.iter().map(|n| n.to_string()).collect();
        let mut server = CertificateParams::new(names).expect("server parameters");
        server
            .distinguished_name
            .push(DnType::CommonName, "ci-slo-exporter test server");
        server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        let server_cert_pem = server
            .signed_by(&key, &issuer)
            .expect("the server certificate")
            .pem();
        TestCerts {
            ca_pem,
            server_cert_pem,
            server_key_pem: key.serialize_pem(),
            issuer,
        }
    }

    /// A client certificate for the user `user` (its common name, which a
    /// server's `cert` authentication compares with the user name) signed
    /// by this CA, and its key: (certificate, key), PEM.
    pub fn client(&self, user: &str) -> (String, String) {
        use rcgen::{CertificateParams, DnType, ExtendedKeyUsagePurpose, KeyPair};
        let key = KeyPair::generate().expect("a client key");
        let mut params = CertificateParams::new(Vec::<String>::new()).expect("client parameters");
        params.distinguished_name.push(DnType::CommonName, user);
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
        let cert = params
            .signed_by(&key, &self.issuer)
            .expect("the client certificate");
        (cert.pem(), key.serialize_pem())
    }

    /// Write the CA certificate to `dir/name`, for `sslrootcert`.
    pub fn write_ca(&self, dir: &Path, name: &str) -> io::Result<PathBuf> {
        let path = dir.join(name);
        std::fs::write(&path, &self.ca_pem)?;
        Ok(path)
    }
}

/// A random number without a dependency: the std hasher's random keys.
fn fastrand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u64(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() as u64)
            .unwrap_or_default(),
    );
    h.finish()
}
