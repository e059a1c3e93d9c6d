//! From the configuration's [`PostgresTarget`] to a [`ConnectConfig`]: the
//! URL (which the `postgres` crate parses) plus the password kept apart, the
//! settings every connection of the exporter shares, and TLS with libpq's
//! meanings of `sslmode` and `sslrootcert` (which the `postgres` crate does
//! not know: they are taken out of the URL here). Every connection of the
//! exporter (the store's writer and readers, the leadership's, the
//! migrations') is made by [`ConnectConfig::connect`] on a configuration
//! built from the URL (the store's writer and readers share one), so they
//! all speak TLS with the same checks or none does. A store's connection
//! closes off any async runtime (`Connection`).
//!
//! TLS is rustls (the `ring` provider, as the forge client) through
//! `tokio-postgres-rustls`:
//!
//! | `sslmode` | TLS | the server's certificate |
//! |---|---|---|
//! | `disable` | never | - |
//! | `prefer` (default) | if the server offers it, else plain | as `require` |
//! | `require` | always | not checked, unless a root certificate file is there (`sslrootcert`, or `~/.postgresql/root.crt`): then as `verify-ca`, as libpq does |
//! | `verify-ca` | always | signed by a CA of `sslrootcert` |
//! | `verify-full` | always | signed by a CA of `sslrootcert`, and valid for the host name (or IP address) of the URL |
//!
//! `sslrootcert` is a PEM file of CA certificates, or `system` for the
//! operating system's trust store (rustls-native-certs); unset, it is
//! `~/.postgresql/root.crt` when that file exists. `verify-ca` and
//! `verify-full` without any refuse to start. As libpq 16, `sslrootcert=system`
//! makes `verify-full` the default and refuses a weaker `sslmode` (any
//! public CA can sign a certificate for any name).
//!
//! A server that authenticates clients by certificate (`cert` in its
//! `pg_hba.conf`, or `clientcert=verify-full`) gets the certificate chain
//! of `sslcert` and the key of `sslkey` (PEM; unset, libpq's
//! `~/.postgresql/postgresql.crt` and `.key` when the certificate file
//! exists). As libpq, a key file others can read is refused. As libpq, the
//! variables `PGSSLMODE`, `PGSSLROOTCERT`, `PGSSLCERT` and `PGSSLKEY` stand
//! in for a parameter the URL does not give.

use crate::PgStoreError;
use ci_slo_core::config::database::PostgresTarget;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer, ServerName, UnixTime};
use rustls::{CertificateError, DigitallySignedStruct, RootCertStore, SignatureScheme};
use std::fmt;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// How long a connection attempt may take, unless the URL says
/// (`connect_timeout`).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// TCP keepalives of every connection, unless the URL sets its own
/// (`keepalives_idle`, ...): a database host that went away without a word
/// (a network cut, a failover that moved the address) is seen after about
/// a minute of silence, its connection closed and made again
/// (reconnect.rs), instead of after the kernel's two hours.
const KEEPALIVE_IDLE: Duration = Duration::from_secs(30);
const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(10);
const KEEPALIVE_RETRIES: u32 = 3;

/// How long data sent on a connection may stay unacknowledged before the
/// kernel gives the connection up, unless the URL says
/// (`tcp_user_timeout`): keepalives only probe an idle connection, so a
/// query sent to a host that went away would otherwise wait for the
/// kernel's retransmissions (about 15 minutes) before its error. Linux
/// only; elsewhere the setting is ignored by the driver.
const TCP_USER_TIMEOUT: Duration = Duration::from_secs(60);

/// libpq's `sslmode` values this exporter implements (`allow` is not one:
/// plain first, TLS only if refused, is what nobody wants).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SslMode {
    Disable,
    Prefer,
    Require,
    VerifyCa,
    VerifyFull,
}

impl SslMode {
    pub fn as_str(self) -> &'static str {
        match self {
            SslMode::Disable => "disable",
            SslMode::Prefer => "prefer",
            SslMode::Require => "require",
            SslMode::VerifyCa => "verify-ca",
            SslMode::VerifyFull => "verify-full",
        }
    }

    fn parse(text: &str) -> Option<SslMode> {
        Some(match text {
            "disable" => SslMode::Disable,
            "prefer" => SslMode::Prefer,
            "require" => SslMode::Require,
            "verify-ca" => SslMode::VerifyCa,
            "verify-full" => SslMode::VerifyFull,
            _ => return None,
        })
    }

    /// What the `postgres` crate does on the wire: it knows only whether
    /// TLS is off, tried, or required; the checks are the verifier's.
    fn wire(self) -> postgres::config::SslMode {
        match self {
            SslMode::Disable => postgres::config::SslMode::Disable,
            SslMode::Prefer => postgres::config::SslMode::Prefer,
            SslMode::Require | SslMode::VerifyCa | SslMode::VerifyFull => {
                postgres::config::SslMode::Require
            }
        }
    }
}

impl fmt::Display for SslMode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Where the trusted CA certificates came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RootCerts {
    /// None: the server's certificate is not checked.
    None,
    /// A PEM file (`sslrootcert=FILE`, or the default `~/.postgresql/root.crt`).
    File(PathBuf),
    /// The operating system's trust store (`sslrootcert=system`).
    System,
}

