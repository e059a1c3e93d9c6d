//! Which database the store lives in: the embedded SQLite file
//! (`[store] path`, the default) or a PostgreSQL server (`[store] url`, or
//! the `CI_SLO_DATABASE_URL` environment variable, which wins).
//!
//! The password is a secret like the others (see the module above): never
//! in the config file, only in `CI_SLO_DATABASE_URL` or in the file
//! `[store] password_file` names, and never printed: [`PostgresTarget`]
//! keeps it apart from the URL, and its `Debug` and `Display` show `***`.

use super::{ConfigError, Secret, StoreConfig, invalid};
use std::fmt;
use std::path::PathBuf;

/// The environment variable holding a full PostgreSQL URL (password
/// included, if the server wants one); it takes precedence over `store.url`.
pub const DATABASE_URL_ENV: &str = "CI_SLO_DATABASE_URL";

/// Where the store lives.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreBackend {
    /// The embedded SQLite file (`store.path`).
    Sqlite(PathBuf),
    /// A PostgreSQL database.
    Postgres(PostgresTarget),
}

/// A PostgreSQL database to connect to: its URL without the password, and
/// the password apart.
#[derive(Clone, PartialEq, Eq)]
pub struct PostgresTarget {
    /// `postgres://user@host:port/db?options`, never with a password.
    url: url::Url,
    password: Option<Secret>,
    /// Where the URL came from, for messages: `store.url` or the variable.
    source: &'static str,
}

impl PostgresTarget {
    /// The URL without its password (safe to print).
    pub fn url(&self) -> &str {
        self.url.as_str()
    }

    pub fn password(&self) -> Option<&Secret> {
        self.password.as_ref()
    }

    /// `store.url` or `CI_SLO_DATABASE_URL`.
    pub fn source(&self) -> &'static str {
        self.source
    }
}

/// The URL with `***` where the password goes.
impl fmt::Display for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.password.is_none() {
            return f.write_str(self.url.as_str());
        }
        let mut shown = self.url.clone();
        // Only URLs with a host can carry a user and password.
        if shown.set_password(Some("***")).is_err() {
            return write!(f, "{} (password ***)", self.url);
        }
        f.write_str(shown.as_str())
    }
}

impl fmt::Debug for PostgresTarget {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PostgresTarget")
            .field("url", &self.url.as_str())
            .field("password", &self.password)
            .field("source", &self.source)
            .finish()
    }
}

/// Parse a PostgreSQL URL; the message never repeats the URL (it may hold a
/// password).
fn parse_url(key: &str, text: &str) -> Result<url::Url, ConfigError> {
    let url = url::Url::parse(text).map_err(|e| {
        invalid(
            key,
            format!("not a URL ({e}); expected postgres://USER@HOST:PORT/DATABASE"),
        )
    })?;
    if !matches!(url.scheme(), "postgres" | "postgresql") {
        return Err(invalid(
            key,
            format!(
                "the scheme is {:?}, expected postgres:// or postgresql:// (the SQLite file is store.path)",
                url.scheme()
            ),
        ));
    }
    Ok(url)
}

impl StoreConfig {
    /// Check `store.url` as written in the config file: a PostgreSQL URL
    /// without a password (that is a secret: see the module docs).
    pub(super) fn validate_url(&self) -> Result<(), ConfigError> {
        // `password_file` without `url` is checked by `backend`: the URL
        // may come from CI_SLO_DATABASE_URL (a Kubernetes Secret mounted as
        // a file next to a URL in the environment).
        let Some(text) = &self.url else {
            return Ok(());
        };
        let url = parse_url("store.url", text)?;
        if url.password().is_some() {
            return Err(invalid(
                "store.url",
                format!(
                    "must not hold the password (the config file is not a place for secrets): \
                     put it in the file store.password_file names, or give the whole URL in ${DATABASE_URL_ENV}"
                ),
            ));
        }
        Ok(())
    }

