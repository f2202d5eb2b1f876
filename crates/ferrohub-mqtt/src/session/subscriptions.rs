//! The subscriptions of one session: which filters are granted, at which QoS, and which
//! subscription an outgoing topic matches.
//!
//! Azure supports a fixed set of filters (azure-contract §4.5, §4.8, §4.10, §4.11), recognised by
//! [`Subscription::parse`]:
//!
//! * `devices/{d}/messages/devicebound/#` (C2D): for the device `d` itself, not for its modules,
//!   which receive no C2D;
//! * `devices/{d}/modules/{m}/inputs/#` and `devices/{d}/modules/{m}/#`: for the module `d/m`;
//! * `$iothub/twin/res/#`, `$iothub/twin/PATCH/properties/desired/#`, `$iothub/methods/POST/#`:
//!   for any identity (the identity comes from the connection).
//!
//! Anything else, another identity's filter included, gets 0x80. The real hub's behaviour there
//! is not confirmed (§14); 0x80 keeps the connection and every SDK completes its SUBSCRIBE on
//! any SUBACK (real-clients §3.4). Requested QoS 2 is granted as 1 (§4.5); 0 and 1 as
//! requested.

use crate::codec::{QoS, SubscribeReturnCode};
use crate::session::connect::Identity;
use crate::topic::{Subscription, TopicFilter, TopicName};

/// The granted filters, in the order they were first granted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct Subscriptions {
    entries: Vec<(TopicFilter, QoS)>,
    max: usize,
}

impl Subscriptions {
    /// An empty set holding at most `max` filters.
    pub(crate) fn new(max: usize) -> Self {
        Self {
            entries: Vec::new(),
            max,
        }
    }

    /// Rebuilds a persisted set, applying today's rules. Returns whether anything was dropped or
    /// merged, i.e. whether the stored copy needs rewriting.
    pub(crate) fn restore(
        identity: &Identity,
        stored: Vec<(TopicFilter, QoS)>,
        max: usize,
    ) -> (Self, bool) {
        let expected = stored.len();
        let mut set = Self::new(max);
        let mut changed = false;
        for (filter, qos) in stored {
            match set.subscribe_one(identity, filter, qos) {
                SubscribeReturnCode::Success(granted) if granted == qos => {}
                _ => changed = true,
            }
        }
        let changed = changed || set.entries.len() != expected;
        (set, changed)
    }

    /// Handles the filters of one SUBSCRIBE. Returns one return code per filter, in order, and
    /// whether the set changed.
    pub(crate) fn subscribe(
        &mut self,
        identity: &Identity,
        filters: Vec<(TopicFilter, QoS)>,
    ) -> (Vec<SubscribeReturnCode>, bool) {
        let before = self.entries.clone();
        let codes = filters
            .into_iter()
            .map(|(filter, requested)| self.subscribe_one(identity, filter, requested))
            .collect();
        let changed = self.entries != before;
        (codes, changed)
    }

    /// Removes the given filters; unknown ones are ignored [MQTT-3.10.4-1]. Returns whether the
    /// set changed.
    pub(crate) fn unsubscribe(&mut self, filters: &[TopicFilter]) -> bool {
        let before = self.entries.len();
        self.entries.retain(|(f, _)| !filters.contains(f));
        self.entries.len() != before
    }

    /// The granted filters with their QoS.
    pub(crate) fn as_slice(&self) -> &[(TopicFilter, QoS)] {
        &self.entries
    }

    /// The highest QoS granted to a filter matching `topic`, or `None` when none matches.
    pub(crate) fn granted_qos(&self, topic: &TopicName) -> Option<QoS> {
        self.entries
            .iter()
            .filter(|(f, _)| matches(f.as_str(), topic.as_str()))
            .map(|(_, qos)| *qos)
            .max()
    }

    /// Grants one filter, replacing an identical existing one [MQTT-3.8.4-3].
    fn subscribe_one(
        &mut self,
        identity: &Identity,
        filter: TopicFilter,
        requested: QoS,
    ) -> SubscribeReturnCode {
        let Some(qos) = grant(identity, &filter, requested) else {
            return SubscribeReturnCode::Failure;
        };
        if let Some(entry) = self.entries.iter_mut().find(|(f, _)| *f == filter) {
            entry.1 = qos;
        } else if self.entries.len() < self.max {
            self.entries.push((filter, qos));
        } else {
            return SubscribeReturnCode::Failure;
        }
        SubscribeReturnCode::Success(qos)
    }
}