impl fmt::Display for RootCerts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RootCerts::None => f.write_str("none"),
            RootCerts::File(path) => write!(f, "{}", path.display()),
            RootCerts::System => f.write_str("system"),
        }
    }
}

/// The certificate the client shows, for servers that authenticate
/// clients by certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ClientCert {
    /// None is shown.
    None,
    /// The chain of `cert` (PEM, the client's first) with the key of `key`.
    Files { cert: PathBuf, key: PathBuf },
}

impl fmt::Display for ClientCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ClientCert::None => f.write_str("none"),
            ClientCert::Files { cert, .. } => write!(f, "{}", cert.display()),
        }
    }
}

/// Everything a connection needs: the client configuration (without the
/// TLS parameters it does not know) and the TLS connector, built once (the
/// CA file is read when this is built, not per connection). Cheap to clone.
#[derive(Clone)]
pub struct ConnectConfig {
    pg: postgres::Config,
    mode: SslMode,
    roots: RootCerts,
    client: ClientCert,
    /// `None` with `sslmode=disable`.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl fmt::Debug for ConnectConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // postgres::Config's Debug redacts the password.
        f.debug_struct("ConnectConfig")
            .field("pg", &self.pg)
            .field("sslmode", &self.mode)
            .field("sslrootcert", &self.roots)
            .field("sslcert", &self.client)
            .finish()
    }
}

/// The TLS parameters taken out of the URL.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
    sslcert: Option<String>,
    sslkey: Option<String>,
}

impl TlsParams {
    /// Each parameter the URL does not give from libpq's variable for it
    /// (`PGSSLMODE`, ...), as `var` finds them.
    fn or_env(mut self, var: &dyn Fn(&str) -> Option<String>) -> TlsParams {
        for (field, name) in [
            (&mut self.sslmode, "PGSSLMODE"),
            (&mut self.sslrootcert, "PGSSLROOTCERT"),
            (&mut self.sslcert, "PGSSLCERT"),
            (&mut self.sslkey, "PGSSLKEY"),
        ] {
            if field.is_none() {
                *field = var(name);
            }
        }
        self
    }
}

/// The process's environment, for [`TlsParams::or_env`].
fn process_env(name: &str) -> Option<String> {
    std::env::var(name).ok()
}

/// Take `sslmode`, `sslrootcert`, `sslcert` and `sslkey` out of a
/// `postgres://` URL's query (the `postgres` crate refuses `verify-*` and
/// knows none of the others); the rest is left as written.
fn split_tls_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    let mut params = TlsParams::default();
    let mut kept: Vec<(String, String)> = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match &*k {
            "sslmode" => params.sslmode = Some(v.into_owned()),
            "sslrootcert" => params.sslrootcert = Some(v.into_owned()),
            "sslcert" => params.sslcert = Some(v.into_owned()),
            "sslkey" => params.sslkey = Some(v.into_owned()),
            "sslpassword" => {
                return Err(
                    "sslpassword is not supported (encrypted client keys are not \
                            implemented): give sslkey a key file that is not encrypted"
                        .to_string(),
                );
            }
            "sslcrl" | "sslcrldir" => {
                return Err(format!(
                    "{k} is not supported (certificate revocation lists are not implemented)"
                ));
            }
            _ => kept.push((k.into_owned(), v.into_owned())),
        }
    }
    if params == TlsParams::default() {
        return Ok((url.to_string(), params));
    }
    if kept.is_empty() {
        parsed.set_query(None);
    } else {
        parsed.query_pairs_mut().clear().extend_pairs(kept);
    }
    Ok((parsed.to_string(), params))
}

/// libpq's default root certificate file, `~/.postgresql/root.crt`, if
/// `home` is known.
fn default_root_file(home: Option<&Path>) -> Option<PathBuf> {
    home.map(|h| h.join(".postgresql").join("root.crt"))
}

/// The client certificate libpq would show for these parameters: `sslcert`
/// and `sslkey`, each defaulting to `~/.postgresql/postgresql.crt` and
/// `.key`; none when no certificate is named and the default file does not
/// exist. Unlike libpq, a certificate file named and missing is an error
/// (libpq then silently shows none).
fn resolve_client(params: &TlsParams, home: Option<&Path>) -> Result<ClientCert, String> {
    let default = |name: &str| home.map(|h| h.join(".postgresql").join(name));
    let cert = match params.sslcert.as_deref() {
        Some("") => return Err("sslcert is empty: a PEM file of the client's certificate".into()),
        Some(file) => PathBuf::from(file),
        None => match default("postgresql.crt") {
            Some(file) if file.exists() => file,
            _ if params.sslkey.is_some() => {
                return Err(
                    "sslkey is given without sslcert: give the client's certificate \
                            too (or neither)"
                        .into(),
                );
            }
            _ => return Ok(ClientCert::None),
        },
    };
    let key = match params.sslkey.as_deref() {
        Some("") => return Err("sslkey is empty: a PEM file of the client's private key".into()),
        Some(file) => PathBuf::from(file),
        None => default("postgresql.key").ok_or_else(|| {
            "sslcert is given without sslkey, and HOME is not set for the default \
             ~/.postgresql/postgresql.key: give sslkey"
                .to_string()
        })?,
    };
    Ok(ClientCert::Files { cert, key })
}

