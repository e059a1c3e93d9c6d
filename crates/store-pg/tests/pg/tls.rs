//! TLS to PostgreSQL with libpq's `sslmode` and `sslrootcert`, against a
//! test server started with `ssl=on` and a certificate from a CA made here
//! (`TestCerts`), which refuses TCP connections without TLS (`hostssl`).

use ci_slo_store_pg::PgStore;
use ci_slo_store_pg::connect::{ConnectConfig, SslMode};
use ci_slo_store_pg::testing::{TestCerts, TestServer};
use std::path::PathBuf;
use std::sync::OnceLock;

/// The TLS server every test here shares, with its CA's file and another
/// CA's (which signed nothing the server has).
struct Tls {
    server: TestServer,
    ca: PathBuf,
    wrong_ca: PathBuf,
    _files: tempfile::TempDir,
}

fn tls() -> &'static Tls {
    static TLS: OnceLock<Tls> = OnceLock::new();
    TLS.get_or_init(|| {
        let certs = TestCerts::new(&["127.0.0.1", "db.test"]);
        let other = TestCerts::new(&["127.0.0.1", "db.test"]);
        let files = tempfile::tempdir().unwrap();
        let server =
            TestServer::start_tls(&certs.server_cert_pem, &certs.server_key_pem, true).unwrap();
        Tls {
            ca: certs.write_ca(files.path(), "ca.pem").unwrap(),
            wrong_ca: other.write_ca(files.path(), "wrong-ca.pem").unwrap(),
            server,
            _files: files,
        }
    })
}

/// `postgres://ci_slo:PASSWORD@HOST:PORT/DATABASE?QUERY`.
fn url(server: &TestServer, host: &str, database: &str, query: &str) -> String {
    format!(
        "postgres://{}:{}@{host}:{}/{database}?{query}",
        TestServer::USER,
        server.password(),
        server.port()
    )
}

/// Whether this connection is TLS, as the server sees it.
fn is_tls(client: &mut postgres::Client) -> bool {
    client
        .query_one(
            "SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()",
            &[],
        )
        .unwrap()
        .get(0)
}

/// Connect as the exporter does, the error as it prints.
fn connect(url: &str) -> Result<postgres::Client, String> {
    let config = ConnectConfig::parse(url).map_err(|e| e.to_string())?;
    config
        .connect_named(&"the test database")
        .map_err(|e| e.to_string())
}

#[test]
fn require_connects_over_tls_without_checking_the_certificate() {
    let t = tls();
    let db = t.server.database("tls_require").unwrap();
    let url = url(&t.server, "127.0.0.1", db.name(), "sslmode=require");
    let config = ConnectConfig::parse(&url).unwrap();
    assert_eq!(config.ssl_mode(), SslMode::Require);
    let mut client = config.connect().unwrap();
    assert!(is_tls(&mut client));
    // The store migrates and writes over it.
    let mut store = PgStore::open_with(&config, &"tls", &mut |_| {}).unwrap();
    assert!(store.schema_version().unwrap() > 0);
    assert!(is_tls(store.client()));
}

#[test]
fn the_default_sslmode_prefer_uses_tls_when_the_server_offers_it() {
    let t = tls();
    let db = t.server.database("tls_prefer").unwrap();
    let url = url(&t.server, "127.0.0.1", db.name(), "connect_timeout=5");
    let config = ConnectConfig::parse(&url).unwrap();
    assert_eq!(config.ssl_mode(), SslMode::Prefer);
    assert!(is_tls(&mut config.connect().unwrap()));
}

#[test]
fn verify_full_with_the_servers_ca_connects_by_ip_address_or_host_name() {
    let t = tls();
    let db = t.server.database("tls_verify_full").unwrap();
    let ca = t.ca.display();
    // The certificate holds the IP address 127.0.0.1 ...
    let by_ip = url(
        &t.server,
        "127.0.0.1",
        db.name(),
        &format!("sslmode=verify-full&sslrootcert={ca}"),
    );
    assert!(is_tls(&mut connect(&by_ip).unwrap()));
    // ... and the name db.test (reached at hostaddr: the name is what is
    // checked).
    let by_name = url(
        &t.server,
        "db.test",
        db.name(),
        &format!("hostaddr=127.0.0.1&sslmode=verify-full&sslrootcert={ca}"),
    );
    assert!(is_tls(&mut connect(&by_name).unwrap()));
}

