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

use crate::PgStoreError;
use ci_slo_core::config::database::PostgresTarget;
use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
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

/// Everything a connection needs: the client configuration (without the
/// TLS parameters it does not know) and the TLS connector, built once (the
/// CA file is read when this is built, not per connection). Cheap to clone.
#[derive(Clone)]
pub struct ConnectConfig {
    pg: postgres::Config,
    mode: SslMode,
    roots: RootCerts,
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
            .finish()
    }
}

/// The TLS parameters taken out of the URL.
#[derive(Debug, Default, PartialEq, Eq)]
struct TlsParams {
    sslmode: Option<String>,
    sslrootcert: Option<String>,
}

/// Take `sslmode` and `sslrootcert` out of a `postgres://` URL's query (the
/// `postgres` crate refuses `verify-*` and does not know `sslrootcert`);
/// the rest is left as written.
fn split_tls_params(url: &str) -> Result<(String, TlsParams), String> {
    let mut parsed = url::Url::parse(url).map_err(|e| format!("not a URL ({e})"))?;
    let mut params = TlsParams::default();
    let mut kept: Vec<(String, String)> = Vec::new();
    for (k, v) in parsed.query_pairs() {
        match &*k {
            "sslmode" => params.sslmode = Some(v.into_owned()),
            "sslrootcert" => params.sslrootcert = Some(v.into_owned()),
            "sslcert" | "sslkey" | "sslpassword" | "sslcrl" | "sslcrldir" => {
                return Err(format!(
                    "{k} is not supported (client certificates and CRLs are not implemented; \
                     the server is checked with sslmode and sslrootcert)"
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
            let certs = CertificateDer::pem_file_iter(path)
                .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
                .map_err(|e| format!("sslrootcert {}: {e}", path.display()))?;
            if certs.is_empty() {
                return Err(format!(
                    "sslrootcert {}: no PEM certificate (-----BEGIN CERTIFICATE-----) in it",
                    path.display()
                ));
            }
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

/// The rustls configuration for `mode` and the trusted `roots` (ring).
fn tls_config(mode: SslMode, roots: &RootCerts) -> Result<rustls::ClientConfig, String> {
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
    Ok(builder
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth())
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
        )
    }

    /// The configuration for a URL (password included, if any), as
    /// [`ConnectConfig::from_target`]; errors name the URL as `url`.
    pub fn parse(url: &str) -> Result<ConnectConfig, PgStoreError> {
        let home = std::env::var_os("HOME").map(PathBuf::from);
        ConnectConfig::build(url, None, "url", home.as_deref())
    }

    fn build(
        url: &str,
        password: Option<&str>,
        key: &str,
        home: Option<&Path>,
    ) -> Result<ConnectConfig, PgStoreError> {
        let invalid = |reason: String| PgStoreError::Url {
            key: key.to_string(),
            reason,
        };
        let (url, params) = split_tls_params(url).map_err(invalid)?;
        let (mode, roots) = resolve(&params, home).map_err(invalid)?;
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
                tls_config(mode, &roots).map_err(invalid)?,
            )),
        };
        Ok(ConnectConfig {
            pg: config,
            mode,
            roots,
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
                tls_config(mode, &RootCerts::None).expect("TLS without roots needs no file"),
            )
        });
        ConnectConfig {
            pg: config.clone(),
            mode,
            roots: RootCerts::None,
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
        }
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
        let err = split_tls_params("postgres://u@h/db?sslcert=c.pem").unwrap_err();
        assert!(err.contains("sslcert is not supported"), "{err}");
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
        let err = ConnectConfig::build(&url, None, "store.url", Some(home.path()))
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
        let err = ConnectConfig::build(&url, None, "store.url", Some(home.path()))
            .unwrap_err()
            .to_string();
        assert!(err.contains("no PEM certificate"), "{err}");
        // The postgres crate's own options still work alongside.
        let c = ConnectConfig::build(
            "postgres://u@127.0.0.1/db?sslmode=require&connect_timeout=3",
            None,
            "store.url",
            Some(home.path()),
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
        )
        .unwrap();
        assert_eq!(
            c.client_config().get_ssl_mode(),
            postgres::config::SslMode::Disable
        );
    }
}
