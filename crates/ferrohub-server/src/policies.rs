//! The hub's shared access policies: the five built-in ones of Azure IoT Hub, with keys kept in
//! `<data_dir>/policies.json` (Azure's `SharedAccessSignatureAuthorizationRule` shape) and
//! optionally set in the configuration.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};

use ferrohub_auth::{KeyPair, PolicyCredentials, SymmetricKey};
use ferrohub_types::{Permission, Permissions, PolicyName};
use serde::{Deserialize, Serialize};

use crate::config::{BUILTIN_POLICIES, PolicyKeys};
use crate::fsutil::write_durably;

/// Why the policies could not be loaded.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum PolicyError {
    /// `policies.json` could not be read or written.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The I/O error.
        source: std::io::Error,
    },
    /// `policies.json` is damaged.
    #[error("{path}: {message}")]
    Invalid {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
}

#[derive(Debug, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Rule {
    key_name: String,
    primary_key: String,
    secondary_key: String,
    rights: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct PolicyFile {
    policies: Vec<Rule>,
}

/// The built-in policies and their rights (azure-contract §3).
fn builtin_rights(name: &str) -> Permissions {
    use Permission::*;
    match name {
        "iothubowner" => Permissions::ALL,
        "service" => Permissions::of(&[ServiceConnect]),
        "device" => Permissions::of(&[DeviceConnect]),
        "registryRead" => Permissions::of(&[RegistryRead]),
        "registryReadWrite" => Permissions::of(&[RegistryRead, RegistryWrite]),
        _ => Permissions::NONE,
    }
}

/// The hub's shared access policies, by name.
pub(crate) struct Policies {
    by_name: HashMap<String, PolicyCredentials>,
}

impl Policies {
    /// Loads `policies.json`, generates keys missing from it, applies `configured` keys on top,
    /// and writes the file back when it changed.
    pub(crate) fn prepare(
        data_dir: &Path,
        configured: &BTreeMap<String, PolicyKeys>,
    ) -> Result<Policies, PolicyError> {
        let path = data_dir.join("policies.json");
        let mut file = match std::fs::read(&path) {
            Ok(bytes) => {
                serde_json::from_slice::<PolicyFile>(&bytes).map_err(|e| PolicyError::Invalid {
                    path: path.clone(),
                    message: e.to_string(),
                })?
            }
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => PolicyFile::default(),
            Err(source) => return Err(PolicyError::Io { path, source }),
        };

        let mut changed = false;
        for name in BUILTIN_POLICIES {
            if !file.policies.iter().any(|r| r.key_name == name) {
                file.policies.push(Rule {
                    key_name: name.to_owned(),
                    primary_key: SymmetricKey::generate().to_base64(),
                    secondary_key: SymmetricKey::generate().to_base64(),
                    rights: builtin_rights(name).to_string(),
                });
                changed = true;
            }
        }
        if changed {
            let text = serde_json::to_vec_pretty(&file).map_err(|e| PolicyError::Invalid {
                path: path.clone(),
                message: e.to_string(),
            })?;
            write_durably(&path, &text, true).map_err(|source| PolicyError::Io {
                path: path.clone(),
                source,
            })?;
        }

        let mut by_name = HashMap::new();
        for rule in file.policies {
            let bad = |message: String| PolicyError::Invalid {
                path: path.clone(),
                message,
            };
            let name = PolicyName::new(rule.key_name.clone())
                .map_err(|e| bad(format!("policy {:?}: {e}", rule.key_name)))?;
            let permissions = Permissions::parse_list(&rule.rights)
                .map_err(|e| bad(format!("policy {name}: {e}")))?;
            let over = configured.get(name.as_str());
            let primary = over
                .and_then(|k| k.primary_key.clone())
                .unwrap_or(rule.primary_key);
            let secondary = over
                .and_then(|k| k.secondary_key.clone())
                .unwrap_or(rule.secondary_key);
            let key = |s: &str| {
                SymmetricKey::from_base64(s).map_err(|e| bad(format!("policy {name}: {e}")))
            };
            let keys = KeyPair {
                primary: key(&primary)?,
                secondary: key(&secondary)?,
            };
            by_name.insert(
                name.as_str().to_owned(),
                PolicyCredentials {
                    name,
                    permissions,
                    keys,
                },
            );
        }
        Ok(Policies { by_name })
    }

    /// The policy called `name` (case-sensitive, as Azure's key names are).
    pub(crate) fn get(&self, name: &str) -> Option<&PolicyCredentials> {
        self.by_name.get(name)
    }

    /// The connection string of policy `name` for a hub reached at `host`.
    pub(crate) fn connection_string(&self, name: &str, host: &str) -> Option<String> {
        let p = self.get(name)?;
        Some(format!(
            "HostName={host};SharedAccessKeyName={name};SharedAccessKey={}",
            p.keys.primary.to_base64()
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_once_then_kept() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = Policies::prepare(dir.path(), &BTreeMap::new()).expect("generated");
        let b = Policies::prepare(dir.path(), &BTreeMap::new()).expect("loaded");
        for name in BUILTIN_POLICIES {
            let pa = a.get(name).expect("present");
            let pb = b.get(name).expect("present");
            assert_eq!(pa.keys.primary.to_base64(), pb.keys.primary.to_base64());
            assert_ne!(pa.keys.primary.to_base64(), pa.keys.secondary.to_base64());
            assert_eq!(pa.permissions, builtin_rights(name));
        }
        assert!(a.get("IOTHUBOWNER").is_none());
        assert!(
            a.get("service")
                .expect("service")
                .permissions
                .contains(Permission::ServiceConnect)
        );
    }

    #[test]
    fn configured_keys_win() {
        let dir = tempfile::tempdir().expect("tempdir");
        let key = SymmetricKey::generate().to_base64();
        let mut configured = BTreeMap::new();
        configured.insert(
            "device".to_owned(),
            PolicyKeys {
                primary_key: Some(key.clone()),
                secondary_key: None,
            },
        );
        let p = Policies::prepare(dir.path(), &configured).expect("prepared");
        assert_eq!(
            p.get("device").expect("device").keys.primary.to_base64(),
            key
        );
        let cs = p.connection_string("device", "h").expect("cs");
        assert_eq!(
            cs,
            format!("HostName=h;SharedAccessKeyName=device;SharedAccessKey={key}")
        );
    }

    #[test]
    fn damaged_file_is_an_error() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("policies.json"), "{").expect("write");
        assert!(matches!(
            Policies::prepare(dir.path(), &BTreeMap::new()),
            Err(PolicyError::Invalid { .. })
        ));
    }
}
