//! `ferrohub twin …` and `ferrohub method …`: show and update device and module twins, invoke
//! direct methods, as `az iot hub device-twin show/update` and `az iot hub
//! invoke-device-method` do.

use clap::{Args, Subcommand};
use ferrohub_api::{CloudToDeviceMethod, Twin, TwinProperties};
use serde_json::{Map, Value};

use super::output::{method_result_fields, render, twin_fields};
use super::{Failure, HubArgs, emit};

/// Twin commands.
#[derive(Debug, Subcommand)]
pub(crate) enum TwinCommand {
    /// Show a device's twin, or a module's
    Show(ShowArgs),
    /// Update a twin's desired properties and tags (merge patches: null deletes a member)
    Update(UpdateArgs),
}

/// `twin show`.
#[derive(Debug, Args)]
pub(crate) struct ShowArgs {
    /// The device id
    device_id: String,
    /// The module id, for a module's twin
    #[arg(long, value_name = "MODULE")]
    module: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

/// `twin update`.
#[derive(Debug, Args)]
pub(crate) struct UpdateArgs {
    /// The device id
    device_id: String,
    /// The module id, for a module's twin
    #[arg(long, value_name = "MODULE")]
    module: Option<String>,
    /// Desired properties to merge, a JSON object such as '{"fw":"1.2","old":null}'
    #[arg(long, value_name = "JSON")]
    desired: Option<String>,
    /// Tags to merge, a JSON object such as '{"site":"b7"}'
    #[arg(long, value_name = "JSON")]
    tags: Option<String>,
    /// Update only if the twin's ETag is this one; by default whatever its ETag
    #[arg(long, value_name = "ETAG")]
    etag: Option<String>,
    #[command(flatten)]
    hub: HubArgs,
}

/// Direct method commands.
#[derive(Debug, Subcommand)]
pub(crate) enum MethodCommand {
    /// Invoke a direct method on a device, or on a module, and print its answer
    Invoke(InvokeArgs),
}

/// `method invoke`.
#[derive(Debug, Args)]
pub(crate) struct InvokeArgs {
    /// The device id
    device_id: String,
    /// The method's name
    method_name: String,
    /// The module id, to call a module's method
    #[arg(long, value_name = "MODULE")]
    module: Option<String>,
    /// The payload, any JSON (the device gets null when absent)
    #[arg(long, value_name = "JSON")]
    payload: Option<String>,
    /// Seconds to wait for the device's answer (5 to 300)
    #[arg(long, value_name = "SECONDS", default_value_t = 30,
          value_parser = clap::value_parser!(u32).range(5..=300))]
    timeout: u32,
    /// Seconds to wait for the device to connect and subscribe to methods (0 to 300; 0: it
    /// must be connected already)
    #[arg(long, value_name = "SECONDS", default_value_t = 0,
          value_parser = clap::value_parser!(u32).range(0..=300))]
    connect_timeout: u32,
    #[command(flatten)]
    hub: HubArgs,
}

/// `text` as JSON, for the option named `what`.
fn parse_json(what: &str, text: &str) -> Result<Value, Failure> {
    serde_json::from_str(text)
        .map_err(|e| Failure::Usage(format!("--{what} is not valid JSON: {e}")))
}

/// `text` as a JSON object, for the option named `what`.
fn parse_object(what: &str, text: &str) -> Result<Map<String, Value>, Failure> {
    match parse_json(what, text)? {
        Value::Object(map) => Ok(map),
        _ => Err(Failure::Usage(format!("--{what} must be a JSON object"))),
    }
}

impl UpdateArgs {
    /// The `PATCH` body the options ask for.
    fn patch(&self) -> Result<Twin, Failure> {
        if self.desired.is_none() && self.tags.is_none() {
            return Err(Failure::Usage(
                "nothing to update: give --desired, --tags or both".to_owned(),
            ));
        }
        let desired = self
            .desired
            .as_deref()
            .map(|d| parse_object("desired", d))
            .transpose()?;
        let tags = self
            .tags
            .as_deref()
            .map(|t| parse_object("tags", t))
            .transpose()?;
        Ok(Twin {
            tags,
            properties: desired.map(|d| TwinProperties {
                desired: Some(d),
                reported: None,
            }),
            ..Twin::default()
        })
    }
}

impl InvokeArgs {
    /// The method call the options ask for.
    fn call(&self) -> Result<CloudToDeviceMethod, Failure> {
        Ok(CloudToDeviceMethod {
            method_name: self.method_name.clone(),
            payload: self
                .payload
                .as_deref()
                .map(|p| parse_json("payload", p))
                .transpose()?,
            response_timeout_in_seconds: Some(self.timeout),
            connect_timeout_in_seconds: Some(self.connect_timeout),
        })
    }
}

impl TwinCommand {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            TwinCommand::Show(a) => {
                let (client, _) = a.hub.connect()?;
                let twin = client.twin(&a.device_id, a.module.as_deref()).await?;
                emit(&render(a.hub.output, &twin, twin_fields)?);
                Ok(())
            }
            TwinCommand::Update(a) => {
                let patch = a.patch()?;
                let (client, _) = a.hub.connect()?;
                let twin = client
                    .update_twin(&a.device_id, a.module.as_deref(), &patch, a.etag.as_deref())
                    .await?;
                emit(&render(a.hub.output, &twin, twin_fields)?);
                Ok(())
            }
        }
    }
}

impl MethodCommand {
    pub(crate) async fn run(self) -> Result<(), Failure> {
        match self {
            MethodCommand::Invoke(a) => {
                let call = a.call()?;
                let (client, _) = a.hub.connect()?;
                let result = client
                    .invoke_method(&a.device_id, a.module.as_deref(), &call)
                    .await?;
                emit(&render(a.hub.output, &result, method_result_fields)?);
                Ok(())
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn update(desired: Option<&str>, tags: Option<&str>) -> UpdateArgs {
        UpdateArgs {
            device_id: "d".into(),
            module: None,
            desired: desired.map(str::to_owned),
            tags: tags.map(str::to_owned),
            etag: None,
            hub: HubArgs::default(),
        }
    }

    #[test]
    fn updates_become_patches() {
        let patch = update(Some(r#"{"fw":"1.2","old":null}"#), Some(r#"{"site":"b7"}"#))
            .patch()
            .expect("a patch");
        assert_eq!(
            serde_json::to_value(&patch).expect("json"),
            serde_json::json!({"tags": {"site": "b7"}, "properties": {"desired": {"fw": "1.2", "old": null}}})
        );
        let only_tags = update(None, Some("{}")).patch().expect("a patch");
        assert_eq!(
            serde_json::to_value(&only_tags).expect("json"),
            serde_json::json!({"tags": {}})
        );
    }

    #[test]
    fn bad_updates_are_usage_errors() {
        for (desired, tags) in [
            (None, None),
            (Some("{nope"), None),
            (Some("[1]"), None),
            (None, Some("\"x\"")),
        ] {
            let e = update(desired, tags).patch().expect_err("refused");
            assert_eq!(e.exit_code(), 2, "{desired:?} {tags:?}");
        }
    }
}