#[test]
fn verify_full_with_another_ca_fails_saying_the_certificate_is_not_signed_by_it() {
    let t = tls();
    let db = t.server.database("tls_wrong_ca").unwrap();
    for mode in ["verify-full", "verify-ca", "require"] {
        let url = url(
            &t.server,
            "127.0.0.1",
            db.name(),
            &format!("sslmode={mode}&sslrootcert={}", t.wrong_ca.display()),
        );
        let err = connect(&url).err().expect("refused");
        assert!(
            err.contains("cannot connect to PostgreSQL the test database"),
            "{err}"
        );
        assert!(err.contains("invalid peer certificate"), "{err}");
        assert!(
            err.contains(&format!(
                "not signed by a CA of sslrootcert {}",
                t.wrong_ca.display()
            )),
            "{mode}: {err}"
        );
    }
}

#[test]
fn verify_full_with_a_host_name_the_certificate_lacks_fails_and_verify_ca_connects() {
    let t = tls();
    let db = t.server.database("tls_wrong_host").unwrap();
    let query = |mode: &str| {
        format!(
            "hostaddr=127.0.0.1&sslmode={mode}&sslrootcert={}",
            t.ca.display()
        )
    };
    let full = url(&t.server, "wrong.test", db.name(), &query("verify-full"));
    let err = connect(&full).err().expect("refused");
    assert!(err.contains("not valid for name"), "{err}");
    assert!(
        err.contains("not valid for the host name wrong.test"),
        "{err}"
    );
    assert!(err.contains("sslmode=verify-ca"), "{err}");
    // verify-ca checks the CA only.
    let ca_only = url(&t.server, "wrong.test", db.name(), &query("verify-ca"));
    assert!(is_tls(&mut connect(&ca_only).unwrap()));
}

#[test]
fn disable_against_a_server_that_requires_tls_fails_saying_so() {
    let t = tls();
    let db = t.server.database("tls_disable").unwrap();
    let url = url(&t.server, "127.0.0.1", db.name(), "sslmode=disable");
    let err = connect(&url).err().expect("refused");
    // The server's word, and what to do.
    assert!(err.contains("no pg_hba.conf entry"), "{err}");
    assert!(err.contains("no encryption"), "{err}");
    assert!(
        err.contains("the server requires TLS and sslmode=disable"),
        "{err}"
    );
}

#[test]
fn prefer_falls_back_to_plain_on_a_server_without_tls_and_require_fails() {
    let server = TestServer::shared();
    let db = server.database("tls_plain").unwrap();
    let prefer = url(server, "127.0.0.1", db.name(), "sslmode=prefer");
    assert!(!is_tls(&mut connect(&prefer).unwrap()));
    let require = url(server, "127.0.0.1", db.name(), "sslmode=require");
    let err = connect(&require).err().expect("refused");
    assert!(err.contains("server does not support TLS"), "{err}");
    assert!(err.contains("sslmode=require needs TLS"), "{err}");
}

