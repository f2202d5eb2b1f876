//! What a token's resource (`sr`) grants access to.
//!
//! The `sr` names a URI prefix, compared segment by segment: `{host}` is the whole hub,
//! `{host}/devices/{id}` one device and everything under it, and so on. Clients write the host
//! in several ways (`myhub.azure-devices.net`, `localhost:5681`, `https://localhost`,
//! `amqps://host:5671/`, `sb://host/…`); scheme and port are ignored, and the host is compared
//! ASCII-case-insensitively.

use std::fmt;

use ferrohub_types::{DeviceId, IdError, ModuleId};

/// Why a token's resource does not name something on this hub.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ScopeError {
    /// The resource's host is not one of the hub's host names.
    #[error("the token is for another hub")]
    WrongHost,
    /// The resource has no host, or a malformed port.
    #[error("the token's resource is not a valid URI")]
    Malformed,
    /// `devices/{id}` with an id that is not a valid device id.
    #[error("the token's resource names an invalid device id: {0}")]
    InvalidDeviceId(IdError),
    /// `devices/{id}/modules/{id}` with an id that is not a valid module id.
    #[error("the token's resource names an invalid module id: {0}")]
    InvalidModuleId(IdError),
}

/// The part of the hub a token is scoped to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum Scope {
    /// The whole hub (`sr={host}`).
    Hub,
    /// Every device (`sr={host}/devices`), as protocol gateways use.
    AllDevices,
    /// One device and its modules (`sr={host}/devices/{id}`).
    Device(DeviceId),
    /// One module (`sr={host}/devices/{id}/modules/{mid}`).
    Module(DeviceId, ModuleId),
    /// Any other path, decoded, without leading or trailing `/` (e.g. `messages/events`).
    /// Build it through [`Scope::from_path`] so that it is trimmed.
    Other(String),
}

impl Scope {
    /// Interprets a decoded resource URI.
    ///
    /// An optional scheme (`https://`, `amqps://`, `sb://`, …) is stripped, then the host up to the
    /// first `/`; a `:port` on the host is ignored. The host must equal one of `hub_hosts` (also
    /// port-less, ASCII-case-insensitive), else [`ScopeError::WrongHost`]. The rest is the path:
    ///
    /// * empty or `/` → [`Scope::Hub`]
    /// * `devices` → [`Scope::AllDevices`]
    /// * `devices/{id}` → [`Scope::Device`]
    /// * `devices/{id}/modules/{mid}` → [`Scope::Module`]
    /// * either of the last two followed by one segment holding `=` (old docs'
    ///   `devices/dev/api-version=2016-11-14`) → the same, the extra segment ignored
    /// * anything else → [`Scope::Other`]
    ///
    /// The words `devices` and `modules` match case-insensitively; ids are case-sensitive.
    pub fn parse(resource: &str, hub_hosts: &[&str]) -> Result<Scope, ScopeError> {
        let rest = strip_scheme(resource);
        let (authority, path) = match rest.find('/') {
            Some(i) => (&rest[..i], &rest[i + 1..]),
            None => (rest, ""),
        };
        let host = bare_host(authority).ok_or(ScopeError::Malformed)?;
        let ours = hub_hosts
            .iter()
            .any(|h| bare_host(h).unwrap_or(h).eq_ignore_ascii_case(host));
        if !ours {
            return Err(ScopeError::WrongHost);
        }
        Self::from_path(path)
    }

    /// Interprets the path part of a resource (leading `/` optional), as in [`Scope::parse`].
    pub fn from_path(path: &str) -> Result<Scope, ScopeError> {
        let path = trim_slashes(path);
        if path.is_empty() {
            return Ok(Scope::Hub);
        }
        let segs: Vec<&str> = path.split('/').collect();
        let is = |i: usize, word: &str| segs.get(i).is_some_and(|s| s.eq_ignore_ascii_case(word));
        let extra_ok = |i: usize| segs.len() == i || (segs.len() == i + 1 && segs[i].contains('='));
        if !is(0, "devices") {
            return Ok(Scope::Other(path.to_owned()));
        }
        if segs.len() == 1 {
            return Ok(Scope::AllDevices);
        }
        let device = || DeviceId::new(segs[1]).map_err(ScopeError::InvalidDeviceId);
        if extra_ok(2) {
            return Ok(Scope::Device(device()?));
        }
        if is(2, "modules") && segs.len() >= 4 && extra_ok(4) {
            let module = ModuleId::new(segs[3]).map_err(ScopeError::InvalidModuleId)?;
            return Ok(Scope::Module(device()?, module));
        }
        Ok(Scope::Other(path.to_owned()))
    }

