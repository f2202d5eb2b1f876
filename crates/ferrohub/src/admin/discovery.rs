//! Where the admin commands find the hub's connection string and CA certificate when the
//! command line does not give them.
//!
//! Connection string, first found wins:
//! 1. `--connection-string`;
//! 2. `$FERROHUB_CONNECTION_STRING`;
//! 3. `$IOTHUB_CONNECTION_STRING` (the variable Azure's samples use);
//! 4. `$FERROHUB_DATA_DIR/owner.connection-string`, when the variable is set and the file exists;
//! 5. `./ferrohub-data/owner.connection-string`, when it exists.
//!
//! CA certificate: `--ca`, then `$FERROHUB_CA` (either must exist), then
//! `$FERROHUB_DATA_DIR/tls/ca.pem` or `./ferrohub-data/tls/ca.pem` when present; otherwise only
//! the system roots are trusted.
//!
//! An explicitly set data directory comes before the default one, as it does for
//! `ferrohub serve`. Environment lookups go through a function so tests can fake them.

use std::fmt;
use std::path::{Path, PathBuf};

use super::Failure;

/// The default data directory, relative to the working directory.
pub(crate) const DEFAULT_DATA_DIR: &str = "ferrohub-data";
/// The file `ferrohub serve` writes the owner policy's connection string to.
pub(crate) const OWNER_FILE: &str = "owner.connection-string";
/// The development CA certificate, relative to the data directory.
pub(crate) const CA_FILE: &str = "tls/ca.pem";

/// Where a setting came from, for error messages.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Source {
    /// The command line.
    Flag,
    /// An environment variable.
    Env(&'static str),
    /// A file.
    File(PathBuf),
}

impl fmt::Display for Source {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Source::Flag => f.write_str("the command line"),
            Source::Env(name) => write!(f, "${name}"),
            Source::File(path) => write!(f, "{}", path.display()),
        }
    }
}

/// A connection string's text and where it was found.
#[derive(Debug)]
pub(crate) struct Found {
    pub(crate) text: String,
    pub(crate) source: Source,
}

/// The data directories to look in, most specific first: `$FERROHUB_DATA_DIR`, then
/// `{cwd}/ferrohub-data`.
pub(crate) fn data_dirs(env: &dyn Fn(&str) -> Option<String>, cwd: &Path) -> Vec<PathBuf> {
    let mut dirs = Vec::with_capacity(2);
    if let Some(dir) = env("FERROHUB_DATA_DIR") {
        dirs.push(PathBuf::from(dir));
    }
    dirs.push(cwd.join(DEFAULT_DATA_DIR));
    dirs
}