/// The QoS granted to `filter` for `identity`, or `None` if the filter is refused.
fn grant(identity: &Identity, filter: &TopicFilter, requested: QoS) -> Option<QoS> {
    let own_device = |d: &str| d == identity.device_id && identity.module_id.is_none();
    let own_module =
        |d: &str, m: &str| d == identity.device_id && identity.module_id.as_deref() == Some(m);
    let allowed = match Subscription::parse(filter) {
        Subscription::C2d { device_id } => own_device(device_id),
        Subscription::ModuleInputs {
            device_id,
            module_id,
        }
        | Subscription::Module {
            device_id,
            module_id,
        } => own_module(device_id, module_id),
        Subscription::TwinResponses | Subscription::DesiredProperties | Subscription::Methods => {
            true
        }
        Subscription::Unsupported => false,
    };
    allowed.then_some(requested.min(QoS::AtLeastOnce))
}

/// Whether the topic name `topic` matches the topic filter `filter` (MQTT 3.1.1 §4.7).
///
/// `+` matches one whole level, `#` the rest including the parent level (`a/#` matches `a`), and a
/// filter starting with a wildcard does not match a topic starting with `$` [MQTT-4.7.2-1].
fn matches(filter: &str, topic: &str) -> bool {
    if topic.starts_with('$') && filter.starts_with(['+', '#']) {
        return false;
    }
    let mut filter_levels = filter.split('/');
    let mut topic_levels = topic.split('/');
    loop {
        match (filter_levels.next(), topic_levels.next()) {
            (Some("#"), _) => return true,
            (None, None) => return true,
            (Some("+"), Some(_)) => {}
            (Some(f), Some(t)) if f == t => {}
            _ => return false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn device(d: &str) -> Identity {
        Identity {
            device_id: d.to_owned(),
            module_id: None,
        }
    }

    fn module(d: &str, m: &str) -> Identity {
        Identity {
            device_id: d.to_owned(),
            module_id: Some(m.to_owned()),
        }
    }

    fn filter(s: &str) -> TopicFilter {
        TopicFilter::new(s).expect("valid filter")
    }

    fn granted(identity: &Identity, f: &str, qos: QoS) -> Option<QoS> {
        grant(identity, &filter(f), qos)
    }

    #[test]
    fn grants_per_identity() {
        let d = device("d");
        let m = module("d", "m");
        let q1 = QoS::AtLeastOnce;
        assert_eq!(
            granted(&d, "devices/d/messages/devicebound/#", q1),
            Some(q1)
        );
        assert_eq!(granted(&m, "devices/d/messages/devicebound/#", q1), None);
        assert_eq!(granted(&d, "devices/e/messages/devicebound/#", q1), None);
        assert_eq!(granted(&m, "devices/d/modules/m/inputs/#", q1), Some(q1));
        assert_eq!(granted(&m, "devices/d/modules/m/#", q1), Some(q1));
        assert_eq!(granted(&m, "devices/d/modules/n/#", q1), None);
        assert_eq!(granted(&d, "devices/d/modules/m/#", q1), None);
        for shared in [
            "$iothub/twin/res/#",
            "$iothub/twin/PATCH/properties/desired/#",
            "$iothub/methods/POST/#",
        ] {
            assert_eq!(granted(&d, shared, q1), Some(q1), "{shared}");
            assert_eq!(granted(&m, shared, q1), Some(q1), "{shared}");
        }
        for unsupported in [
            "#",
            "devices/+/messages/devicebound/#",
            "$iothub/twin/res/200",
        ] {
            assert_eq!(granted(&d, unsupported, q1), None, "{unsupported}");
        }
    }

    #[test]
    fn qos_two_is_granted_as_one() {
        let d = device("d");
        let f = "$iothub/methods/POST/#";
        assert_eq!(granted(&d, f, QoS::ExactlyOnce), Some(QoS::AtLeastOnce));
        assert_eq!(granted(&d, f, QoS::AtMostOnce), Some(QoS::AtMostOnce));
    }

    #[test]
    fn limit_counts_distinct_filters() {
        let d = device("d");
        let mut set = Subscriptions::new(2);
        let ok = SubscribeReturnCode::Success(QoS::AtLeastOnce);
        let (codes, changed) = set.subscribe(
            &d,
            vec![
                (filter("$iothub/methods/POST/#"), QoS::AtLeastOnce),
                (filter("$iothub/twin/res/#"), QoS::AtLeastOnce),
                (
                    filter("$iothub/twin/PATCH/properties/desired/#"),
                    QoS::AtLeastOnce,
                ),
                (filter("$iothub/twin/res/#"), QoS::AtLeastOnce),
            ],
        );
        assert!(changed);
        assert_eq!(codes, [ok, ok, SubscribeReturnCode::Failure, ok]);
        let (_, changed) =
            set.subscribe(&d, vec![(filter("$iothub/twin/res/#"), QoS::AtLeastOnce)]);
        assert!(!changed, "re-subscribing with the same QoS changes nothing");
        let (_, changed) = set.subscribe(&d, vec![(filter("$iothub/twin/res/#"), QoS::AtMostOnce)]);
        assert!(changed, "a new QoS replaces the old one");
        assert_eq!(set.as_slice().len(), 2);
    }

    #[test]
    fn restore_drops_what_is_no_longer_allowed() {
        let d = device("d");
        let stored = vec![
            (filter("devices/d/messages/devicebound/#"), QoS::AtLeastOnce),
            (filter("$iothub/methods/POST/#"), QoS::AtMostOnce),
        ];
        let (set, changed) = Subscriptions::restore(&d, stored.clone(), 5);
        assert!(!changed);
        assert_eq!(set.as_slice(), &stored[..]);

        let mut bad = stored.clone();
        bad.push((filter("devices/e/messages/devicebound/#"), QoS::AtLeastOnce));
        let (set, changed) = Subscriptions::restore(&d, bad, 5);
        assert!(changed);
        assert_eq!(set.as_slice(), &stored[..]);

        let (set, changed) = Subscriptions::restore(&d, stored.clone(), 1);
        assert!(changed);
        assert_eq!(set.as_slice(), &stored[..1]);

        let qos2 = vec![(filter("$iothub/methods/POST/#"), QoS::ExactlyOnce)];
        let (set, changed) = Subscriptions::restore(&d, qos2, 5);
        assert!(changed);
        assert_eq!(set.as_slice()[0].1, QoS::AtLeastOnce);
    }

    #[test]
    fn topic_matching() {
        for (f, t) in [
            (
                "devices/d/messages/devicebound/#",
                "devices/d/messages/devicebound/%24.to=x",
            ),
            (
                "devices/d/messages/devicebound/#",
                "devices/d/messages/devicebound/",
            ),
            (
                "devices/d/messages/devicebound/#",
                "devices/d/messages/devicebound",
            ),
            (
                "$iothub/methods/POST/#",
                "$iothub/methods/POST/reboot/?$rid=1",
            ),
            (
                "devices/d/modules/m/#",
                "devices/d/modules/m/inputs/in1/a=b",
            ),
            ("a/+/c", "a/b/c"),
            ("a/+", "a/"),
            ("#", "a/b"),
        ] {
            assert!(matches(f, t), "{f} {t}");
        }
        for (f, t) in [
            (
                "devices/d/messages/devicebound/#",
                "devices/e/messages/devicebound/",
            ),
            (
                "devices/d/messages/devicebound/#",
                "devices/d/messages/device",
            ),
            ("a/+/c", "a/b/c/d"),
            ("a/+", "a"),
            ("a/b", "a/b/c"),
            ("#", "$iothub/twin/res/200/?$rid=1"),
            ("+/twin/res/#", "$iothub/twin/res/200"),
        ] {
            assert!(!matches(f, t), "{f} {t}");
        }
    }

    #[test]
    fn granted_qos_is_the_highest_match() {
        let m = module("d", "m");
        let mut set = Subscriptions::new(5);
        set.subscribe(
            &m,
            vec![
                (filter("devices/d/modules/m/#"), QoS::AtMostOnce),
                (filter("devices/d/modules/m/inputs/#"), QoS::AtLeastOnce),
            ],
        );
        let topic = |s: &str| TopicName::new(s).expect("valid topic");
        assert_eq!(
            set.granted_qos(&topic("devices/d/modules/m/inputs/in1/")),
            Some(QoS::AtLeastOnce)
        );
        assert_eq!(
            set.granted_qos(&topic("devices/d/modules/m/other")),
            Some(QoS::AtMostOnce)
        );
        assert_eq!(set.granted_qos(&topic("$iothub/methods/POST/x")), None);
        assert!(set.unsubscribe(&[filter("devices/d/modules/m/#")]));
        assert!(!set.unsubscribe(&[filter("devices/d/modules/m/#")]));
        assert_eq!(set.granted_qos(&topic("devices/d/modules/m/other")), None);
    }
}