    /// The path this scope grants, with a leading `/` (`""` for the whole hub).
    pub fn path(&self) -> String {
        match self {
            Scope::Hub => String::new(),
            Scope::AllDevices => "/devices".to_owned(),
            Scope::Device(d) => format!("/devices/{d}"),
            Scope::Module(d, m) => format!("/devices/{d}/modules/{m}"),
            Scope::Other(p) => format!("/{p}"),
        }
    }

    /// Whether this scope covers `target_path` (decoded, leading `/` optional, no query), by the
    /// segment-prefix rule: `/a/b` covers `/a/b` and `/a/b/c` but not `/a/bc`. [`Scope::Hub`]
    /// covers everything.
    pub fn covers(&self, target_path: &str) -> bool {
        let target = trim_slashes(target_path);
        let mut target = target.split('/').filter(|_| !target.is_empty());
        // Each scope segment, and whether it is a fixed word matched case-insensitively.
        let scope: Vec<(&str, bool)> = match self {
            Scope::Hub => return true,
            Scope::AllDevices => vec![("devices", true)],
            Scope::Device(d) => vec![("devices", true), (d.as_str(), false)],
            Scope::Module(d, m) => vec![
                ("devices", true),
                (d.as_str(), false),
                ("modules", true),
                (m.as_str(), false),
            ],
            Scope::Other(p) => p.split('/').map(|s| (s, false)).collect(),
        };
        scope.into_iter().all(|(want, word)| {
            target.next().is_some_and(|got| {
                if word {
                    got.eq_ignore_ascii_case(want)
                } else {
                    got == want
                }
            })
        })
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Scope::Hub => f.write_str("/"),
            other => f.write_str(&other.path()),
        }
    }
}

/// Removes leading and trailing `/`.
fn trim_slashes(s: &str) -> &str {
    s.trim_matches('/')
}

/// Removes an RFC 3986 scheme and its `://`, if present.
fn strip_scheme(s: &str) -> &str {
    let Some((scheme, rest)) = s.split_once("://") else {
        return s;
    };
    let mut chars = scheme.chars();
    let valid = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if valid { rest } else { s }
}