/// libpq's rule for a private key file: not readable by group or others
/// (0600 or less), or, owned by root, readable by its group at most
/// (0640), so that a key others can read is noticed rather than used.
fn check_key_permissions(key: &Path) -> Result<(), String> {
    use std::os::unix::fs::MetadataExt;
    let meta = std::fs::metadata(key).map_err(|e| format!("sslkey {}: {e}", key.display()))?;
    let mode = meta.mode() & 0o777;
    let allowed = if meta.uid() == 0 { 0o640 } else { 0o600 };
    if mode & !allowed != 0 {
        return Err(format!(
            "sslkey {}: others can read it (permissions {mode:04o}); allow u=rw (0600) or less, \
             or u=rw,g=r (0640) or less for a file owned by root, as libpq does",
            key.display()
        ));
    }
    Ok(())
}

/// The PEM certificates of the file `path` names (for the parameter
/// `param`): at least one, or an error naming both.
fn read_certs(param: &str, path: &Path) -> Result<Vec<CertificateDer<'static>>, String> {
    let certs = CertificateDer::pem_file_iter(path)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("{param} {}: {e}", path.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "{param} {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
            path.display()
        ));
    }
    Ok(certs)
}

/// The client's certificate chain and private key, read and checked.
fn load_client(
    cert: &Path,
    key: &Path,
) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), String> {
    let chain = read_certs("sslcert", cert)?;
    check_key_permissions(key)?;
    let text =
        std::fs::read_to_string(key).map_err(|e| format!("sslkey {}: {e}", key.display()))?;
    if text.contains("ENCRYPTED") {
        return Err(format!(
            "sslkey {}: the key is encrypted, which is not supported (no sslpassword): \
             store it decrypted, readable by the exporter's user only",
            key.display()
        ));
    }
    let private = PrivateKeyDer::from_pem_slice(text.as_bytes()).map_err(|e| {
        format!(
            "sslkey {}: no PEM private key (PKCS#8, RSA or EC) in it ({e})",
            key.display()
        )
    })?;
    Ok((chain, private))
}

/// The mode and the roots libpq would use for these parameters; `home` is
/// where `~/.postgresql/root.crt` is looked for.
fn resolve(params: &TlsParams, home: Option<&Path>) -> Result<(SslMode, RootCerts), String> {
    let mode = match params.sslmode.as_deref() {
        None => None,
        Some(text) => Some(SslMode::parse(text).ok_or_else(|| {
            format!(
                "sslmode={text:?} is not one of disable, prefer, require, verify-ca, verify-full"
            )
        })?),
    };
    let roots = match params.sslrootcert.as_deref() {
        Some("system") => {
            // libpq 16: the system's store only with the host name checked.
            match mode {
                None | Some(SslMode::VerifyFull) | Some(SslMode::Disable) => {}
                Some(weak) => {
                    return Err(format!(
                        "sslmode={weak} may not be used with sslrootcert=system (any public CA \
                         can sign a certificate for any name): use sslmode=verify-full"
                    ));
                }
            }
            RootCerts::System
        }
        Some("") => return Err("sslrootcert is empty: a PEM file, or `system`".to_string()),
        Some(file) => RootCerts::File(PathBuf::from(file)),
        None => match default_root_file(home) {
            Some(file) if file.exists() => RootCerts::File(file),
            _ => RootCerts::None,
        },
    };
    let mode = mode.unwrap_or(if roots == RootCerts::System {
        SslMode::VerifyFull
    } else {
        SslMode::Prefer
    });
    if matches!(mode, SslMode::VerifyCa | SslMode::VerifyFull) && roots == RootCerts::None {
        let default = default_root_file(home)
            .map(|f| format!(" ({} does not exist)", f.display()))
            .unwrap_or_default();
        return Err(format!(
            "sslmode={mode} checks the server's certificate against trusted CAs, and none are \
             given: set sslrootcert to a PEM file of the CA certificates, or sslrootcert=system \
             for the operating system's trust store; the default ~/.postgresql/root.crt is not \
             there{default}"
        ));
    }
    if mode == SslMode::Disable {
        return Ok((mode, RootCerts::None));
    }
    Ok((mode, roots))
}

/// The trusted CAs.
fn load_roots(roots: &RootCerts) -> Result<RootCertStore, String> {
    let mut store = RootCertStore::empty();
    match roots {
        RootCerts::None => {}
        RootCerts::File(path) => {
            let certs = read_certs("sslrootcert", path)?;
            for cert in certs {
                store
                    .add(cert)
                    .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            }
        }
        RootCerts::System => {
            let found = rustls_native_certs::load_native_certs();
            let (added, _) = store.add_parsable_certificates(found.certs);
            if added == 0 {
                let why = found
                    .errors
                    .first()
                    .map(|e| format!(" ({e})"))
                    .unwrap_or_default();
                return Err(format!(
                    "sslrootcert=system: no CA certificate found in the operating system's \
                     trust store{why}; install it (Debian: ca-certificates) or give a file"
                ));
            }
        }
    }
    Ok(store)
}