#[test]
fn verify_modes_without_a_ca_or_with_a_bad_one_are_refused_before_connecting() {
    let t = tls();
    let err = ConnectConfig::parse(&url(
        &t.server,
        "127.0.0.1",
        "postgres",
        "sslmode=verify-full&sslrootcert=/nonexistent/ca.pem",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    let err = ConnectConfig::parse(&url(
        &t.server,
        "127.0.0.1",
        "postgres",
        "sslmode=require&sslrootcert=system",
    ))
    .unwrap_err()
    .to_string();
    assert!(err.contains("use sslmode=verify-full"), "{err}");
}

#[test]
fn sslrootcert_system_checks_against_the_operating_systems_cas() {
    // The test CA is in no system store: the system's CAs were loaded (or
    // the error would say none were found) and none signed the server's.
    let t = tls();
    let db = t.server.database("tls_system").unwrap();
    let url = url(&t.server, "127.0.0.1", db.name(), "sslrootcert=system");
    let config = ConnectConfig::parse(&url).unwrap();
    assert_eq!(config.ssl_mode(), SslMode::VerifyFull);
    let err = connect(&url).err().expect("refused");
    assert!(
        err.contains("not signed by a CA of sslrootcert system"),
        "{err}"
    );
}

/// Write `text` to `dir/name`, readable by its owner only (as a key must be).
fn private_file(dir: &std::path::Path, name: &str, text: &str) -> PathBuf {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
    path
}

#[test]
fn a_server_that_authenticates_by_certificate_takes_sslcert_and_sslkey_and_says_what_is_wrong() {
    const USER: &str = "ci_cert";
    let certs = TestCerts::new(&["127.0.0.1"]);
    let other = TestCerts::new(&["127.0.0.1"]);
    let server = TestServer::start_tls_cert_auth(&certs, USER).unwrap();
    let db = server.database("tls_cert_auth").unwrap();
    db.connect()
        .unwrap()
        .batch_execute(&format!(
            "CREATE ROLE {USER} LOGIN; GRANT ALL ON SCHEMA public TO {USER}"
        ))
        .unwrap();
    let files = tempfile::tempdir().unwrap();
    let dir = files.path();
    let ca = certs.write_ca(dir, "ca.pem").unwrap();
    let (cert, key) = certs.client(USER);
    let (cert, key) = (
        private_file(dir, "client.crt", &cert),
        private_file(dir, "client.key", &key),
    );
    let (someone, someones_key) = certs.client("someone_else");
    let (someone, someones_key) = (
        private_file(dir, "someone.crt", &someone),
        private_file(dir, "someone.key", &someones_key),
    );
    let (stranger, strangers_key) = other.client(USER);
    let (stranger, strangers_key) = (
        private_file(dir, "stranger.crt", &stranger),
        private_file(dir, "stranger.key", &strangers_key),
    );
    let url_of = |cert: &std::path::Path, key: &std::path::Path| {
        format!(
            "postgres://{USER}@127.0.0.1:{}/{}?sslmode=verify-full&sslrootcert={}&sslcert={}&sslkey={}",
            server.port(),
            db.name(),
            ca.display(),
            cert.display(),
            key.display()
        )
    };

    // The user's certificate: in, over TLS, as that user, no password; the
    // store migrates and writes over it.
    let config = ConnectConfig::parse(&url_of(&cert, &key)).unwrap();
    let mut client = config.connect_named(&"the test database").unwrap();
    assert!(is_tls(&mut client));
    let user: String = client
        .query_one("SELECT current_user::text", &[])
        .unwrap()
        .get(0);
    assert_eq!(user, USER);
    let mut store = PgStore::open_with(&config, &"cert", &mut |_| {}).unwrap();
    assert!(store.schema_version().unwrap() > 0);
    assert!(is_tls(store.client()));

    // No certificate: the server's refusal, and what to give.
    let bare = format!(
        "postgres://{USER}@127.0.0.1:{}/{}?sslmode=verify-full&sslrootcert={}",
        server.port(),
        db.name(),
        ca.display()
    );
    let err = connect(&bare).err().expect("refused");
    assert!(err.contains("give sslcert and sslkey"), "{err}");

    // Another user's certificate, signed by the right CA.
    let err = connect(&url_of(&someone, &someones_key))
        .err()
        .expect("refused");
    assert!(
        err.contains("its common name (CN) must be the user name"),
        "{err}"
    );

    // The user's name, signed by a CA the server does not trust: the
    // handshake fails.
    let err = connect(&url_of(&stranger, &strangers_key))
        .err()
        .expect("refused");
    assert!(
        err.contains("refused the client certificate of sslcert"),
        "{err}"
    );
    assert!(connect(&url_of(&cert, &key)).is_ok());
}