/// The host of `host[:port]` or `[v6][:port]`, without brackets; `None` if empty or the port is
/// not digits.
fn bare_host(authority: &str) -> Option<&str> {
    let (host, port) = if let Some(v6) = authority.strip_prefix('[') {
        let (inner, after) = v6.split_once(']')?;
        let port = match after {
            "" => None,
            p => Some(p.strip_prefix(':')?),
        };
        (inner, port)
    } else {
        match authority.split_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (authority, None),
        }
    };
    if host.is_empty() {
        return None;
    }
    match port {
        Some(p) if p.is_empty() || !p.bytes().all(|b| b.is_ascii_digit()) => None,
        _ => Some(host),
    }
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::key::SymmetricKey;
    use crate::sas::SasToken;

    const HUB: &str = "myhub.azure-devices.net";

    fn dev(s: &str) -> DeviceId {
        DeviceId::new(s).expect("test id")
    }

    fn module(d: &str, m: &str) -> Scope {
        Scope::Module(dev(d), ModuleId::new(m).expect("test id"))
    }

    /// The scope of a token carrying `sr` verbatim.
    fn scope_of(sr: &str, hosts: &[&str]) -> Result<Scope, ScopeError> {
        SasToken::parse(&format!("SharedAccessSignature sr={sr}&sig=x&se=1"))
            .expect("parses")
            .scope(hosts)
    }

    #[test]
    fn every_sr_form_the_sdks_send() {
        let hosts = ["localhost"];
        // Python service REST with a port: quote_plus("localhost:8443").
        assert_eq!(scope_of("localhost%3A8443", &hosts), Ok(Scope::Hub));
        // Python service AMQP / Node service: raw host.
        assert_eq!(scope_of("localhost", &hosts), Ok(Scope::Hub));
        // Node service put-token with a port, unencoded.
        assert_eq!(scope_of("localhost:5681", &hosts), Ok(Scope::Hub));
        // Device SDKs.
        assert_eq!(
            scope_of("localhost%2Fdevices%2Fdev1", &hosts),
            Ok(Scope::Device(dev("dev1")))
        );
        assert_eq!(
            scope_of("localhost%3A8443%2Fdevices%2Fdev1", &hosts),
            Ok(Scope::Device(dev("dev1")))
        );
        assert_eq!(
            scope_of("localhost%2fdevices%2fdev1", &hosts),
            Ok(Scope::Device(dev("dev1")))
        );
        assert_eq!(
            scope_of("localhost%2Fdevices%2Fdev1%2Fmodules%2Fm1", &hosts),
            Ok(module("dev1", "m1"))
        );
        // Schemes: Python service CBS, C# service, Event Hubs client.
        assert_eq!(scope_of("https%3A%2F%2Flocalhost", &hosts), Ok(Scope::Hub));
        assert_eq!(
            scope_of("amqps%3A%2F%2Flocalhost%3A5671%2F", &hosts),
            Ok(Scope::Hub)
        );
        assert_eq!(
            scope_of("sb%3A%2F%2Flocalhost%2Fmyhub", &hosts),
            Ok(Scope::Other("myhub".into()))
        );
        assert_eq!(
            scope_of("https://localhost/devices", &hosts),
            Ok(Scope::AllDevices)
        );
        // Host case does not matter; a port on the configured host does not either.
        assert_eq!(scope_of("LocalHost", &hosts), Ok(Scope::Hub));
        assert_eq!(scope_of("localhost", &["localhost:8443"]), Ok(Scope::Hub));
        assert_eq!(
            scope_of("[::1]:8443%2Fdevices", &["::1"]),
            Ok(Scope::AllDevices)
        );
    }

    #[test]
    fn host_must_be_ours() {
        let hosts = [HUB, "localhost"];
        assert_eq!(
            scope_of("otherhub.azure-devices.net", &hosts),
            Err(ScopeError::WrongHost)
        );
        assert_eq!(
            scope_of("myhub.azure-devices.net.evil%2Fdevices%2Fd", &hosts),
            Err(ScopeError::WrongHost)
        );
        assert_eq!(scope_of("localhost", &[]), Err(ScopeError::WrongHost));
        assert_eq!(scope_of("%2Fdevices", &hosts), Err(ScopeError::Malformed));
        assert_eq!(
            scope_of("localhost:abc", &hosts),
            Err(ScopeError::Malformed)
        );
        assert_eq!(scope_of("localhost:", &hosts), Err(ScopeError::Malformed));
        assert_eq!(
            scope_of("https%3A%2F%2F", &hosts),
            Err(ScopeError::Malformed)
        );
    }

    #[test]
    fn path_forms() {
        let p = |s: &str| Scope::from_path(s);
        assert_eq!(p(""), Ok(Scope::Hub));
        assert_eq!(p("/"), Ok(Scope::Hub));
        assert_eq!(p("devices"), Ok(Scope::AllDevices));
        assert_eq!(p("/devices/"), Ok(Scope::AllDevices));
        assert_eq!(p("Devices/d1"), Ok(Scope::Device(dev("d1"))));
        assert_eq!(p("devices/d1/"), Ok(Scope::Device(dev("d1"))));
        assert_eq!(p("devices/d1/modules/m1"), Ok(module("d1", "m1")));
        // Old docs' trailing api-version segment.
        assert_eq!(
            p("devices/MyDevice01/api-version=2016-11-14"),
            Ok(Scope::Device(dev("MyDevice01")))
        );
        assert_eq!(
            p("devices/d1/modules/m1/api-version=2016-11-14"),
            Ok(module("d1", "m1"))
        );
        // Anything else.
        assert_eq!(
            p("messages/events"),
            Ok(Scope::Other("messages/events".into()))
        );
        assert_eq!(
            p("devices/d1/messages/events"),
            Ok(Scope::Other("devices/d1/messages/events".into()))
        );
        assert_eq!(
            p("devices/d1/modules"),
            Ok(Scope::Other("devices/d1/modules".into()))
        );
        assert_eq!(
            p("devices/d1/api-version=1/x"),
            Ok(Scope::Other("devices/d1/api-version=1/x".into()))
        );
        // Invalid ids.
        assert!(matches!(
            p("devices/a b"),
            Err(ScopeError::InvalidDeviceId(_))
        ));
        assert!(matches!(
            p("devices//x=1"),
            Err(ScopeError::InvalidDeviceId(_))
        ));
        assert!(matches!(
            p("devices/d/modules/a#b"),
            Err(ScopeError::InvalidModuleId(_))
        ));
        // Device ids are case-sensitive.
        assert_ne!(p("devices/D1"), p("devices/d1"));
    }

    #[test]
    fn segment_prefix_rule() {
        let d1 = Scope::Device(dev("d1"));
        assert!(d1.covers("/devices/d1"));
        assert!(d1.covers("devices/d1"));
        assert!(d1.covers("/devices/d1/"));
        assert!(d1.covers("/devices/d1/messages/events"));
        assert!(d1.covers("/devices/d1/modules/m1"));
        assert!(d1.covers("/DEVICES/d1/messages/events"));
        assert!(!d1.covers("/devices/d10"), "/a/b does not cover /a/bc");
        assert!(!d1.covers("/devices/d10/messages/events"));
        assert!(!d1.covers("/devices/D1"), "ids are case-sensitive");
        assert!(!d1.covers("/devices"));
        assert!(!d1.covers("/"));
        assert!(!d1.covers(""));

        assert!(Scope::Hub.covers(""));
        assert!(Scope::Hub.covers("/anything/at/all"));

        let all = Scope::AllDevices;
        assert!(all.covers("/devices/x/messages/events"));
        assert!(!all.covers("/devicesx"));
        assert!(!all.covers("/twins/x"));

        let m = module("d1", "m1");
        assert!(m.covers("/devices/d1/modules/m1/messages/events"));
        assert!(!m.covers("/devices/d1"));
        assert!(!m.covers("/devices/d1/modules/m10"));

        let other = Scope::Other("messages/events".into());
        assert!(other.covers("/messages/events"));
        assert!(other.covers("/messages/events/partition/0"));
        assert!(!other.covers("/messages/eventsx"));
        assert!(!other.covers("/messages"));
    }

    #[test]
    fn path_and_display() {
        assert_eq!(Scope::Hub.path(), "");
        assert_eq!(Scope::Hub.to_string(), "/");
        assert_eq!(Scope::AllDevices.path(), "/devices");
        assert_eq!(module("d", "m").to_string(), "/devices/d/modules/m");
        assert_eq!(Scope::Other("a/b".into()).path(), "/a/b");
        // A scope covers its own path.
        for s in [Scope::AllDevices, Scope::Device(dev("d")), module("d", "m")] {
            assert!(s.covers(&s.path()), "{s}");
            assert_eq!(Scope::from_path(&s.path()), Ok(s));
        }
    }

    proptest! {
        #[test]
        fn a_scope_covers_its_own_path(path in "[a-zA-Z0-9/=._%-]{0,40}") {
            if let Ok(scope) = Scope::from_path(&path) {
                prop_assert!(scope.covers(&path), "{:?} must cover {:?}", scope, path);
                prop_assert!(scope.covers(&scope.path()));
                let deeper = format!("{}/more", scope.path());
                prop_assert!(scope.covers(&deeper));
            }
        }

        #[test]
        fn parse_never_panics(resource in ".{0,80}", host in ".{0,20}") {
            let _ = Scope::parse(&resource, &[host.as_str(), "localhost"]);
        }
    }

    #[test]
    fn minted_tokens_scope_back() {
        let k = SymmetricKey::generate();
        let token = crate::sas::mint(&format!("{HUB}/devices/d:1$@/modules/m1"), &k, 1, None);
        let t = SasToken::parse(&token).expect("parses");
        assert_eq!(t.scope(&[HUB]), Ok(module("d:1$@", "m1")));
    }
}