/// The rustls configuration for `mode`, the trusted `roots` and the
/// certificate the client shows (ring).
fn tls_config(
    mode: SslMode,
    roots: &RootCerts,
    client: &ClientCert,
) -> Result<rustls::ClientConfig, String> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let builder = rustls::ClientConfig::builder_with_provider(provider.clone())
        .with_safe_default_protocol_versions()
        .map_err(|e| format!("TLS: {e}"))?;
    let verifier: Arc<dyn ServerCertVerifier> = if *roots == RootCerts::None {
        Arc::new(NoCertCheck(provider.signature_verification_algorithms))
    } else {
        let webpki = WebPkiServerVerifier::builder_with_provider(
            Arc::new(load_roots(roots)?),
            provider.clone(),
        )
        .build()
        .map_err(|e| format!("sslrootcert {roots}: {e}"))?;
        if mode == SslMode::VerifyFull {
            webpki
        } else {
            Arc::new(NoNameCheck(webpki))
        }
    };
    let builder = builder
        .dangerous()
        .with_custom_certificate_verifier(verifier);
    match client {
        ClientCert::None => Ok(builder.with_no_client_auth()),
        ClientCert::Files { cert, key } => {
            let (chain, private) = load_client(cert, key)?;
            builder.with_client_auth_cert(chain, private).map_err(|e| {
                format!(
                    "sslcert {} with sslkey {}: {e}",
                    cert.display(),
                    key.display()
                )
            })
        }
    }
}

