//! `POST /devices/query` (twins-methods-contract §5): the IoT Hub query language over device
//! twins, module twins (`FROM devices.modules`) and per-device job records
//! (`FROM devices.jobs`), as Python's `IoTHubRegistryManager.query_iot_hub` and Node's
//! `Registry.createQuery` page through it.
//!
//! * Body `{"query": "<text>"}`; the answer is 200 with a JSON array of rows.
//! * `x-ms-max-item-count`: the page size (default 100, at most 1000).
//! * `x-ms-continuation`: sent back from the previous page with the same query; the answer
//!   carries one only when more rows follow (never empty: Node would loop forever).
//! * `x-ms-item-type`: `twin` for `SELECT *` over twins, `deviceJob` for `SELECT *` over job
//!   records, `raw` for projections and aggregates.
//! * Query text the language does not support, a malformed page size or a token of another
//!   query: 400 `ArgumentInvalid` whose message names what and where.
//!
//! The operation is the hub's ([`crate::hub::Hub::query`]); this is its HTTP shape.

use axum::http::{HeaderMap, HeaderValue, StatusCode, Uri};
use axum::response::Response;
use ferrohub_query::DEFAULT_PAGE_SIZE;
use ferrohub_types::Permission;
use serde::Deserialize;

use super::error::ApiError;
use super::{HubState, json};

/// The permission that runs queries.
const READ: &[Permission] = &[Permission::RegistryRead];

/// The page-size header.
pub(crate) const MAX_ITEM_COUNT: &str = "x-ms-max-item-count";
/// The continuation header.
pub(crate) const CONTINUATION: &str = "x-ms-continuation";
/// The item-type header.
pub(crate) const ITEM_TYPE: &str = "x-ms-item-type";

/// The request body.
#[derive(Deserialize)]
struct QuerySpecification {
    query: Option<String>,
}

/// The page size a request asks for.
fn page_size(headers: &HeaderMap) -> Result<usize, ApiError> {
    let Some(v) = headers.get(MAX_ITEM_COUNT) else {
        return Ok(DEFAULT_PAGE_SIZE);
    };
    let n = v
        .to_str()
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .filter(|n| *n > 0)
        .ok_or_else(|| {
            ApiError::invalid("The x-ms-max-item-count header must be a positive whole number.")
        })?;
    Ok(usize::try_from(n).unwrap_or(usize::MAX))
}

/// The continuation token a request brings back, if any (an empty header is none).
fn continuation(headers: &HeaderMap) -> Result<Option<String>, ApiError> {
    match headers.get(CONTINUATION) {
        None => Ok(None),
        Some(v) => {
            let s = v
                .to_str()
                .map_err(|_| ApiError::invalid("The continuation token is malformed."))?;
            Ok((!s.trim().is_empty()).then(|| s.trim().to_owned()))
        }
    }
}

/// Run a query: one page of its result.
#[utoipa::path(post, path = "/devices/query", tag = "query",
    params(("x-ms-max-item-count" = Option<String>, Header, description = "Page size (default 100, at most 1000)"),
           ("x-ms-continuation" = Option<String>, Header, description = "The token of the previous page of the same query")),
    request_body(content = Object, description = "`{\"query\": \"SELECT * FROM devices WHERE tags.region = 'EU'\"}`"),
    responses((status = 200, description = "A JSON array of rows; `x-ms-item-type` (`twin`, `deviceJob` or `raw`) and, only when more rows follow, `x-ms-continuation`", body = Object),
              (status = 400, description = "Unsupported or malformed query, page size or token", body = ferrohub_api::ErrorBody)))]
pub(crate) async fn query_devices(
    hub: HubState,
    uri: Uri,
    headers: HeaderMap,
    req: axum::extract::Request,
) -> Result<Response, ApiError> {
    hub.authorize_service(&headers, uri.path(), READ)?;
    let size = page_size(&headers)?;
    let token = continuation(&headers)?;
    let body: QuerySpecification = super::extract::json_object(req).await?;
    let text = body.query.filter(|q| !q.trim().is_empty()).ok_or_else(|| {
        ApiError::invalid("The request body must carry the query text in \"query\".")
    })?;
    let page = hub.query(&text, size, token.as_deref()).await?;
    let mut resp = json(StatusCode::OK, &page.rows, None);
    let h = resp.headers_mut();
    h.insert(ITEM_TYPE, HeaderValue::from_static(page.item_type.as_str()));
    if let Some(token) = page.continuation
        && let Ok(v) = HeaderValue::from_str(&token)
    {
        h.insert(CONTINUATION, v);
    }
    Ok(resp)
}