/// Finds the connection string (see the module docs for the order).
pub(crate) fn connection_string(
    flag: Option<&str>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Found, Failure> {
    if let Some(text) = flag {
        return Ok(Found {
            text: text.to_owned(),
            source: Source::Flag,
        });
    }
    for name in ["FERROHUB_CONNECTION_STRING", "IOTHUB_CONNECTION_STRING"] {
        if let Some(text) = env(name) {
            return Ok(Found {
                text,
                source: Source::Env(name),
            });
        }
    }
    for dir in data_dirs(env, cwd) {
        let path = dir.join(OWNER_FILE);
        if path.is_file() {
            let text = std::fs::read_to_string(&path)
                .map_err(|e| Failure::Usage(format!("cannot read {}: {e}", path.display())))?;
            return Ok(Found {
                text: text.trim().to_owned(),
                source: Source::File(path),
            });
        }
    }
    Err(Failure::Usage(format!(
        "no connection string: pass --connection-string, set FERROHUB_CONNECTION_STRING or \
         IOTHUB_CONNECTION_STRING, or run where {DEFAULT_DATA_DIR}/{OWNER_FILE} exists \
         (or set FERROHUB_DATA_DIR)"
    )))
}

/// Finds the CA file to trust, if any (see the module docs for the order). A file named on the
/// command line or in `$FERROHUB_CA` must exist.
pub(crate) fn ca_file(
    flag: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
    cwd: &Path,
) -> Result<Option<PathBuf>, Failure> {
    let explicit = match flag {
        Some(p) => Some((p.to_path_buf(), Source::Flag)),
        None => env("FERROHUB_CA").map(|p| (PathBuf::from(p), Source::Env("FERROHUB_CA"))),
    };
    if let Some((path, source)) = explicit {
        if !path.is_file() {
            return Err(Failure::Usage(format!(
                "the CA file {} (from {source}) does not exist",
                path.display()
            )));
        }
        return Ok(Some(path));
    }
    Ok(data_dirs(env, cwd)
        .into_iter()
        .map(|dir| dir.join(CA_FILE))
        .find(|p| p.is_file()))
}

#[cfg(test)]
mod tests {
    use std::collections::HashMap;

    use super::*;

    struct Fixture {
        cwd: tempfile::TempDir,
        data: tempfile::TempDir,
        vars: HashMap<&'static str, String>,
    }

    impl Fixture {
        fn new() -> Self {
            Fixture {
                cwd: tempfile::tempdir().expect("tempdir"),
                data: tempfile::tempdir().expect("tempdir"),
                vars: HashMap::new(),
            }
        }

        fn write(dir: &Path, rel: &str, text: &str) -> PathBuf {
            let path = dir.join(rel);
            if let Some(parent) = path.parent() {
                std::fs::create_dir_all(parent).expect("mkdir");
            }
            std::fs::write(&path, text).expect("write");
            path
        }

        fn cwd_file(&self, rel: &str, text: &str) -> PathBuf {
            Self::write(&self.cwd.path().join(DEFAULT_DATA_DIR), rel, text)
        }

        fn data_file(&self, rel: &str, text: &str) -> PathBuf {
            Self::write(self.data.path(), rel, text)
        }

        fn set_data_dir(&mut self) {
            let dir = self.data.path().display().to_string();
            self.vars.insert("FERROHUB_DATA_DIR", dir);
        }

        fn conn(&self, flag: Option<&str>) -> Result<Found, Failure> {
            let vars = self.vars.clone();
            connection_string(flag, &move |k| vars.get(k).cloned(), self.cwd.path())
        }

        fn ca(&self, flag: Option<&Path>) -> Result<Option<PathBuf>, Failure> {
            let vars = self.vars.clone();
            ca_file(flag, &move |k| vars.get(k).cloned(), self.cwd.path())
        }
    }

    #[test]
    fn connection_string_order() {
        let mut fx = Fixture::new();
        assert!(matches!(fx.conn(None), Err(Failure::Usage(_))));

        let cwd_file = fx.cwd_file(OWNER_FILE, "from-cwd\n");
        let found = fx.conn(None).expect("found");
        assert_eq!(found.text, "from-cwd");
        assert_eq!(found.source, Source::File(cwd_file));

        // A data dir that is set but has no file falls through to ./ferrohub-data.
        fx.set_data_dir();
        assert_eq!(fx.conn(None).expect("found").text, "from-cwd");

        let data_file = fx.data_file(OWNER_FILE, "  from-data-dir \n");
        let found = fx.conn(None).expect("found");
        assert_eq!(found.text, "from-data-dir");
        assert_eq!(found.source, Source::File(data_file));

        fx.vars
            .insert("IOTHUB_CONNECTION_STRING", "from-iothub".into());
        let found = fx.conn(None).expect("found");
        assert_eq!(found.text, "from-iothub");
        assert_eq!(found.source, Source::Env("IOTHUB_CONNECTION_STRING"));

        fx.vars
            .insert("FERROHUB_CONNECTION_STRING", "from-ferrohub".into());
        let found = fx.conn(None).expect("found");
        assert_eq!(found.text, "from-ferrohub");
        assert_eq!(found.source, Source::Env("FERROHUB_CONNECTION_STRING"));

        let found = fx.conn(Some("from-flag")).expect("found");
        assert_eq!(found.text, "from-flag");
        assert_eq!(found.source, Source::Flag);
    }

    #[test]
    fn ca_order() {
        let mut fx = Fixture::new();
        assert_eq!(fx.ca(None).expect("none is fine"), None);

        let cwd_ca = fx.cwd_file(CA_FILE, "pem");
        assert_eq!(fx.ca(None).expect("ok"), Some(cwd_ca.clone()));

        fx.set_data_dir();
        assert_eq!(fx.ca(None).expect("ok"), Some(cwd_ca.clone()));
        let data_ca = fx.data_file(CA_FILE, "pem");
        assert_eq!(fx.ca(None).expect("ok"), Some(data_ca));

        let env_ca = fx.data_file("env.pem", "pem");
        fx.vars.insert("FERROHUB_CA", env_ca.display().to_string());
        assert_eq!(fx.ca(None).expect("ok"), Some(env_ca));

        assert_eq!(fx.ca(Some(&cwd_ca)).expect("ok"), Some(cwd_ca));
    }

    #[test]
    fn explicit_ca_must_exist() {
        let mut fx = Fixture::new();
        fx.cwd_file(CA_FILE, "pem");
        let missing = fx.cwd.path().join("missing.pem");
        assert!(matches!(fx.ca(Some(&missing)), Err(Failure::Usage(_))));
        fx.vars.insert("FERROHUB_CA", missing.display().to_string());
        match fx.ca(None) {
            Err(Failure::Usage(m)) => assert!(m.contains("FERROHUB_CA"), "{m}"),
            other => panic!("unexpected {other:?}"),
        }
    }
}
