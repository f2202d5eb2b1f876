//! Consumer groups of the built-in event endpoint and their checkpoints, kept in
//! `<data_dir>/consumer-groups.json` (written durably on every change), or, for the nodes of a
//! cluster, in one shared document ([`GroupDocument`]) that every change reads, changes and
//! writes back with compare-and-set; the other nodes re-read it when told of the change and
//! before they answer with checkpoints.
//!
//! `$Default` always exists; up to [`MAX_NAMED_GROUPS`] more can be created, as on Azure.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::fsutil::write_durably;

/// The group every hub has.
pub const DEFAULT_GROUP: &str = "$Default";

/// How many groups besides `$Default` a hub may have.
pub const MAX_NAMED_GROUPS: usize = 20;

/// A reader's stored position in one partition.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Checkpoint {
    /// The sequence number of the last event the reader processed.
    pub sequence_number: u64,
    /// That event's offset.
    pub offset: String,
    /// When the checkpoint was stored.
    pub updated_time_utc: DateTime<Utc>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Group {
    created_time_utc: DateTime<Utc>,
    checkpoints: BTreeMap<u32, Checkpoint>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct State {
    groups: BTreeMap<String, Group>,
}

/// Why a consumer-group operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GroupError {
    /// No such group.
    #[error("the consumer group '{0}' does not exist")]
    NotFound(String),
    /// The name is not allowed.
    #[error("invalid consumer group name '{0}': use 1 to 50 letters, digits, '.', '_' or '-'")]
    InvalidName(String),
    /// `$Default` cannot be deleted.
    #[error("the consumer group '$Default' cannot be deleted")]
    DefaultGroup,
    /// Too many groups.
    #[error("a hub has at most {MAX_NAMED_GROUPS} consumer groups besides '$Default'")]
    TooMany,
    /// The file could not be written or read.
    #[error("storing consumer groups: {0}")]
    Io(String),
}

/// A stored groups document: its version and its bytes.
pub type VersionedDocument = (u64, Vec<u8>);

/// The consumer groups of a cluster, stored as one versioned document (`ferrohub-cluster`
/// keeps it in PostgreSQL).
pub trait GroupDocument: Send + Sync + 'static {
    /// The stored document and its version; `None` before the first write.
    fn load(&self) -> crate::cluster::BoxFuture<'_, Result<Option<VersionedDocument>, String>>;

    /// Stores `doc` if the stored version is still `expected` (`None`: nothing stored yet);
    /// returns whether it did.
    fn store(
        &self,
        expected: Option<u64>,
        doc: Vec<u8>,
    ) -> crate::cluster::BoxFuture<'_, Result<bool, String>>;
}

/// Where the groups are kept.
enum Storage {
    File(PathBuf),
    Shared {
        doc: Arc<dyn GroupDocument>,
        runtime: tokio::runtime::Handle,
    },
}

/// The consumer groups and their checkpoints.
pub struct ConsumerGroups {
    storage: Storage,
    state: Mutex<State>,
}

/// How often a change is tried again when another node changed the groups meanwhile.
const SHARED_ATTEMPTS: usize = 16;

fn with_default(mut state: State, now: DateTime<Utc>) -> State {
    state
        .groups
        .entry(DEFAULT_GROUP.to_owned())
        .or_insert_with(|| Group {
            created_time_utc: now,
            checkpoints: BTreeMap::new(),
        });
    state
}

fn parse(bytes: &[u8]) -> Result<State, GroupError> {
    serde_json::from_slice::<State>(bytes)
        .map_err(|e| GroupError::Io(format!("damaged consumer groups: {e}")))
}

fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 50
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-'))
}

