//! `ferrohub stats`: the registry's device counts and the number of connected devices.

use clap::Args;
use ferrohub_api::{RegistryStatistics, ServiceStatistics};
use serde::Serialize;

use super::output::{fields, render};
use super::{Failure, HubArgs, emit};

/// `stats`.
#[derive(Debug, Args)]
pub(crate) struct StatsArgs {
    #[command(flatten)]
    hub: HubArgs,
}

/// Both statistics objects, as `--output json` prints them.
#[derive(Debug, Serialize)]
pub(crate) struct Stats {
    /// `GET /statistics/devices`.
    pub(crate) registry: RegistryStatistics,
    /// `GET /statistics/service`.
    pub(crate) service: ServiceStatistics,
}

impl StatsArgs {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        let (client, _) = self.hub.connect()?;
        let stats = Stats {
            registry: client.registry_statistics().await?,
            service: client.service_statistics().await?,
        };
        emit(&render(self.hub.output, &stats, stats_fields)?);
        Ok(())
    }
}

fn stats_fields(s: &Stats) -> String {
    fields(&[
        (
            "totalDeviceCount",
            s.registry.total_device_count.to_string(),
        ),
        (
            "enabledDeviceCount",
            s.registry.enabled_device_count.to_string(),
        ),
        (
            "disabledDeviceCount",
            s.registry.disabled_device_count.to_string(),
        ),
        (
            "connectedDeviceCount",
            s.service.connected_device_count.to_string(),
        ),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::admin::Output;

    fn stats() -> Stats {
        Stats {
            registry: RegistryStatistics {
                total_device_count: 3,
                enabled_device_count: 2,
                disabled_device_count: 1,
            },
            service: ServiceStatistics {
                connected_device_count: 0,
            },
        }
    }

    #[test]
    fn table_and_json() {
        assert_eq!(
            stats_fields(&stats()),
            "totalDeviceCount      3\n\
             enabledDeviceCount    2\n\
             disabledDeviceCount   1\n\
             connectedDeviceCount  0\n"
        );
        let json = render(Output::Json, &stats(), stats_fields).expect("json");
        let v: serde_json::Value = serde_json::from_str(&json).expect("valid");
        assert_eq!(v["registry"]["totalDeviceCount"], 3);
        assert_eq!(v["service"]["connectedDeviceCount"], 0);
    }
}
