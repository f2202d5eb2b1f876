//! The IoT Hub query language: `POST /devices/query`, one page at a time.

use reqwest::Method;
use serde_json::Value;

use crate::ClientError;
use crate::client::HubClient;

/// One page of a query's result.
#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    /// The rows: twins, job records, or projected and aggregated objects.
    pub rows: Vec<Value>,
    /// `x-ms-item-type`: `twin`, `deviceJob` or `raw`.
    pub item_type: Option<String>,
    /// `x-ms-continuation`: the token of the next page; `None` on the last page.
    pub continuation: Option<String>,
}

impl HubClient {
    /// One page of `query` (`SELECT … FROM devices | devices.modules | devices.jobs …`), of
    /// at most `page_size` rows when given, continuing after the page whose token is
    /// `continuation`.
    pub async fn query_page(
        &self,
        query: &str,
        page_size: Option<u32>,
        continuation: Option<&str>,
    ) -> Result<QueryPage, ClientError> {
        let mut headers = Vec::new();
        if let Some(n) = page_size {
            headers.push(("x-ms-max-item-count", n.to_string()));
        }
        if let Some(token) = continuation {
            headers.push(("x-ms-continuation", token.to_owned()));
        }
        let reply = self
            .send_with_headers(
                Method::POST,
                "/devices/query",
                &headers,
                &serde_json::json!({ "query": query }),
            )
            .await?;
        let item_type = reply.header("x-ms-item-type");
        let continuation = reply.header("x-ms-continuation");
        let rows = reply.json()?;
        Ok(QueryPage {
            rows,
            item_type,
            continuation,
        })
    }
}