impl ConsumerGroups {
    /// Loads the groups from `path`, creating `$Default` when the file is new.
    pub fn open(path: PathBuf, now: DateTime<Utc>) -> Result<ConsumerGroups, GroupError> {
        let state = match std::fs::read(&path) {
            Ok(bytes) => serde_json::from_slice::<State>(&bytes)
                .map_err(|e| GroupError::Io(format!("{}: {e}", path.display())))?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => State::default(),
            Err(e) => return Err(GroupError::Io(format!("{}: {e}", path.display()))),
        };
        let state = with_default(state, now);
        Ok(ConsumerGroups {
            storage: Storage::File(path),
            state: Mutex::new(state),
        })
    }

    /// The groups of a cluster, in `doc`. Must be called on the runtime that will run the
    /// document's I/O; changes ([`ConsumerGroups::create`], …) must then be made from blocking
    /// tasks, as the REST API makes them.
    pub async fn open_shared(
        doc: Arc<dyn GroupDocument>,
        now: DateTime<Utc>,
    ) -> Result<ConsumerGroups, GroupError> {
        let state = match doc.load().await.map_err(GroupError::Io)? {
            Some((_, bytes)) => parse(&bytes)?,
            None => State::default(),
        };
        Ok(ConsumerGroups {
            storage: Storage::Shared {
                doc,
                runtime: tokio::runtime::Handle::current(),
            },
            state: Mutex::new(with_default(state, now)),
        })
    }