impl ConnectConfig {
    /// The configuration for `target`: its URL and password, the
    /// exporter's settings, TLS as the URL's `sslmode` and `sslrootcert`
    /// say (the CA file read now).
    pub fn from_target(target: &PostgresTarget) -> Result<ConnectConfig, PgStoreError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        ConnectConfig::build(
            target.url(),
            target.password().map(|p| p.expose()),
            target.source(),
            home.as_deref(),
            &process_env,
        )
    }

    /// The configuration for a URL (password included, if any), as
    /// [`ConnectConfig::from_target`]; errors name the URL as `url`.
    pub fn parse(url: &str) -> Result<ConnectConfig, PgStoreError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        ConnectConfig::build(url, None, "url", home.as_deref(), &process_env)
    }

    fn build(
        url: &str,
        password: Option<&str>,
        key: &str,
        home: Option<&Path>,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<ConnectConfig, PgStoreError> {
        let invalid = |reason: String| PgStoreError::Url {
            key: key.to_string(),
            reason,
        };
        let (url, params) = split_tls_params(url).map_err(invalid)?;
        let params = params.or_env(env);
        let (mode, roots) = resolve(&params, home).map_err(invalid)?;
        let client = if mode == SslMode::Disable {
            ClientCert::None
        } else {
            resolve_client(&params, home).map_err(invalid)?
        };
        let mut config = postgres::Config::from_str(&url).map_err(|e| invalid(e.to_string()))?;
        if let Some(password) = password {
            config.password(password);
        }
        if config.get_connect_timeout().is_none() {
            config.connect_timeout(CONNECT_TIMEOUT);
        }
        // The server's NOTICEs (e.g. "relation already exists, skipping" of a
        // migration run again) are not news for the exporter's log.
        if config.get_options().is_none() {
            config.options("-c client_min_messages=warning");
        }
        if config.get_application_name().is_none() {
            config.application_name("ci-slo-exporter");
        }
        if !url.contains("keepalives") {
            config
                .keepalives(true)
                .keepalives_idle(KEEPALIVE_IDLE)
                .keepalives_interval(KEEPALIVE_INTERVAL)
                .keepalives_retries(KEEPALIVE_RETRIES);
        }
        if config.get_tcp_user_timeout().is_none() {
            config.tcp_user_timeout(TCP_USER_TIMEOUT);
        }
        config.ssl_mode(mode.wire());
        // libpq ignores sslmode on a unix socket (the server offers no TLS
        // there, and nothing leaves the machine).
        let hosts = config.get_hosts();
        if !hosts.is_empty()
            && hosts
                .iter()
                .all(|h| matches!(h, postgres::config::Host::Unix(_)))
        {
            config.ssl_mode(postgres::config::SslMode::Disable);
        }
        let tls = match mode {
            SslMode::Disable => None,
            _ => Some(tokio_postgres_rustls::MakeRustlsConnect::new(
                tls_config(mode, &roots, &client).map_err(invalid)?,
            )),
        };
        Ok(ConnectConfig {
            pg: config,
            mode,
            roots,
            client,
            tls,
        })
    }

    /// A configuration for a client configuration made elsewhere (tests):
    /// its `sslmode` (disable, prefer or require) as the `postgres` crate
    /// means it, the server's certificate not checked.
    pub fn from_client_config(config: &postgres::Config) -> ConnectConfig {
        let mode = match config.get_ssl_mode() {
            postgres::config::SslMode::Disable => SslMode::Disable,
            postgres::config::SslMode::Require => SslMode::Require,
            _ => SslMode::Prefer,
        };
        let tls = (mode != SslMode::Disable).then(|| {
            tokio_postgres_rustls::MakeRustlsConnect::new(
                tls_config(mode, &RootCerts::None, &ClientCert::None)
                    .expect("TLS without roots or a client certificate needs no file"),
            )
        });
        ConnectConfig {
            pg: config.clone(),
            mode,
            roots: RootCerts::None,
            client: ClientCert::None,
            tls,
        }
    }

    /// The client configuration (host, user, timeouts, ...).
    pub fn client_config(&self) -> &postgres::Config {
        &self.pg
    }

    /// The client configuration, to change (e.g. the leadership's
    /// keepalives).
    pub fn client_config_mut(&mut self) -> &mut postgres::Config {
        &mut self.pg
    }

    pub fn ssl_mode(&self) -> SslMode {
        self.mode
    }

    pub fn root_certs(&self) -> &RootCerts {
        &self.roots
    }

    pub fn client_cert(&self) -> &ClientCert {
        &self.client
    }

    /// A new connection.
    pub fn connect(&self) -> Result<postgres::Client, postgres::Error> {
        match &self.tls {
            None => self.pg.connect(postgres::NoTls),
            Some(tls) => self.pg.connect(tls.clone()),
        }
    }

    /// A new connection, naming the target (password masked) and saying
    /// what the TLS settings have to do with it when it fails.
    pub fn connect_named(
        &self,
        shown: &dyn fmt::Display,
    ) -> Result<postgres::Client, PgStoreError> {
        self.connect().map_err(|source| PgStoreError::Connect {
            target: shown.to_string(),
            hint: self.hint(&source),
            source,
        })
    }

    /// What to do about a failed connection, when TLS is why.
    fn hint(&self, e: &postgres::Error) -> String {
        let text = crate::describe(e);
        let hosts = || {
            self.pg
                .get_hosts()
                .iter()
                .map(|h| match h {
                    postgres::config::Host::Tcp(h) => h.clone(),
                    postgres::config::Host::Unix(p) => p.display().to_string(),
                })
                .collect::<Vec<_>>()
                .join(",")
        };
        if text.contains("no encryption") && text.contains("pg_hba.conf") {
            return format!(
                " (the server requires TLS and sslmode={}: use sslmode=verify-full with \
                 sslrootcert, or at least sslmode=require)",
                self.mode
            );
        }
        if text.contains("server does not support TLS") {
            return format!(
                " (sslmode={} needs TLS and the server does not offer it: turn ssl on at the \
                 server, or lower sslmode)",
                self.mode
            );
        }
        // BadSignature: a CA of the same name, not the one that signed it.
        if text.contains("UnknownIssuer") || text.contains("BadSignature") {
            return format!(
                " (sslmode={}: the server's certificate is not signed by a CA of sslrootcert \
                 {}: give the CA that signed it)",
                self.mode, self.roots
            );
        }
        if text.contains("not valid for name") || text.contains("NotValidForName") {
            return format!(
                " (sslmode=verify-full: the server's certificate is not valid for the host name \
                 {}: connect by a name the certificate holds, or use sslmode=verify-ca to check \
                 only the CA)",
                hosts()
            );
        }
        if text.contains("requires a valid client certificate") {
            return format!(
                " (the server authenticates this user by certificate and sslcert is {}: give \
                 sslcert and sslkey, a certificate signed by a CA of the server's ssl_ca_file)",
                self.client
            );
        }
        if text.contains("received fatal alert") && self.client != ClientCert::None {
            return format!(
                " (the server refused the client certificate of sslcert {}: it must be signed \
                 by a CA of the server's ssl_ca_file, and be valid now)",
                self.client
            );
        }
        if text.contains("certificate authentication failed") {
            return format!(
                " (the server checked the certificate of sslcert {} and it is not this user's: \
                 its common name (CN) must be the user name, or the server's pg_ident.conf map it)",
                self.client
            );
        }
        if text.contains("TLS") || text.contains("certificate") {
            return format!(" (sslmode={}, sslrootcert {})", self.mode, self.roots);
        }
        String::new()
    }
}

impl From<&postgres::Config> for ConnectConfig {
    fn from(config: &postgres::Config) -> ConnectConfig {
        ConnectConfig::from_client_config(config)
    }
}

impl From<postgres::Config> for ConnectConfig {
    fn from(config: postgres::Config) -> ConnectConfig {
        ConnectConfig::from_client_config(&config)
    }
}

impl From<&ConnectConfig> for ConnectConfig {
    fn from(config: &ConnectConfig) -> ConnectConfig {
        config.clone()
    }
}

/// `require` and `prefer` without a CA: any certificate, but the
/// handshake's signatures are still checked (against the certificate the
/// server sent: an eavesdropper is kept out, a man in the middle is not).
#[derive(Debug)]
struct NoCertCheck(WebPkiSupportedAlgorithms);

impl ServerCertVerifier for NoCertCheck {
    fn verify_server_cert(
        &self,
        _end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.0)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.0)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_schemes()
    }
}