    /// Where the store lives: PostgreSQL when `CI_SLO_DATABASE_URL` (read
    /// through `env`) or `store.url` is set, the variable first; SQLite at
    /// `store.path` otherwise. The password comes from the variable's URL,
    /// else from `store.password_file` (trailing newline trimmed).
    pub fn backend(
        &self,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<StoreBackend, ConfigError> {
        let (source, text) = match env(DATABASE_URL_ENV).filter(|v| !v.is_empty()) {
            Some(v) => (DATABASE_URL_ENV, v),
            None => match &self.url {
                Some(u) => ("store.url", u.clone()),
                None if self.password_file.is_some() => {
                    return Err(invalid(
                        "store.password_file",
                        format!("is for PostgreSQL only: set store.url or {DATABASE_URL_ENV} too"),
                    ));
                }
                None => return Ok(StoreBackend::Sqlite(self.path.clone())),
            },
        };
        let mut url = parse_url(source, &text)?;
        // The URL spells the password %-escaped; the server wants it decoded.
        let mut password = url.password().map(|p| {
            Secret::new(
                percent_encoding::percent_decode_str(p)
                    .decode_utf8()
                    .map(|d| d.into_owned())
                    .unwrap_or_else(|_| p.to_string()),
            )
        });
        if password.is_some() {
            url.set_password(None)
                .map_err(|()| invalid(source, "cannot take the password out of the URL"))?;
        } else if let Some(path) = &self.password_file {
            let key = "store.password_file";
            let text = std::fs::read_to_string(path).map_err(|source| ConfigError::SecretFile {
                key: key.to_string(),
                path: path.clone(),
                source,
            })?;
            let text = text.trim_end_matches(['\n', '\r']);
            if text.is_empty() {
                return Err(invalid(key, "the file is empty"));
            }
            password = Some(Secret::new(text));
        }
        Ok(StoreBackend::Postgres(PostgresTarget {
            url,
            password,
            source,
        }))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::Config;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    #[test]
    fn without_a_url_the_store_is_the_sqlite_file() {
        let c = Config::parse("").unwrap();
        assert_eq!(
            c.store.backend(no_env).unwrap(),
            StoreBackend::Sqlite("ci-slo-exporter.db".into())
        );
        let c = Config::parse("[store]\npath = \"x.db\"\n").unwrap();
        assert_eq!(
            c.store.backend(no_env).unwrap(),
            StoreBackend::Sqlite("x.db".into())
        );
    }

    #[test]
    fn the_url_selects_postgres_and_the_password_comes_from_a_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pw");
        std::fs::write(&file, "s3cr:t/pw\n").unwrap();
        let text = format!(
            "[store]\nurl = \"postgres://exporter@db.example:5433/ci?sslmode=disable\"\npassword_file = {:?}\n",
            file.display().to_string()
        );
        let c = Config::parse(&text).unwrap();
        let StoreBackend::Postgres(pg) = c.store.backend(no_env).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(
            pg.url(),
            "postgres://exporter@db.example:5433/ci?sslmode=disable"
        );
        assert_eq!(pg.password().unwrap().expose(), "s3cr:t/pw");
        assert_eq!(pg.source(), "store.url");
        for shown in [format!("{pg}"), format!("{pg:?}"), format!("{c:?}")] {
            assert!(!shown.contains("s3cr"), "{shown}");
        }
        assert_eq!(
            pg.to_string(),
            "postgres://exporter:***@db.example:5433/ci?sslmode=disable"
        );
        let printed = c.to_masked_toml(&crate::config::Secrets::default());
        assert!(!printed.contains("s3cr"), "{printed}");

        // The URL from the environment without its password, the password
        // from the file (a Secret mounted as a file).
        let text = format!(
            "[store]\npassword_file = {:?}\n",
            file.display().to_string()
        );
        let c = Config::parse(&text).unwrap();
        let env = |k: &str| (k == DATABASE_URL_ENV).then(|| "postgres://svc@env-host/prod".into());
        let StoreBackend::Postgres(pg) = c.store.backend(env).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(pg.password().unwrap().expose(), "s3cr:t/pw");
        assert_eq!(pg.source(), DATABASE_URL_ENV);
    }

    #[test]
    fn the_environment_url_wins_and_its_password_never_prints() {
        let c = Config::parse("[store]\nurl = \"postgres://a@file-host/db\"\n").unwrap();
        let env = |k: &str| {
            (k == DATABASE_URL_ENV).then(|| "postgresql://svc:p%40ss%20word@env-host/prod".into())
        };
        let StoreBackend::Postgres(pg) = c.store.backend(env).unwrap() else {
            panic!("not postgres")
        };
        assert_eq!(pg.url(), "postgresql://svc@env-host/prod");
        assert_eq!(pg.password().unwrap().expose(), "p@ss word");
        assert_eq!(pg.source(), DATABASE_URL_ENV);
        assert_eq!(pg.to_string(), "postgresql://svc:***@env-host/prod");
        assert!(!format!("{pg:?}").contains("p%40ss"), "{pg:?}");
        // Set without store.url at all: still PostgreSQL.
        let plain = Config::parse("").unwrap();
        assert!(matches!(
            plain.store.backend(env).unwrap(),
            StoreBackend::Postgres(_)
        ));
        // Empty counts as unset.
        let empty = |_: &str| Some(String::new());
        assert!(matches!(
            plain.store.backend(empty).unwrap(),
            StoreBackend::Sqlite(_)
        ));
    }

    #[test]
    fn bad_urls_and_files_are_named_without_echoing_a_password() {
        for (text, needle) in [
            (
                "[store]\nurl = \"mysql://u@h/db\"\n",
                "store.url: the scheme is \"mysql\"",
            ),
            ("[store]\nurl = \"not a url\"\n", "store.url: not a URL"),
            (
                "[store]\nurl = \"postgres://u:hunter2@h/db\"\n",
                "store.url: must not hold the password",
            ),
        ] {
            let err = Config::parse(text).unwrap_err().to_string();
            assert!(err.contains(needle), "{text:?} gave {err}");
            assert!(!err.contains("hunter2"), "{err}");
        }
        // A password file needs a URL, from the file or the environment.
        let c = Config::parse("[store]\npassword_file = \"/x\"\n").unwrap();
        let err = c.store.backend(no_env).unwrap_err().to_string();
        assert!(
            err.contains("store.password_file: is for PostgreSQL only"),
            "{err}"
        );
        let env = |_: &str| Some("http://u:hunter2@h/db".to_string());
        let err = Config::parse("")
            .unwrap()
            .store
            .backend(env)
            .unwrap_err()
            .to_string();
        assert!(err.contains("CI_SLO_DATABASE_URL"), "{err}");
        assert!(!err.contains("hunter2"), "{err}");

        let c = Config::parse(
            "[store]\nurl = \"postgres://u@h/db\"\npassword_file = \"/nonexistent/pw\"\n",
        )
        .unwrap();
        let err = c.store.backend(no_env).unwrap_err().to_string();
        assert!(
            err.contains("store.password_file") && err.contains("/nonexistent/pw"),
            "{err}"
        );
    }
}