    /// Re-reads the shared document (another node changed it); nothing to do for the
    /// embedded hub.
    pub async fn refresh(&self) {
        let Storage::Shared { doc, .. } = &self.storage else {
            return;
        };
        match doc.load().await {
            Ok(Some((_, bytes))) => match parse(&bytes) {
                Ok(state) => {
                    let now = Utc::now();
                    if let Ok(mut s) = self.state.lock() {
                        *s = with_default(state, now);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "re-reading the consumer groups failed"),
            },
            Ok(None) => {}
            Err(e) => tracing::warn!(error = %e, "re-reading the consumer groups failed"),
        }
    }

    fn with_state<T>(
        &self,
        mut change: impl FnMut(&mut State) -> Result<(T, bool), GroupError>,
    ) -> Result<T, GroupError> {
        let mut state = self
            .state
            .lock()
            .map_err(|_| GroupError::Io("consumer group state poisoned".into()))?;
        match &self.storage {
            Storage::File(path) => {
                let (out, changed) = change(&mut state)?;
                if changed {
                    let bytes = serde_json::to_vec_pretty(&*state)
                        .map_err(|e| GroupError::Io(e.to_string()))?;
                    write_durably(path, &bytes, false)
                        .map_err(|e| GroupError::Io(e.to_string()))?;
                }
                Ok(out)
            }
            Storage::Shared { doc, runtime } => {
                for _ in 0..SHARED_ATTEMPTS {
                    let stored = runtime.block_on(doc.load()).map_err(GroupError::Io)?;
                    let (version, mut fresh) = match stored {
                        Some((v, bytes)) => (Some(v), parse(&bytes)?),
                        None => (None, State::default()),
                    };
                    fresh = with_default(fresh, Utc::now());
                    let (out, changed) = change(&mut fresh)?;
                    if changed {
                        let bytes = serde_json::to_vec(&fresh)
                            .map_err(|e| GroupError::Io(e.to_string()))?;
                        if !runtime
                            .block_on(doc.store(version, bytes))
                            .map_err(GroupError::Io)?
                        {
                            continue;
                        }
                    }
                    *state = fresh;
                    return Ok(out);
                }
                Err(GroupError::Io(
                    "the consumer groups kept changing concurrently; retry".into(),
                ))
            }
        }
    }

    /// Whether the groups are shared by the nodes of a cluster.
    pub fn is_shared(&self) -> bool {
        matches!(self.storage, Storage::Shared { .. })
    }

    /// The groups, with their creation times.
    pub fn list(&self) -> Vec<(String, DateTime<Utc>)> {
        self.state
            .lock()
            .map(|s| {
                s.groups
                    .iter()
                    .map(|(n, g)| (n.clone(), g.created_time_utc))
                    .collect()
            })
            .unwrap_or_default()
    }

    /// The group named `name` compared ASCII-case-insensitively, as Event Hubs matches them
    /// (the JS SDK writes `$default`), in its own spelling.
    pub fn resolve(&self, name: &str) -> Option<String> {
        self.state.lock().ok().and_then(|s| {
            s.groups
                .keys()
                .find(|g| g.eq_ignore_ascii_case(name))
                .cloned()
        })
    }

    /// Whether group `name` exists.
    pub fn exists(&self, name: &str) -> bool {
        self.state
            .lock()
            .map(|s| s.groups.contains_key(name))
            .unwrap_or(false)
    }

    /// Creates group `name`; `Ok(false)` when it already existed.
    pub fn create(&self, name: &str, now: DateTime<Utc>) -> Result<bool, GroupError> {
        if name == DEFAULT_GROUP {
            return Ok(false);
        }
        if !valid_name(name) {
            return Err(GroupError::InvalidName(name.to_owned()));
        }
        self.with_state(|s| {
            if s.groups.contains_key(name) {
                return Ok((false, false));
            }
            if s.groups.len() > MAX_NAMED_GROUPS {
                return Err(GroupError::TooMany);
            }
            s.groups.insert(
                name.to_owned(),
                Group {
                    created_time_utc: now,
                    checkpoints: BTreeMap::new(),
                },
            );
            Ok((true, true))
        })
    }

    /// Deletes group `name` and its checkpoints.
    pub fn delete(&self, name: &str) -> Result<(), GroupError> {
        if name == DEFAULT_GROUP {
            return Err(GroupError::DefaultGroup);
        }
        self.with_state(|s| match s.groups.remove(name) {
            Some(_) => Ok(((), true)),
            None => Err(GroupError::NotFound(name.to_owned())),
        })
    }

    /// The checkpoints of group `name`, by partition.
    pub fn checkpoints(&self, name: &str) -> Result<BTreeMap<u32, Checkpoint>, GroupError> {
        let s = self
            .state
            .lock()
            .map_err(|_| GroupError::Io("consumer group state poisoned".into()))?;
        s.groups
            .get(name)
            .map(|g| g.checkpoints.clone())
            .ok_or_else(|| GroupError::NotFound(name.to_owned()))
    }

    /// Stores the checkpoint of group `name` for `partition`.
    pub fn set_checkpoint(
        &self,
        name: &str,
        partition: u32,
        checkpoint: Checkpoint,
    ) -> Result<(), GroupError> {
        self.with_state(|s| match s.groups.get_mut(name) {
            Some(g) => {
                g.checkpoints.insert(partition, checkpoint.clone());
                Ok(((), true))
            }
            None => Err(GroupError::NotFound(name.to_owned())),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn groups_and_checkpoints_persist() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("cg.json");
        let now = Utc::now();
        let g = ConsumerGroups::open(path.clone(), now).expect("open");
        assert_eq!(g.list().len(), 1);
        assert!(g.create("analytics", now).expect("create"));
        assert!(!g.create("analytics", now).expect("again"));
        assert!(matches!(
            g.create("bad name", now),
            Err(GroupError::InvalidName(_))
        ));
        g.set_checkpoint(
            "analytics",
            2,
            Checkpoint {
                sequence_number: 7,
                offset: "700".into(),
                updated_time_utc: now,
            },
        )
        .expect("checkpoint");
        assert!(matches!(
            g.delete(DEFAULT_GROUP),
            Err(GroupError::DefaultGroup)
        ));
        drop(g);

        let g = ConsumerGroups::open(path, now).expect("reopen");
        let cps = g.checkpoints("analytics").expect("group");
        assert_eq!(cps.get(&2).map(|c| c.sequence_number), Some(7));
        for i in 0..19 {
            g.create(&format!("g{i}"), now).expect("within the limit");
        }
        assert!(matches!(
            g.create("one-too-many", now),
            Err(GroupError::TooMany)
        ));
        g.delete("analytics").expect("delete");
        assert!(matches!(
            g.checkpoints("analytics"),
            Err(GroupError::NotFound(_))
        ));
    }
}
