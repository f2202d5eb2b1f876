//! Shared access policy permissions.

use std::fmt;

use serde::{Deserialize, Serialize};

/// One right a shared access policy can grant.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Permission {
    /// Read the identity registry.
    RegistryRead,
    /// Create, update and delete identities (implies nothing else; pair with `RegistryRead`).
    RegistryWrite,
    /// Service-facing endpoints: read telemetry, send C2D, feedback, twins, methods.
    ServiceConnect,
    /// Device-facing endpoints, on behalf of any device the token is scoped to.
    DeviceConnect,
}

impl Permission {
    /// Every permission, in Azure's order.
    pub const ALL: [Permission; 4] = [
        Permission::RegistryRead,
        Permission::RegistryWrite,
        Permission::ServiceConnect,
        Permission::DeviceConnect,
    ];

    const fn bit(self) -> u8 {
        match self {
            Permission::RegistryRead => 1,
            Permission::RegistryWrite => 2,
            Permission::ServiceConnect => 4,
            Permission::DeviceConnect => 8,
        }
    }

    /// Azure's name, as in `"RegistryRead"`.
    pub const fn name(self) -> &'static str {
        match self {
            Permission::RegistryRead => "RegistryRead",
            Permission::RegistryWrite => "RegistryWrite",
            Permission::ServiceConnect => "ServiceConnect",
            Permission::DeviceConnect => "DeviceConnect",
        }
    }

    /// Parses Azure's name; `RegistryReadWrite` is not a single permission (see
    /// [`Permissions::parse_list`]).
    pub fn from_name(s: &str) -> Option<Self> {
        Self::ALL
            .into_iter()
            .find(|p| p.name().eq_ignore_ascii_case(s))
    }
}

impl fmt::Display for Permission {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A set of [`Permission`]s.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Permissions(u8);

impl Permissions {
    /// No permission at all.
    pub const NONE: Permissions = Permissions(0);
    /// Everything (`iothubowner`).
    pub const ALL: Permissions = Permissions(15);

    /// The set holding exactly `perms`.
    pub fn of(perms: &[Permission]) -> Self {
        Permissions(perms.iter().fold(0, |acc, p| acc | p.bit()))
    }

    /// Whether `p` is in the set.
    pub const fn contains(self, p: Permission) -> bool {
        self.0 & p.bit() != 0
    }

    /// The set with `p` added.
    pub const fn with(self, p: Permission) -> Self {
        Permissions(self.0 | p.bit())
    }

    /// The permissions in the set, in Azure's order.
    pub fn iter(self) -> impl Iterator<Item = Permission> {
        Permission::ALL
            .into_iter()
            .filter(move |p| self.contains(*p))
    }

    /// Parses a comma- or space-separated list of names, as in `RegistryRead, ServiceConnect`.
    /// `RegistryReadWrite` stands for `RegistryRead` and `RegistryWrite`.
    pub fn parse_list(s: &str) -> Result<Self, String> {
        let mut set = Permissions::NONE;
        for word in s.split([',', ' ']).map(str::trim).filter(|w| !w.is_empty()) {
            if word.eq_ignore_ascii_case("RegistryReadWrite") {
                set = set
                    .with(Permission::RegistryRead)
                    .with(Permission::RegistryWrite);
            } else {
                let p = Permission::from_name(word)
                    .ok_or_else(|| format!("unknown permission {word:?}"))?;
                set = set.with(p);
            }
        }
        Ok(set)
    }
}

impl fmt::Debug for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_set().entries(self.iter()).finish()
    }
}

impl fmt::Display for Permissions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = self.iter().map(Permission::name).collect();
        f.write_str(&names.join(", "))
    }
}

impl Serialize for Permissions {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl<'de> Deserialize<'de> for Permissions {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        Permissions::parse_list(&s).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_list_expands_read_write() {
        let p = Permissions::parse_list("RegistryReadWrite, ServiceConnect").expect("valid");
        assert!(p.contains(Permission::RegistryRead));
        assert!(p.contains(Permission::RegistryWrite));
        assert!(p.contains(Permission::ServiceConnect));
        assert!(!p.contains(Permission::DeviceConnect));
        assert_eq!(p.to_string(), "RegistryRead, RegistryWrite, ServiceConnect");
        assert!(Permissions::parse_list("RegistryRead, Bogus").is_err());
    }

    #[test]
    fn all_has_everything() {
        assert_eq!(Permissions::ALL.iter().count(), 4);
        assert_eq!(Permissions::of(&Permission::ALL), Permissions::ALL);
    }
}