/// `verify-ca` (and `require` with a CA): the chain to a trusted CA and
/// the validity dates are checked, the host name is not.
#[derive(Debug)]
struct NoNameCheck(Arc<WebPkiServerVerifier>);

impl ServerCertVerifier for NoNameCheck {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        // webpki checks the chain first and the name last: a name error
        // means the chain was good.
        match self
            .0
            .verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now)
        {
            Err(rustls::Error::InvalidCertificate(
                CertificateError::NotValidForName | CertificateError::NotValidForNameContext { .. },
            )) => Ok(ServerCertVerified::assertion()),
            other => other,
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        self.0.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.0.supported_verify_schemes()
    }
}

/// A connection that closes outside any async runtime. The synchronous
/// `postgres::Client` drives its connection on a tokio runtime of its own:
/// closing it (its `Drop`) blocks on that runtime, and dropping it drops
/// that runtime, both of which panic on a thread of another runtime ("Cannot
/// start a runtime from within a runtime"). The exporter's stores are
/// dropped wherever their last handle goes, an async task of `serve`'s
/// runtime at shutdown included, so a connection dropped inside a runtime's
/// context is closed on a plain thread of its own (waited for: the server
/// has seen it close when the drop returns).
pub(crate) struct Connection(Option<postgres::Client>);

impl Connection {
    pub(crate) fn new(client: postgres::Client) -> Connection {
        Connection(Some(client))
    }
}

impl std::ops::Deref for Connection {
    type Target = postgres::Client;

    fn deref(&self) -> &postgres::Client {
        self.0.as_ref().expect("a connection is open until dropped")
    }
}

impl std::ops::DerefMut for Connection {
    fn deref_mut(&mut self) -> &mut postgres::Client {
        self.0.as_mut().expect("a connection is open until dropped")
    }
}

impl Drop for Connection {
    fn drop(&mut self) {
        if let Some(client) = self.0.take() {
            close(client);
        }
    }
}

/// Close `client`: here, or on a plain thread when this thread is in a
/// tokio runtime's context (see [`Connection`]).
fn close(client: postgres::Client) {
    if tokio::runtime::Handle::try_current().is_err() {
        drop(client);
        return;
    }
    // Shared with the thread, so that when no thread can start the client
    // is taken back here rather than dropped with the failed spawn's closure.
    let slot = std::sync::Arc::new(std::sync::Mutex::new(Some(client)));
    let theirs = slot.clone();
    let closing = std::thread::Builder::new()
        .name("pg-close".into())
        .spawn(move || {
            let client = theirs.lock().ok().and_then(|mut c| c.take());
            drop(client);
        });
    match closing {
        Ok(thread) => {
            let _ = thread.join();
        }
        Err(e) => {
            // Left open: it closes when the process exits.
            if let Some(client) = slot.lock().ok().and_then(|mut c| c.take()) {
                std::mem::forget(client);
            }
            tracing::warn!(error = %e, "cannot start a thread to close a PostgreSQL connection; left open");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_connection_has_keepalives_of_a_minute_unless_the_url_sets_its_own() {
        let ours = ConnectConfig::parse("postgres://u@db.example/ci?sslmode=disable").unwrap();
        let c = ours.client_config();
        assert!(c.get_keepalives());
        assert_eq!(c.get_keepalives_idle(), KEEPALIVE_IDLE);
        assert_eq!(c.get_keepalives_interval(), Some(KEEPALIVE_INTERVAL));
        assert_eq!(c.get_keepalives_retries(), Some(KEEPALIVE_RETRIES));
        let theirs =
            ConnectConfig::parse("postgres://u@db.example/ci?sslmode=disable&keepalives_idle=7")
                .unwrap();
        assert_eq!(
            theirs.client_config().get_keepalives_idle(),
            Duration::from_secs(7)
        );
    }

    #[test]
    fn unacknowledged_data_gives_a_connection_up_after_a_minute_unless_the_url_says() {
        let ours = ConnectConfig::parse("postgres://u@db.example/ci?sslmode=disable").unwrap();
        assert_eq!(
            ours.client_config().get_tcp_user_timeout(),
            Some(&TCP_USER_TIMEOUT)
        );
        let theirs =
            ConnectConfig::parse("postgres://u@db.example/ci?sslmode=disable&tcp_user_timeout=5")
                .unwrap();
        assert_eq!(
            theirs.client_config().get_tcp_user_timeout(),
            Some(&Duration::from_secs(5))
        );
    }

    fn params(mode: Option<&str>, root: Option<&str>) -> TlsParams {
        TlsParams {
            sslmode: mode.map(str::to_string),
            sslrootcert: root.map(str::to_string),
            ..TlsParams::default()
        }
    }

    /// No environment: only the URL says.
    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn the_tls_parameters_are_taken_out_of_the_url_and_the_rest_kept() {
        let (url, p) = split_tls_params(
            "postgres://u@h:5432/db?sslmode=verify-full&connect_timeout=3&sslrootcert=%2Fetc%2Fca.pem",
        )
        .unwrap();
        assert_eq!(url, "postgres://u@h:5432/db?connect_timeout=3");
        assert_eq!(p, params(Some("verify-full"), Some("/etc/ca.pem")));
        let (url, p) = split_tls_params("postgres://u@h/db?sslmode=require").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(p, params(Some("require"), None));
        let (url, p) = split_tls_params("postgres://u@h/db?application_name=x").unwrap();
        assert_eq!(url, "postgres://u@h/db?application_name=x");
        assert_eq!(p, TlsParams::default());
        let (url, p) = split_tls_params("postgres://u@h/db?sslcert=c.pem&sslkey=k.pem").unwrap();
        assert_eq!(url, "postgres://u@h/db");
        assert_eq!(p.sslcert.as_deref(), Some("c.pem"));
        assert_eq!(p.sslkey.as_deref(), Some("k.pem"));
        let err = split_tls_params("postgres://u@h/db?sslpassword=x").unwrap_err();
        assert!(err.contains("sslpassword is not supported"), "{err}");
        let err = split_tls_params("postgres://u@h/db?sslcrl=c.pem").unwrap_err();
        assert!(err.contains("sslcrl is not supported"), "{err}");
    }

    #[test]
    fn sslmode_and_sslrootcert_mean_what_they_mean_to_libpq() {
        let home = tempfile::tempdir().unwrap();
        let none = Some(home.path());
        // Defaults: prefer, no CA.
        assert_eq!(
            resolve(&params(None, None), none).unwrap(),
            (SslMode::Prefer, RootCerts::None)
        );
        assert_eq!(
            resolve(&params(Some("require"), None), none).unwrap(),
            (SslMode::Require, RootCerts::None)
        );
        // verify-* need a CA.
        let err = resolve(&params(Some("verify-full"), None), none).unwrap_err();
        assert!(err.contains("sslrootcert"), "{err}");
        assert!(err.contains("root.crt does not exist"), "{err}");
        assert!(resolve(&params(Some("verify-ca"), None), None).is_err());
        // system: verify-full by default, nothing weaker.
        assert_eq!(
            resolve(&params(None, Some("system")), none).unwrap(),
            (SslMode::VerifyFull, RootCerts::System)
        );
        let err = resolve(&params(Some("require"), Some("system")), none).unwrap_err();
        assert!(err.contains("verify-full"), "{err}");
        // A file.
        assert_eq!(
            resolve(&params(Some("verify-ca"), Some("/ca.pem")), none).unwrap(),
            (SslMode::VerifyCa, RootCerts::File("/ca.pem".into()))
        );
        // Unknown modes are refused, with the list.
        let err = resolve(&params(Some("allow"), None), none).unwrap_err();
        assert!(err.contains("verify-full"), "{err}");
        // ~/.postgresql/root.crt, when there, is the default CA file.
        let default = home.path().join(".postgresql").join("root.crt");
        std::fs::create_dir_all(default.parent().unwrap()).unwrap();
        std::fs::write(&default, "").unwrap();
        assert_eq!(
            resolve(&params(Some("verify-full"), None), none).unwrap(),
            (SslMode::VerifyFull, RootCerts::File(default.clone()))
        );
        assert_eq!(
            resolve(&params(None, None), none).unwrap(),
            (SslMode::Prefer, RootCerts::File(default))
        );
        // disable ignores any CA.
        assert_eq!(
            resolve(&params(Some("disable"), None), none).unwrap(),
            (SslMode::Disable, RootCerts::None)
        );
    }

    #[test]
    fn a_ca_file_that_is_missing_or_holds_no_certificate_is_refused_when_built() {
        let home = tempfile::tempdir().unwrap();
        let missing = home.path().join("missing.pem");
        let url = format!(
            "postgres://u@127.0.0.1/db?sslmode=verify-full&sslrootcert={}",
            missing.display()
        );
        let err = ConnectConfig::build(&url, None, "store.url", Some(home.path()), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("store.url"), "{err}");
        assert!(err.contains("missing.pem"), "{err}");
        let empty = home.path().join("empty.pem");
        std::fs::write(&empty, "not a certificate\n").unwrap();
        let url = format!(
            "postgres://u@127.0.0.1/db?sslmode=verify-ca&sslrootcert={}",
            empty.display()
        );
        let err = ConnectConfig::build(&url, None, "store.url", Some(home.path()), &no_env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        // The postgres crate's own options still work alongside.
        let c = ConnectConfig::build(
            "postgres://u@127.0.0.1/db?sslmode=require&connect_timeout=3",
            None,
            "store.url",
            Some(home.path()),
            &no_env,
        )
        .unwrap();
        assert_eq!(c.ssl_mode(), SslMode::Require);
        assert_eq!(
            c.client_config().get_connect_timeout(),
            Some(&Duration::from_secs(3))
        );
        assert_eq!(
            c.client_config().get_ssl_mode(),
            postgres::config::SslMode::Require
        );
        // Not on a unix socket, as libpq.
        let c = ConnectConfig::build(
            "postgres://u@%2Frun%2Fpostgresql/db?sslmode=require",
            None,
            "store.url",
            Some(home.path()),
            &no_env,
        )
        .unwrap();
        assert_eq!(
            c.client_config().get_ssl_mode(),
            postgres::config::SslMode::Disable
        );
    }

    #[test]
    fn libpqs_variables_stand_in_for_parameters_the_url_does_not_give() {
        let env = |name: &str| match name {
            "PGSSLMODE" => Some("require".to_string()),
            "PGSSLROOTCERT" => Some("/from/env.pem".to_string()),
            _ => None,
        };
        let p = params(None, None).or_env(&env);
        assert_eq!(p, params(Some("require"), Some("/from/env.pem")));
        // The URL's own value wins.
        let p = params(Some("verify-full"), None).or_env(&env);
        assert_eq!(p, params(Some("verify-full"), Some("/from/env.pem")));
        let home = tempfile::tempdir().unwrap();
        let c = ConnectConfig::build(
            "postgres://u@127.0.0.1/db?sslmode=disable",
            None,
            "store.url",
            Some(home.path()),
            &env,
        )
        .unwrap();
        assert_eq!(c.ssl_mode(), SslMode::Disable);
        let env = |name: &str| (name == "PGSSLMODE").then(|| "verify-ca".to_string());
        let err = ConnectConfig::build(
            "postgres://u@127.0.0.1/db",
            None,
            "store.url",
            Some(home.path()),
            &env,
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("sslmode=verify-ca checks"), "{err}");
    }

    #[test]
    fn the_client_certificate_is_sslcert_and_sslkey_or_libpqs_default_files() {
        let home = tempfile::tempdir().unwrap();
        let h = Some(home.path());
        let with = |cert: Option<&str>, key: Option<&str>| TlsParams {
            sslcert: cert.map(str::to_string),
            sslkey: key.map(str::to_string),
            ..TlsParams::default()
        };
        assert_eq!(
            resolve_client(&with(None, None), h).unwrap(),
            ClientCert::None
        );
        assert_eq!(
            resolve_client(&with(Some("/c.pem"), Some("/k.pem")), h).unwrap(),
            ClientCert::Files {
                cert: "/c.pem".into(),
                key: "/k.pem".into()
            }
        );
        let err = resolve_client(&with(None, Some("/k.pem")), h).unwrap_err();
        assert!(err.contains("sslkey is given without sslcert"), "{err}");
        // ~/.postgresql/postgresql.crt, when there, with its .key.
        let dir = home.path().join(".postgresql");
        std::fs::create_dir_all(&dir).unwrap();
        std::fs::write(dir.join("postgresql.crt"), "").unwrap();
        assert_eq!(
            resolve_client(&with(None, None), h).unwrap(),
            ClientCert::Files {
                cert: dir.join("postgresql.crt"),
                key: dir.join("postgresql.key")
            }
        );
    }

    #[test]
    fn a_client_key_others_can_read_or_an_encrypted_one_is_refused_when_built() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let key = rcgen::KeyPair::generate().unwrap();
        let cert = rcgen::CertificateParams::new(vec!["client".to_string()])
            .unwrap()
            .self_signed(&key)
            .unwrap();
        let cert_file = dir.path().join("client.crt");
        let key_file = dir.path().join("client.key");
        std::fs::write(&cert_file, cert.pem()).unwrap();
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        let url = format!(
            "postgres://u@127.0.0.1/db?sslmode=require&sslcert={}&sslkey={}",
            cert_file.display(),
            key_file.display()
        );
        let build = || ConnectConfig::build(&url, None, "store.url", Some(dir.path()), &no_env);
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o644)).unwrap();
        let owner_is_root = {
            use std::os::unix::fs::MetadataExt;
            std::fs::metadata(&key_file).unwrap().uid() == 0
        };
        let err = build().unwrap_err().to_string();
        assert!(
            err.contains("others can read it (permissions 0644)"),
            "{err}"
        );
        if owner_is_root {
            std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o640)).unwrap();
            assert!(build().is_ok());
        }
        std::fs::set_permissions(&key_file, std::fs::Permissions::from_mode(0o600)).unwrap();
        let c = build().unwrap();
        assert_eq!(
            c.client_cert(),
            &ClientCert::Files {
                cert: cert_file.clone(),
                key: key_file.clone()
            }
        );
        // Encrypted keys need sslpassword, which is not supported.
        std::fs::write(
            &key_file,
            "-----BEGIN ENCRYPTED PRIVATE KEY-----\nAAAA\n-----END ENCRYPTED PRIVATE KEY-----\n",
        )
        .unwrap();
        let err = build().unwrap_err().to_string();
        assert!(err.contains("the key is encrypted"), "{err}");
        // A certificate file without a certificate.
        std::fs::write(&key_file, key.serialize_pem()).unwrap();
        std::fs::write(&cert_file, "nothing\n").unwrap();
        let err = build().unwrap_err().to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        // sslmode=disable shows no certificate, whatever is named.
        let url = url.replace("sslmode=require", "sslmode=disable");
        let c = ConnectConfig::build(&url, None, "store.url", Some(dir.path()), &no_env).unwrap();
        assert_eq!(c.client_cert(), &ClientCert::None);
    }
}
